"""The pre-registration file (`prereg.toml`): its settings, its hash, and the check against a run.

The runner records the file's path and SHA-256 in the run's manifest (`Manifest.prereg`);
`check_prereg` compares the file used now with that hash.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.contract import DEFAULT_RNG_SEED
from validation.contract.status import Status

PREREG_FILENAME = "prereg.toml"
COMPARATORS = ("best_other", "worst_other")
# the methods of validation/stats/intervals.py
INTERVAL_METHODS = ("percentile", "student-t", "satterthwaite", "cochran-cox", "expanded-percentile",
                    "share-blend")
LENIENT_ADJUSTMENTS = ("bonferroni", "none")


MIN_RESAMPLES = 200     # fewer: a 97.5% bound rests on under 5 draws; 1 draw collapses every interval
MIN_USERS_EFFECT = 6     # fewer users: the between-user variance of the effect is too poorly estimated


def min_users_share(min_share: float, level: float) -> int:
    """The fewest users with which `population_share` can PASS at all: with every user's interval
    above the bar, the Clopper-Pearson lower bound is a^(1/J), a = (1 - level) / 2, and the share's
    lower end (a^(1/J) - a) / (1 - a) (`validation.judgment.population.share_bounds`: a user below the bar
    is counted sure with probability up to a), which must reach `min_share`: J >= log(a) /
    log(a + (1 - a) min_share) (18 users for 0.80 at 95%)."""
    a = (1 - level) / 2
    return max(2, math.ceil(math.log(a) / math.log(a + (1 - a) * min_share) - 1e-12))


class PreregError(ValueError):
    """The pre-registration file is unreadable, invalid, or changed since the run."""


@dataclass(frozen=True)
class Prereg:
    """Pre-registered settings; defaults are those of the repository's prereg.toml."""

    comparator: str = "best_other"
    strict_margin: float = 0.10
    lenient_margin: float = 0.05
    lenient_min_users: int = 0          # 0 = all users but one (at least 1)
    lenient_adjust: str = "bonferroni"  # multiplicity adjustment of LENIENT's per-user bounds
    delta: float = 0.02
    equivalence_level: float = 0.90
    confidence: float = 0.95
    n_resamples: int = 10_000
    interval_method: str = "share-blend"
    rng_seed: int = DEFAULT_RNG_SEED
    gate_strict: tuple[str, ...] = ("PASS", "FAIL", "INCONCLUSIVE")
    gate_lenient: tuple[str, ...] = ("PASS",)
    gate_catastrophic: tuple[str, ...] = ("NOT_TRIGGERED",)
    # [population] (docs/methods.md, section 13): the share of users with margin >= share_margin
    # must reach min_share; the population-average personalization effect must lie below max_effect
    share_margin: float = 0.05
    min_share: float = 0.80
    max_effect: float = 0.0
    # not gating by default: every status accepted, so existing pre-registrations keep their meaning
    gate_population_share: tuple[str, ...] = ("PASS", "FAIL", "INCONCLUSIVE")
    gate_population_effect: tuple[str, ...] = ("PASS", "FAIL", "INCONCLUSIVE")
    # [routing] (docs/routing.md; rows built by `python -m runners.grid --routing`): the noise levels
    # and draws of the `noise:<user>@<sigma>` rows, the most `avg:<a>+<b>` pairs (every pair up to
    # it, else a random sample of that many drawn with `rng_seed`), the ROUTING / AVERAGING margins,
    # the NOISE criterion's sigma and the number of users the storage bill is stated for
    sigmas: tuple[float, ...] = (0.01, 0.1, 0.3)
    noise_draws: int = 3
    max_pairs: int = 45
    routing_margin: float = 0.05
    averaging_margin: float = 0.02
    noise_sigma: float = 0.1
    storage_users: int = 215_000
    # not gating by default, like the population criteria
    gate_routing: tuple[str, ...] = ("PASS", "FAIL", "INCONCLUSIVE")
    gate_averaging: tuple[str, ...] = ("PASS", "FAIL", "INCONCLUSIVE")
    gate_noise: tuple[str, ...] = ("PASS", "FAIL", "INCONCLUSIVE")
    fail_on_inverted: bool = True
    fail_on_bad_cells: bool = True
    fail_on_worse_than_base: bool = False
    # `[steps] primary`: the adapter step count the criteria and the gate are judged at when a run
    # evaluates several (`--steps 25,50,100`); the other counts are exploratory. A one-count run is
    # judged at its own count (a different one is noted in the verdict's warnings).
    primary_steps: int = 100
    sha256: str = field(default="", compare=False)   # of the file it was read from; "" if none
    path: str = field(default="", compare=False)
    # the settings the file states (field names); the others take this suite's defaults, which can
    # change between versions: `with_recorded_settings` reads them as they were when the run started
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        _prereg_iv(self)

    def lenient_required(self, n_users: int) -> int:
        """How many users must reach the LENIENT bar."""
        if self.lenient_min_users > 0:
            return self.lenient_min_users
        return max(1, n_users - 1)

    def lenient_level(self, n_users: int) -> float:
        """Two-sided level of the per-user intervals LENIENT reads.

        LENIENT's null hypothesis is "fewer than `required` users reach the bar". Its least
        favourable case has `required - 1` users far above the bar and the other
        m = n_users - required + 1 exactly at it; LENIENT then passes if ANY of those m clears the
        bar by chance, so each is read at level 1 - alpha / m (Bonferroni) to keep the
        criterion's false-PASS rate at alpha / 2 or below. `lenient_adjust = "none"` reads them at
        `confidence`, unadjusted (docs/methods.md, section 8).
        """
        m = max(1, n_users - self.lenient_required(n_users) + 1)
        if self.lenient_adjust == "none" or m == 1:
            return self.confidence
        return 1.0 - (1.0 - self.confidence) / m

    def other_count(self, counts: tuple[int, ...]) -> int | None:
        """The count of a one-count run when the file states `[steps] primary` and the run trained
        another (its verdict is NOT PRE-REGISTERED); None otherwise, also for a file without `[steps]`."""
        if len(counts) != 1 or "primary_steps" not in self.explicit or counts[0] == self.primary_steps:
            return None
        return counts[0]

    def gate_requires(self, criterion: str) -> tuple[str, ...]:
        """The statuses of `criterion` (strict, lenient, catastrophic, population_share,
        population_effect) that the gate accepts."""
        return getattr(self, f"gate_{criterion}")

    def gates_population(self, criterion: str) -> bool:
        """Whether the gate depends on an off-by-default criterion (population_share,
        population_effect, routing, averaging, noise): some status is not accepted."""
        return set(self.gate_requires(criterion)) != {"PASS", "FAIL", "INCONCLUSIVE"}

    def gate_allows(self, criterion: str, status: Status) -> bool:
        """The one gate-membership check (criteria.gate, junit.xml, the report)."""
        return status.value in self.gate_requires(criterion)

    def settings(self) -> dict[str, Any]:
        """`to_json` without the file's path and hash: what the settings mean, wherever they came from
        (the run's record `prereg.json`, the calibration's cache key)."""
        return {k: v for k, v in self.to_json().items() if k not in ("sha256", "path")}

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("explicit")
        for k in [f"gate_{c}" for c in _GATED] + ["sigmas"]:
            d[k] = list(d[k])
        return d


