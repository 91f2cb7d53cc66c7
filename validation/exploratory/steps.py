"""The training-step interaction (docs/methods.md, section 12): how the margin and the gains
change with the number of adapter training steps, with intervals, a slope and a model-based test.

Input: the run's `cells` and `docs` tables with a `steps` column (one complete study per count:
the same seeds, adapter rows, evaluation users and held-out documents at every count). Per count
the statistics of the verdict are recomputed (`validation.stats.metrics`) from that count's matrix, and
from one hierarchical bootstrap whose seed and document draws are the *same* for every count
(`validation.stats.bootstrap.draw_weights` once, `apply_draws` per count), so the counts' replicates are
paired and any difference or slope between counts gets its interval from the same resamples.

Per user:
- at every count: the margin, the personalization gain and the regularization gain, with
  intervals by the pre-registered `interval_method` (`validation.stats.intervals.bootstrap_interval`);
- the **slope of the margin on log2(steps)**: the least-squares slope over the counts (a
  fraction per doubling of the steps), with its interval from the same draws (the slope of
  every resample's margins) and the per-seed slopes as the seed-level values; its interval
  decides the words: `rises` (above 0), `falls` (below 0) or `flat` (contains 0);
- the mixed model's `diag x log2(steps)` interaction, overall and per user
  (`validation.stats.mixed_model.fit_steps_model`), DESCRIPTIVE: its Wald intervals treat every (seed,
  adapter, user, count) as independent, so a trend that the seeds share (the same held-out
  documents are scored at every count and seed) is counted once per seed (issue 23);

Overall: the **interaction test** (`InteractionTest`, verdict.json `steps_analysis.interaction`):
the same `diag x log2(steps)` question (the OLS `diag` effect of each count's seed-mean user block,
its least-squares slope on log2(steps)) with two intervals, one per unit that can replicate it:
the same paired draws as every other interval here (seeds, and held-out documents with each
document's scores at every count kept together), and the users' cells (a t on the cells' slopes,
`cell_slope_interval`); a direction is named only when both exclude 0. The slopes, directions,
words and the interaction test are the pure pieces of `validation.exploratory.trends`.

Exploratory: nothing here changes the gate; the criteria are read at the primary count only.
`analyze_steps` is the entry point from tables; it returns None when they hold one count. The verdict
calls `analyze_resampled` on the counts it judged (`validation.judgment.steps.resample_counts`), so
every count is bootstrapped once, with the draws its verdict used.
"""

from __future__ import annotations

import math
import warnings as _warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from validation.contract.prereg import Prereg
from validation.exploratory.trends import InteractionTest, direction, interaction_test, log2_slope, trend_words
from validation.inputs.arrays import StudyArrays, build_arrays
from validation.inputs.study import StudyData
from validation.inputs.tables import InputError
from validation.stats import metrics
from validation.stats.bootstrap import Resampled, Weights, apply_draws, bootstrap_mode, draw_weights
from validation.stats.design import IntervalDesign
from validation.stats.mixed_model import StepsModelFit, fit_steps_model
from validation.stats.types import BootstrapMode, Interval, _num

STEPS = "steps"
QUANTITIES = ("margin", "personalization_gain", "regularization_gain")
DIRECTIONS = ("rises", "falls", "flat", "unknown")


@dataclass(frozen=True)
class CountEstimate:
    """One quantity of one user at one step count (fractions, as in `users[]`)."""

    steps: int
    value: float
    ci: Interval | None          # None when the quantity's control is absent or nothing is resampled


@dataclass(frozen=True)
class Trend:
    """The slope of the margin on log2(steps) (fraction per doubling) and what it says."""

    slope: float
    ci: Interval
    direction: str               # `rises`, `falls` or `flat` (the interval decides)
    words: str                   # the sentence a reader can quote


@dataclass(frozen=True, eq=False)
class UserSteps:
    user: str
    margin: tuple[CountEstimate, ...]                 # one per count, ascending steps
    personalization_gain: tuple[CountEstimate, ...]
    regularization_gain: tuple[CountEstimate, ...]
    trend: Trend
    seed_slopes: np.ndarray                           # (S,) slope within each seed
    draws_slope: np.ndarray                           # (B,) bootstrap replicates of the slope

    def to_json(self) -> dict[str, Any]:
        def series(xs: tuple[CountEstimate, ...]) -> list[dict[str, Any]]:
            return [{"steps": c.steps, "value": _num(c.value),
                     "ci": None if c.ci is None else [_num(c.ci.low), _num(c.ci.high)]} for c in xs]
        return {"user": self.user, "margin": series(self.margin),
                "personalization_gain": series(self.personalization_gain),
                "regularization_gain": series(self.regularization_gain),
                "margin_slope": {"per": "doubling of the steps", "slope": _num(self.trend.slope),
                                 "ci": [_num(self.trend.ci.low), _num(self.trend.ci.high)],
                                 "direction": self.trend.direction,
                                 "per_seed": [_num(v) for v in self.seed_slopes]},
                "words": self.trend.words}


