"""Calibration of the population criteria (`python -m validation.calibrate --study population`).

Users are drawn from a known population (`validation.simulation.population.UserPopulation`) into the one
simulator, and every experiment goes through the verdict's own code:

- `population_share` (through `validation.judge`, models skipped): at its least-favourable
  boundary the population share of users clearing `share_margin` is exactly `min_share`, the users
  above it far above (margin 30%) and the others AT the bar (the limit from below: their estimates
  clear it half the time, the case most likely to be counted wrongly); and its power with every
  user at 30%. Coverage: the share interval contains the population share.
- `population_effect` (`validation.stats.random_effects.fit_random_slope`, what `judge` fits): at its
  boundary the population-average effect equals `max_effect`, with and without between-user
  spread; its power at an average margin of 5%. Coverage of the effect's interval (the population
  average) and of the prediction interval (a fresh user drawn from the same population).

Experiments are deterministic given (rng_seed, scenario, users, index).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from validation.calibration.results import binomial_se, write_json
from validation.contract.prereg import Prereg
from validation.contract.status import Status
from validation.inputs.arrays import build_arrays
from validation.judgment.population import effect_criterion
from validation.simulation.population import UserPopulation, simulate_population
from validation.simulation.simulate import SimParams
from validation.stats.random_effects import fit_random_slope

SHARE_USERS = (20, 40)
EFFECT_USERS = (6, 12, 24)
FILENAME = "calibration_population.json"


@dataclass(frozen=True)
class PopulationScenario:
    name: str
    criterion: str          # "population_share" | "population_effect"
    relation: str           # "boundary" (a PASS is false) | "power" (a PASS is right)
    population: UserPopulation
    true_value: float       # the population share, or the population-average effect


def scenarios(prereg: Prereg, tau: float = 0.05) -> tuple[PopulationScenario, ...]:
    high = 0.30
    return (
        PopulationScenario("share at min_share, others at the bar", "population_share", "boundary",
                           UserPopulation(above_share=prereg.min_share, high_margin=high,
                                          low_margin=prereg.share_margin), prereg.min_share),
        PopulationScenario("share 100% at margin 30%", "population_share", "power",
                           UserPopulation(above_share=1.0, high_margin=high), 1.0),
        PopulationScenario(f"effect at max_effect, tau {tau:g}", "population_effect", "boundary",
                           UserPopulation(mean_effect=prereg.max_effect, sd_effect=tau), prereg.max_effect),
        PopulationScenario("effect at max_effect, tau 0", "population_effect", "boundary",
                           UserPopulation(mean_effect=prereg.max_effect, sd_effect=0.0), prereg.max_effect),
        PopulationScenario(f"effect at margin 5%, tau {tau:g}", "population_effect", "power",
                           UserPopulation(mean_effect=prereg.max_effect + math.log(0.95), sd_effect=tau),
                           prereg.max_effect + math.log(0.95)),
    )


def population_params(n_users: int, n_docs: int) -> SimParams:
    """The simulator's default noise, every other adapter equally good (so a user's margin and
    `diag` effect are one number), controls `base` and `pooled`."""
    return SimParams(users=tuple(f"user{k:02d}" for k in range(n_users)), n_docs=(n_docs,) * n_users,
                     controls=("base", "pooled"), adapter_sd=0.0, offdiag_sd=0.0,
                     source="population calibration")


@dataclass(frozen=True)
class PopulationRate:
    scenario: str
    criterion: str
    relation: str
    n_users: int
    n_experiments: int
    pass_rate: float
    fail_rate: float
    inconclusive_rate: float
    not_applicable_rate: float
    coverage: float              # the criterion's interval contains the population truth
    prediction_coverage: float | None   # effect only: a new user's effect inside the prediction interval
    mean_width: float


@dataclass(frozen=True)
class PopulationCalibration:
    rates: tuple[PopulationRate, ...]
    n_seeds: int
    n_docs: int
    n_resamples: int
    rng_seed: int
    settings: dict[str, Any]
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        return {"schema": "normadapt-calibration-population/1", "n_seeds": self.n_seeds, "n_docs": self.n_docs,
                "n_resamples": self.n_resamples, "rng_seed": self.rng_seed, "settings": self.settings,
                "wall_s": self.wall_s, "rates": [asdict(r) for r in self.rates]}


def _one(sc: PopulationScenario, J: int, k: int, idx: int, prereg: Prereg, n_seeds: int, n_docs: int,
         n_resamples: int, rng_seed: int) -> tuple[str, bool, float, float, float]:
    """(status text, covered, width, prediction covered or NaN) of one experiment."""
    from validation.judgment.study import judge

    rng = np.random.default_rng([rng_seed, k, J, idx])
    study = simulate_population(population_params(J, n_docs), sc.population, n_seeds, rng)
    if sc.criterion == "population_share":
        v = judge(study.data, prereg, rng=rng, n_resamples=n_resamples, fit=False)
        c = v.population.criterion("population_share")
        s = v.population.share(prereg.comparator, prereg.share_margin)
        return c.status_text, s.ci.contains(sc.true_value), s.ci.high - s.ci.low, math.nan
    eff, _ = fit_random_slope(build_arrays(study.data), prereg.confidence)
    c = effect_criterion(eff, J, prereg.max_effect)
    if eff is None:
        return c.status_text, False, math.nan, math.nan
    new = rng.normal(sc.population.mean_effect, sc.population.sd_effect)
    return c.status_text, eff.ci.contains(sc.true_value), eff.ci.high - eff.ci.low, float(eff.prediction.contains(new))


def calibrate_population(prereg: Prereg, *, n_experiments: int = 200, n_seeds: int = 3, n_docs: int = 20,
                         n_resamples: int = 300, share_users: tuple[int, ...] = SHARE_USERS,
                         effect_users: tuple[int, ...] = EFFECT_USERS, rng_seed: int = 20260101,
                         progress=None) -> PopulationCalibration:
    t0 = time.perf_counter()
    plan = [(k, sc, J) for k, sc in enumerate(scenarios(prereg))
            for J in (share_users if sc.criterion == "population_share" else effect_users)]
    rates, done, total = [], 0, len(plan) * n_experiments
    for k, sc, J in plan:
        out = [_one(sc, J, k, i, prereg, n_seeds, n_docs, n_resamples, rng_seed) for i in range(n_experiments)]
        done += n_experiments
        if progress:
            progress(done, total)
        st = [o[0] for o in out]
        n = len(out)
        pred = [o[3] for o in out if math.isfinite(o[3])]
        widths = [o[2] for o in out if math.isfinite(o[2])]
        rates.append(PopulationRate(sc.name, sc.criterion, sc.relation, J, n,
                                    st.count(Status.PASS.value) / n, st.count(Status.FAIL.value) / n,
                                    st.count(Status.INCONCLUSIVE.value) / n, st.count("NOT_APPLICABLE") / n,
                                    sum(o[1] for o in out) / n, float(np.mean(pred)) if pred else None,
                                    float(np.mean(widths)) if widths else math.nan))
    settings = {"share_margin": prereg.share_margin, "min_share": prereg.min_share,
                "max_effect": prereg.max_effect, "confidence": prereg.confidence,
                "interval_method": prereg.interval_method}
    return PopulationCalibration(tuple(rates), n_seeds, n_docs, n_resamples, rng_seed, settings,
                                 time.perf_counter() - t0)


def format_population_table(c: PopulationCalibration) -> str:
    head = (f"{'criterion':>17} {'scenario':>36} {'users':>5} {'N':>5} {'pass':>6} {'fail':>6} "
            f"{'inconcl':>7} {'n/a':>5} {'coverage':>8} {'pred cov':>8} {'width':>6}")
    lines = [f"Population criteria: {c.n_seeds} seeds, {c.n_docs} documents per user, B={c.n_resamples}; "
             "pass at a boundary = false PASS (target <= 0.05; 0.025 nominal)", head]
    for r in c.rates:
        pred = "" if r.prediction_coverage is None else f"{r.prediction_coverage:.3f}"
        lines.append(f"{r.criterion:>17} {r.scenario:>36} {r.n_users:>5} {r.n_experiments:>5} "
                     f"{r.pass_rate:>6.3f} {r.fail_rate:>6.3f} {r.inconclusive_rate:>7.3f} "
                     f"{r.not_applicable_rate:>5.2f} {r.coverage:>8.3f} {pred:>8} {r.mean_width:>6.3f}")
    return "\n".join(lines)


def write_population_calibration(c: PopulationCalibration, out_dir: str | Path) -> Path:
    return write_json(c.to_json(), out_dir, FILENAME)


# ---- the share at many users (issue 23), the cheap path ------------------------------------------
#
# `python -m validation.calibrate --study population-share`. POPULATION_SHARE at its least-favourable
# boundary (`min_share` of the users far above the bar, the others AT it, the limit from below) and
# with 90% of the users above it, for 17 to 3,000 users: the users' margins and intervals come from
# `validation.simulation.population.simulate_user_margins` (every user's interval exact), the share and the
# criterion from the verdict's own `share_clearing` and `share_criterion`. Beside the simulated rate,
# the exact one (binomial: a user at the bar is counted sure with probability exactly (1 - level) / 2,
# one far above always), for the shipped bound and for the bare Clopper-Pearson bound it replaced.

SHARE_MANY_USERS = (17, 18, 100, 1000, 3000)
SHARE_MANY_FILENAME = "calibration_population_share.json"


@dataclass(frozen=True)
class ShareUsersRate:
    scenario: str               # "boundary" (a PASS is false) or "power"
    true_share: float
    n_users: int
    n_experiments: int
    pass_rate: float            # simulated, the shipped bound
    not_applicable_rate: float
    exact_pass: float           # exact, the shipped bound (idealized: users at the bar or far above)
    exact_pass_bare: float      # exact, bare Clopper-Pearson on the sure count (before issue 23)

    @property
    def se(self) -> float:
        return binomial_se(self.pass_rate, self.n_experiments)


@dataclass(frozen=True)
class ShareUsersCalibration:
    rates: tuple[ShareUsersRate, ...]
    n_seeds: int
    se: float
    rng_seed: int
    settings: dict[str, Any]
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        return {"schema": "normadapt-calibration-population-share/1", "n_seeds": self.n_seeds, "se": self.se,
                "rng_seed": self.rng_seed, "settings": self.settings, "wall_s": self.wall_s,
                "rates": [asdict(r) | {"se": r.se} for r in self.rates]}


def exact_share_pass(n_users: int, true_share: float, min_share: float, level: float, *, bare: bool = False) -> float:
    """P(POPULATION_SHARE reads PASS) when a `true_share` of the users is counted sure always and the
    others (at the bar) with probability (1 - level) / 2: a binomial sum over the sure count. `bare`:
    the bare Clopper-Pearson lower bound (before issue 23) instead of `share_bounds`."""
    from scipy import stats

    from validation.contract.prereg import min_users_share
    from validation.judgment.population import clopper_pearson, share_bounds
    if not bare and n_users < min_users_share(min_share, level):
        return 0.0
    a = (1 - level) / 2
    k = np.arange(n_users + 1)
    low = np.array([clopper_pearson(int(x), n_users, level).low if bare
                    else share_bounds(int(x), n_users, n_users, level).low for x in k])
    return float(stats.binom.pmf(k, n_users, true_share + a * (1 - true_share))[low >= min_share].sum())


def calibrate_share_users(prereg: Prereg, *, users: tuple[int, ...] = SHARE_MANY_USERS, n_experiments: int = 2000,
                          n_seeds: int = 3, se: float = 0.02, rng_seed: int = 20260101,
                          progress=None) -> ShareUsersCalibration:
    """The share criterion's false PASS at its boundary and its power (90% above), per number of
    users, through `share_clearing` and `share_criterion` on `simulate_user_margins`."""
    from validation.contract.prereg import min_users_share
    from validation.judgment.population import share_clearing, share_criterion
    from validation.simulation.population import simulate_user_margins
    t0 = time.perf_counter()
    level, bar = prereg.confidence, prereg.share_margin
    need = min_users_share(prereg.min_share, level)
    plan = (("boundary", prereg.min_share), ("power", 0.9))
    rates = []
    for k, (scenario, share) in enumerate(plan):
        pop = UserPopulation(above_share=share, high_margin=0.30, low_margin=bar)
        for J in users:
            names = tuple(f"u{i}" for i in range(J))
            st = []
            for i in range(n_experiments):
                rng = np.random.default_rng([rng_seed, 23, k, J, i])
                m = simulate_user_margins(pop, J, n_seeds, se, level, rng)
                s = share_clearing(names, m.point, m.low, m.high, bar, level, prereg.comparator)
                st.append(share_criterion(s, prereg.min_share, need).status_text)
            if progress:
                progress(scenario, J)
            rates.append(ShareUsersRate(scenario, share, J, n_experiments, st.count(Status.PASS.value) / n_experiments,
                                        st.count("NOT_APPLICABLE") / n_experiments,
                                        exact_share_pass(J, share, prereg.min_share, level),
                                        exact_share_pass(J, share, prereg.min_share, level, bare=True)))
    settings = {"share_margin": bar, "min_share": prereg.min_share, "confidence": level,
                "min_users_share": need, "high_margin": 0.30}
    return ShareUsersCalibration(tuple(rates), n_seeds, se, rng_seed, settings, round(time.perf_counter() - t0, 1))


def format_share_users_table(c: ShareUsersCalibration) -> str:
    lines = [f"POPULATION_SHARE at many users (cheap path: per-user margins, {c.n_seeds} seeds, se {c.se:g}, t "
             f"intervals); boundary: {c.settings['min_share']:.0%} far above the bar, the others at it (a PASS is "
             f"false; nominal {(1 - c.settings['confidence']) / 2:g}); power: 90% above",
             f"{'scenario':>9} {'users':>6} {'N':>6} {'pass':>7} {'se':>6} {'n/a':>5} {'exact':>7} "
             f"{'exact, bare CP':>15}"]
    for r in c.rates:
        lines.append(f"{r.scenario:>9} {r.n_users:>6} {r.n_experiments:>6} {r.pass_rate:>7.4f} {r.se:>6.4f} "
                     f"{r.not_applicable_rate:>5.2f} {r.exact_pass:>7.4f} {r.exact_pass_bare:>15.4f}")
    return "\n".join(lines)


def write_share_users_calibration(c: ShareUsersCalibration, out_dir: str | Path) -> Path:
    return write_json(c.to_json(), out_dir, SHARE_MANY_FILENAME)