# The sane range of each probability or margin of the file (docs/gate.md, section 1), closed at both
# ends, with why its ends are where they are. Outside them a setting collapses the criterion it sets
# (`confidence = 0.0001` reads every interval as a point and passes a study that fails at 0.95;
# `delta = 1e-9` can never trigger CATASTROPHIC) or turns it into nonsense.
BOUNDS: dict[str, tuple[float, float, str]] = {
    "confidence": (0.80, 0.999, "below 0.80 an interval is too narrow to gate on; above 0.999 its ends are "
                                "read from the outermost 0.05% of the bootstrap draws"),
    "equivalence_level": (0.80, 0.999, "the same range as `confidence`: CATASTROPHIC's equivalence interval"),
    "strict_margin": (0.01, 0.50, "a relative perplexity reduction: below 1% the bar asks for next to no "
                                  "personalization, above 50% for more than any adapter of this kind gives"),
    "lenient_margin": (0.01, 0.50, "as `strict_margin`"),
    "share_margin": (0.01, 0.50, "as `strict_margin`"),
    "delta": (0.005, 0.20, "CATASTROPHIC's equivalence bound, a relative perplexity difference: below 0.5% it "
                           "can never trigger, above 20% adapters that differ plainly read as equivalent"),
    "min_share": (0.50, 0.99, "a share of the population: below one half the criterion speaks of a minority"),
    "max_effect": (-1.0, 0.0, "a log-ratio of perplexity: above 0 a population whose own adapters are worse "
                              "on average would pass"),
    "routing_margin": (0.01, 0.50, "as `strict_margin`: how much better a user's own adapter must be than every "
                                   "generic option"),
    "averaging_margin": (0.005, 0.50, "as `delta`: how much better each contributor's own adapter must be than "
                                      "the average of two"),
    "noise_sigma": (0.001, 1.0, "a relative noise level, one of `sigmas`"),
}
MAX_SIGMA = 1.0  # relative noise above 1 flips parameters' signs: no longer "the adapter, perturbed"
MAX_NOISE_DRAWS = 100
MAX_SIGMAS = 20
MAX_PAIRS = 10_000