@dataclass(frozen=True, eq=False)
class StepsAnalysis:
    """The training-step interaction of one run; `verdict.json` key `steps_analysis`."""

    steps: tuple[int, ...]                # ascending
    primary: int | None                   # the pre-registered count (criteria read there), if known
    level: float
    interval_method: str
    bootstrap_mode: BootstrapMode
    n_resamples: int
    seeds: tuple[int, ...]
    users: tuple[UserSteps, ...]
    model: StepsModelFit | None
    notes: tuple[str, ...]
    interaction: InteractionTest | None = None     # the overall test on the right unit

    @property
    def exploratory(self) -> tuple[int, ...]:
        return tuple(k for k in self.steps if k != self.primary)

    def table(self) -> pl.DataFrame:
        """Tidy `user, quantity, steps, value, low, high` (fractions; null where not computable)."""
        rows = [{"user": u.user, "quantity": q, "steps": c.steps, "value": _num(c.value),
                 "low": None if c.ci is None else _num(c.ci.low),
                 "high": None if c.ci is None else _num(c.ci.high)}
                for u in self.users for q in QUANTITIES for c in getattr(u, q)]
        return pl.DataFrame(rows, schema={"user": pl.String, "quantity": pl.String, "steps": pl.Int64,
                                          "value": pl.Float64, "low": pl.Float64, "high": pl.Float64})

    def sentences(self) -> tuple[str, ...]:
        return tuple(u.trend.words for u in self.users)

    def to_json(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "primary": self.primary, "exploratory": list(self.exploratory),
                "level": self.level, "interval_method": self.interval_method,
                "bootstrap_mode": self.bootstrap_mode.value, "n_resamples": self.n_resamples,
                "paired": True, "seeds": list(self.seeds),
                "users": [u.to_json() for u in self.users],
                "model": None if self.model is None else self.model.to_json() | {"descriptive": MODEL_DESCRIPTIVE},
                "notes": list(self.notes),
                "interaction": None if self.interaction is None else self.interaction.to_json()}


MODEL_DESCRIPTIVE = ("descriptive only: the Wald intervals and p of this model read every (seed, adapter, user, "
                     "count) as independent, so a trend shared by the seeds (the same held-out documents are "
                     "scored at every count) is counted once per seed and the p is too small; the test is "
                     "`interaction` (seeds and documents resampled, paired across counts) and each user's "
                     "`margin_slope`")


# --------------------------------------------------------------------------- the tables per count

def split_by_steps(cells: pl.DataFrame, docs: pl.DataFrame | None,
                   source: str = "<cells>") -> tuple[tuple[int, StudyData], ...]:
    """Tables with a `steps` column -> one StudyData per count, ascending. Raises InputError naming
    the table when the column is absent, null or not a positive integer, or when the counts do not
    hold the same seeds, rows, users and documents (they could not be paired)."""
    for name, df in (("cells", cells), ("docs", docs)):
        if df is None:
            continue
        if STEPS not in df.columns:
            raise InputError(f"{source}: {name} lack a `{STEPS}` column; the step analysis needs a run "
                             "made with `--steps` (or add the column: the training-step count of each row).")
        col = df[STEPS]
        if col.null_count() or not col.dtype.is_integer() or (col < 1).any():
            raise InputError(f"{source}: the `{STEPS}` column of {name} must be a positive integer in "
                             "every row (partial or invalid values found); re-run or fix the table.")
    steps = tuple(sorted(int(k) for k in cells[STEPS].unique().to_list()))
    if docs is not None and sorted(int(k) for k in docs[STEPS].unique().to_list()) != list(steps):
        raise InputError(f"{source}: docs hold step counts {sorted(docs[STEPS].unique().to_list())}, "
                         f"cells {list(steps)}; they must be the same.")
    out = []
    key = None
    for k in steps:
        c = cells.filter(pl.col(STEPS) == k).drop(STEPS)
        d = None if docs is None else docs.filter(pl.col(STEPS) == k).drop(STEPS)
        design = (tuple(sorted(set(zip(c["seed"].to_list(), c["adapter"].to_list(), c["eval"].to_list(),
                                       strict=True)))),
                  None if d is None else tuple(sorted(set(zip(d["eval"].to_list(), d["doc_id"].to_list(),
                                                               strict=True)))))
        if key is None:
            key = design
        elif design != key:
            raise InputError(f"{source}: step count {k} holds other (seed, adapter, eval) cells or other "
                             f"documents than step count {steps[0]}; every count must be evaluated on the "
                             "same design so that counts can be paired (resume the run).")
        out.append((k, StudyData(cells=c, docs=d)))
    return tuple(out)