def _prereg_iv(p: Prereg) -> None:
    for name, (lo, hi, why) in BOUNDS.items():
        v = getattr(p, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (lo <= v <= hi):
            raise PreregError(f"`{setting_key(name)}` must be a number in [{lo:g}, {hi:g}] ({why}); got {v!r}. "
                              "Set it within that range before the run.")
    if p.comparator not in COMPARATORS:
        raise PreregError(f"`comparator` must be one of {COMPARATORS}; got {p.comparator!r}.")
    def integer(v) -> bool:  # TOML true/false are Python bools, which isinstance(int) accepts
        return isinstance(v, int) and not isinstance(v, bool)

    for name in ("fail_on_inverted", "fail_on_bad_cells", "fail_on_worse_than_base"):
        if not isinstance(getattr(p, name), bool):
            raise PreregError(f"`gate.{name}` must be true or false; got {getattr(p, name)!r}.")
    if not integer(p.rng_seed) or p.rng_seed < 0:
        raise PreregError(f"`rng_seed` must be an integer >= 0; got {p.rng_seed!r}.")
    if not integer(p.lenient_min_users) or p.lenient_min_users < 0:
        raise PreregError(f"`lenient_min_users` must be an integer >= 0; got {p.lenient_min_users!r}.")
    if (not isinstance(p.sigmas, tuple) or not 1 <= len(p.sigmas) <= MAX_SIGMAS or len(set(p.sigmas)) != len(p.sigmas)
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= MAX_SIGMA
                       for x in p.sigmas)):
        raise PreregError(f"`routing.sigmas` must be a list of 1 to {MAX_SIGMAS} distinct relative noise levels in "
                          f"(0, {MAX_SIGMA:g}] (each level is scored `noise_draws` times per user and seed); "
                          f"got {p.sigmas!r}.")
    if p.noise_sigma not in p.sigmas:
        raise PreregError(f"`routing.noise_sigma` ({p.noise_sigma!r}) must be one of `routing.sigmas` "
                          f"{list(p.sigmas)}: the NOISE criterion reads the rows the grid scored at it.")
    if not integer(p.noise_draws) or not 1 <= p.noise_draws <= MAX_NOISE_DRAWS:
        raise PreregError(f"`routing.noise_draws` must be an integer in [1, {MAX_NOISE_DRAWS}]; "
                          f"got {p.noise_draws!r}.")
    if not integer(p.max_pairs) or not 1 <= p.max_pairs <= MAX_PAIRS:
        raise PreregError(f"`routing.max_pairs` must be an integer in [1, {MAX_PAIRS}]; got {p.max_pairs!r}.")
    if not integer(p.storage_users) or p.storage_users < 1:
        raise PreregError(f"`routing.storage_users` must be an integer >= 1; got {p.storage_users!r}.")
    if not integer(p.primary_steps) or p.primary_steps < 1:
        raise PreregError(f"`steps.primary` must be a whole number of adapter training steps >= 1; "
                          f"got {p.primary_steps!r}.")
    if not integer(p.n_resamples) or p.n_resamples < MIN_RESAMPLES:
        raise PreregError(f"`n_resamples` must be an integer >= {MIN_RESAMPLES}; got {p.n_resamples!r}: with "
                          "fewer, an interval's ends are read from a handful of draws (one draw collapses it "
                          "onto a point). 10000 is the default; `--n-resamples` explores smaller numbers, "
                          "NOT PRE-REGISTERED.")
    if p.strict_margin < p.lenient_margin:
        raise PreregError(f"`strict_margin` ({p.strict_margin}) is below `lenient_margin` "
                          f"({p.lenient_margin}): STRICT would be easier to pass than LENIENT; "
                          "make `strict_margin` >= `lenient_margin`.")
    if p.lenient_adjust not in LENIENT_ADJUSTMENTS:
        raise PreregError(f"`lenient_adjust` must be one of {LENIENT_ADJUSTMENTS}; got {p.lenient_adjust!r}.")
    if p.interval_method not in INTERVAL_METHODS:
        raise PreregError(
            f"`interval_method` must be one of {INTERVAL_METHODS}; got {p.interval_method!r}."
        )
    allowed = {
        "gate_strict": {"PASS", "FAIL", "INCONCLUSIVE"},
        "gate_lenient": {"PASS", "FAIL", "INCONCLUSIVE"},
        "gate_catastrophic": {"TRIGGERED", "NOT_TRIGGERED", "INCONCLUSIVE"},
        "gate_population_share": {"PASS", "FAIL", "INCONCLUSIVE"},
        "gate_population_effect": {"PASS", "FAIL", "INCONCLUSIVE"},
        "gate_routing": {"PASS", "FAIL", "INCONCLUSIVE"},
        "gate_averaging": {"PASS", "FAIL", "INCONCLUSIVE"},
        "gate_noise": {"PASS", "FAIL", "INCONCLUSIVE"},
    }
    for name, ok in allowed.items():
        values = getattr(p, name)
        bad = [v for v in values if v not in ok]
        if bad or not values:
            raise PreregError(
                f"`gate.{name.removeprefix('gate_')}` must be a non-empty list of {sorted(ok)}; "
                f"got {list(values)!r}."
            )