def paired_weights(per_count: list[StudyArrays], n_resamples: int, rng: np.random.Generator) -> Weights:
    """ONE set of seed and document draws (`draw_weights`) for every count: applied to each, they pair
    the counts' replicates. Every count must have the design of the first."""
    first = per_count[0]
    for a in per_count[1:]:
        if (a.seeds, a.adapters, a.users) != (first.seeds, first.adapters, first.users) or \
                bootstrap_mode(a) is not bootstrap_mode(first) or \
                (a.doc_nll is not None and [x.shape[0] for x in a.doc_nll] != [x.shape[0] for x in first.doc_nll]):
            raise ValueError("every step count must have the same seeds, adapter rows, users and documents.")
    return draw_weights(first, n_resamples, rng)


def paired_draws(per_count: list[StudyArrays], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(K, B, A, J): the hierarchical bootstrap with ONE set of seed and document draws applied to
    every count (paired replicates, `paired_weights`)."""
    weights = paired_weights(per_count, n_resamples, rng)
    return np.stack([apply_draws(a, weights) for a in per_count])


def count_statistics(logppl: np.ndarray, pooled: int | None, base: int | None) -> dict[str, np.ndarray]:
    """(..., A, J) -> {quantity: (..., J)} for `QUANTITIES`; NaN where the control is absent."""
    none = np.full(logppl.shape[:-2] + (logppl.shape[-1],), np.nan)
    with np.errstate(invalid="ignore"), _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN slices = missing cells
        return {"margin": metrics.diagonal_margin(logppl),
                "personalization_gain": metrics.personalization_gain(logppl, pooled) if pooled is not None else none,
                "regularization_gain": (metrics.regularization_gain(logppl, pooled, base)
                                        if None not in (pooled, base) else none)}


# --------------------------------------------------------------------------- the entry point

def margin_trend(user: str, slope: float, ci: Interval | None, level: float) -> Trend:
    """The margin's slope with its interval and words; `unknown` when nothing was resampled."""
    if ci is None or not ci.known:   # nothing resampled
        ci = Interval(math.nan, math.nan)   # no interval (null in verdict.json), no direction
        return Trend(slope, ci, "unknown", f"{user}: the margin's trend with training is unknown (slope "
                                           f"{slope * 100:+.1f} pp per doubling, no interval: nothing resampled)")
    return Trend(slope, ci, direction(ci), trend_words(user, slope, ci, level))


def analysis_notes(primary: int | None, level: float, n_users: int, steps: tuple[int, ...],
                   mode: BootstrapMode) -> list[str]:
    """What the step analysis says about itself (verdict.json `steps_analysis.notes`)."""
    notes = [f"exploratory: the pre-registered criteria and the gate are read at the primary count "
             f"({primary if primary is not None else 'see prereg.toml'}) only; these figures change no status",
             f"intervals at {level:.0%} per user and count, not adjusted for the {n_users} users x "
             f"{len(steps)} counts read"]
    if len(steps) == 2:
        notes.append("two step counts: the slope is their difference per doubling; linearity in "
                     "log2(steps) cannot be checked")
    if mode is BootstrapMode.NONE:
        notes.append("one seed and no per-document data: nothing resampled, so no intervals and every "
                     "trend is `unknown`")
    return notes


def analyze_steps(cells: pl.DataFrame, docs: pl.DataFrame | None, prereg: Prereg | None = None, *,
                  rng: np.random.Generator, primary: int | None = None, n_resamples: int | None = None,
                  interval_method: str | None = None, fit: bool = True,
                  source: str = "<cells>") -> StepsAnalysis | None:
    """The step analysis of tables with a `steps` column; None when they hold one count (or no
    `steps` column at all: a run made before `--steps`).

    `cells` must be normalized (`validation.inputs.tables.normalize_cells`, with the `steps` column kept);
    `primary` is the pre-registered count (labelled in the output, it changes no statistic);
    `n_resamples` and `interval_method` default to the pre-registration's. `fit=False` skips the
    mixed model. One explicit `rng` (give it its own stream, e.g. `default_rng(rng_seed)`, so the
    verdict's own draws are unchanged)."""
    prereg = Prereg() if prereg is None else prereg
    if STEPS not in cells.columns or cells[STEPS].n_unique() < 2:
        return None
    B = prereg.n_resamples if n_resamples is None else int(n_resamples)
    split = split_by_steps(cells, docs, source)
    steps = tuple(k for k, _ in split)
    if primary is not None and primary not in steps:
        raise InputError(f"the primary step count {primary} was not trained (the run has {list(steps)}); "
                         "fix `[steps] primary` in prereg.toml.")
    arrays = [build_arrays(d) for _, d in split]
    weights = paired_weights(arrays, B, rng)
    return analyze_resampled([(k, Resampled.of(a, weights)) for k, a in zip(steps, arrays, strict=True)], prereg,
                             primary=primary, interval_method=interval_method, fit=fit)


def analyze_resampled(counts: Sequence[tuple[int, Resampled]], prereg: Prereg, *, primary: int | None = None,
                      interval_method: str | None = None, fit: bool = True) -> StepsAnalysis | None:
    """The step analysis of step counts already bootstrapped with one set of draws (ascending
    `(steps, Resampled)` pairs sharing one `weights`, e.g. `validation.judgment.steps.resample_counts`,
    whose draws the verdict judged every count with); None with fewer than two counts."""
    if len(counts) < 2:
        return None
    steps = tuple(k for k, _ in counts)
    if primary is not None and primary not in steps:
        raise InputError(f"the primary step count {primary} was not trained (the run has {list(steps)}); "
                         "fix `[steps] primary` in prereg.toml.")
    if any(r.weights is not counts[0][1].weights for _, r in counts):
        raise ValueError("the step counts were not resampled with one set of draws (their replicates would not "
                         "be paired); resample them with `validation.judgment.steps.resample_counts`.")
    method = interval_method or prereg.interval_method
    level = prereg.confidence
    arrays = [r.arrays for _, r in counts]
    a0 = arrays[0]
    mode = bootstrap_mode(a0)
    draws = np.stack([r.draws for _, r in counts])                          # (K, B, A, J)
    B = draws.shape[1]
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)
        point = np.stack([np.nanmean(a.logppl, axis=0) for a in arrays])    # (K, A, J)
    per_seed = np.stack([a.logppl for a in arrays])                          # (K, S, A, J)
    P = count_statistics(point, a0.pooled, a0.base)                          # (K, J)
    D = count_statistics(draws, a0.pooled, a0.base)                          # (K, B, J)
    Sd = count_statistics(per_seed, a0.pooled, a0.base)                      # (K, S, J)
    design = IntervalDesign.of(a0, method, level)   # the counts hold the same seeds and documents

    def iv(draws_: np.ndarray, pt: float, seed_values: np.ndarray, j: int) -> Interval | None:
        return None if mode is BootstrapMode.NONE else design.interval(draws_, pt, j, seed_values)

    slope_p = log2_slope(P["margin"], steps)                                 # (J,)
    slope_d = log2_slope(np.moveaxis(D["margin"], 0, 1), steps) if B and mode is not BootstrapMode.NONE \
        else np.empty((0, len(a0.users)))                                   # (B, J)
    slope_s = log2_slope(np.moveaxis(Sd["margin"], 0, 1), steps)             # (S, J)
    users = []
    for j, user in enumerate(a0.users):
        series = {q: tuple(CountEstimate(k, float(P[q][i, j]), None if not np.isfinite(P[q][i, j])
                                         else iv(D[q][i, :, j], P[q][i, j], Sd[q][i, :, j], j))
                           for i, k in enumerate(steps)) for q in QUANTITIES}
        trend = margin_trend(user, float(slope_p[j]), iv(slope_d[:, j], slope_p[j], slope_s[:, j], j), level)
        users.append(UserSteps(user, series["margin"], series["personalization_gain"],
                               series["regularization_gain"], trend, slope_s[:, j].copy(), slope_d[:, j].copy()))
    notes = analysis_notes(primary, level, len(a0.users), steps, mode)
    model = None
    if fit:
        model = fit_steps_model(list(zip(steps, arrays, strict=True)), level)
        if model is not None:
            notes.append("the mixed model's Wald interval and p (`model`) are descriptive: they count a trend "
                         "the seeds share once per seed; the interaction's test is `interaction`")

    def overall_iv(draws_: np.ndarray, pt: float, seed_values: np.ndarray) -> Interval | None:
        return None if mode is BootstrapMode.NONE else design.pooled_interval(draws_, pt, seed_values)

    inter = interaction_test(point, draws, per_seed, steps, level, overall_iv)
    return StepsAnalysis(steps, primary, level, method, mode, 0 if mode is BootstrapMode.NONE else B,
                         a0.seeds, tuple(users), model, tuple(notes), inter)