_SECTIONS = {
    "criteria": ("comparator", "strict_margin", "lenient_margin", "lenient_min_users",
                 "lenient_adjust", "delta", "equivalence_level"),
    "statistics": ("confidence", "n_resamples", "interval_method", "rng_seed"),
    "gate": ("strict", "lenient", "catastrophic", "fail_on_inverted", "fail_on_bad_cells",
             "fail_on_worse_than_base", "population_share", "population_effect", "routing", "averaging",
             "noise"),
    "population": ("share_margin", "min_share", "max_effect"),
    "routing": ("sigmas", "noise_draws", "max_pairs", "routing_margin", "averaging_margin", "noise_sigma",
                "storage_users"),
    "steps": ("primary",),
}
_GATED = ("strict", "lenient", "catastrophic", "population_share", "population_effect", "routing", "averaging",
          "noise")


def default_prereg_path() -> Path:
    """./prereg.toml if present, else the repository's own (the default for both commands)."""
    here = Path(PREREG_FILENAME)
    return here if here.is_file() else Path(__file__).resolve().parent.parent / PREREG_FILENAME


def load_prereg(path: str | Path) -> Prereg:
    """Read and validate a prereg.toml; errors name the file and the setting."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, or a FIFO that would block the read forever
        raise PreregError(f"{path}: not a regular file (a folder, FIFO or device); pass the prereg.toml file "
                          "itself with `--prereg FILE`.")
    try:
        raw = path.read_bytes()
        doc = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise PreregError(f"{path}: pre-registration file not found (pass `--prereg FILE`).") from None
    except OSError as e:
        raise PreregError(f"{path}: cannot be read ({e.strerror or type(e).__name__}).") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PreregError(f"{path}: not valid TOML: {e}") from None
    kwargs: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise PreregError(f"{path}: `[{section}]` must be a table.")
        unknown = sorted(set(table) - set(keys))
        if unknown:
            raise PreregError(f"{path}: unknown setting(s) {unknown} in `[{section}]`; known: {list(keys)}.")
        for k, v in table.items():
            kwargs[_field_name(section, k)] = tuple(v) if isinstance(v, list) else v
    unknown_sections = sorted(set(doc) - set(_SECTIONS))
    if unknown_sections:
        raise PreregError(f"{path}: unknown section(s) {unknown_sections}; known: {list(_SECTIONS)}.")
    try:
        return Prereg(**kwargs, sha256=hashlib.sha256(raw).hexdigest(), path=str(path),
                      explicit=frozenset(kwargs))
    except PreregError as e:
        raise PreregError(f"{path}: {e}") from None


def _field_name(section: str, key: str) -> str:
    """The Prereg field of `[section] key` in prereg.toml."""
    if section == "steps":
        return "primary_steps"
    return f"gate_{key}" if section == "gate" and key in _GATED else key


def setting_key(name: str) -> str:
    """`[section] key` of a Prereg field, as written in prereg.toml."""
    return next((f"[{section}] {key}" for section, keys in _SECTIONS.items() for key in keys
                 if _field_name(section, key) == name), name)


def check_users(prereg: Prereg, n_users: int, where: str = "the study") -> None:
    """Settings that are impossible for this number of users are refused (PreregError)."""
    if prereg.lenient_min_users > n_users:
        raise PreregError(
            f"{prereg.path or 'prereg'}: `lenient_min_users = {prereg.lenient_min_users}` but {where} has "
            f"{n_users} users: LENIENT could never pass; lower `lenient_min_users` to at most {n_users} "
            "(0 = all users but one) before the run.")
    need = {"population_share": (min_users_share(prereg.min_share, prereg.confidence),
                                 f"`[population] min_share = {prereg.min_share}`"),
            "population_effect": (MIN_USERS_EFFECT, "the population-average effect")}
    for name, (n_min, what) in need.items():
        if prereg.gates_population(name) and n_users < n_min:
            raise PreregError(
                f"{prereg.path or 'prereg'}: `[gate] {name}` gates on a population criterion but {where} "
                f"has {n_users} users; {what} needs at least {n_min} users at confidence "
                f"{prereg.confidence:g}: run more users, or accept every status in `[gate] {name}` "
                "(the default) before the run.")
