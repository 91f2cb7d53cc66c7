"""Calibration of the exploratory analyses of issue 13: the training-step interaction
(`validation.exploratory.steps`) and the cluster support of the domain-similarity structure
(`validation.exploratory.similarity`). `python -m validation.calibrate --study steps`.

**Interaction.** Step sweeps simulated by `validation.simulation.steps.simulate_steps` (the one
simulator) with a planted slope of the margin on log2(steps), the same for every user, go
through `validation.exploratory.steps.analyze_steps` (the verdict's code). Per (experiment, user):
- false-positive rate at slope 0: the share of slope intervals (pre-registered method and
  level) that exclude 0, i.e. a flat user named rising or falling; target <= 1 - confidence;
- power at the stated slopes (`SLOPE_EFFECTS`): the share naming the planted direction;
- coverage of the true slope;
- on the first `model_fits` experiments, the same two rates for the mixed model's per-user
  `diag x log2(steps)` Wald interval.

**Cluster support.** Studies of 6 users (`simulate_study`), either a null set (every adapter
equally good off its own column: no structure) or two planted groups of 3 (a cross-group adapter
`group_penalty` log ppl worse); splits and supports from `similarity_structure` on the verdict's
own draws (`validation.judge`):
- false-positive rate: the share of null studies with any split whose support reaches the
  threshold (`confidence`, 0.95 pre-registered) - familywise over the 2^6 - 8 = 56 possible clades;
- power: the share of planted studies in which both planted groups are splits with support at or
  above it, at each stated penalty (`GROUP_PENALTIES`).

Experiments are deterministic given (rng_seed, design, scenario, index).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from validation.calibration.plan import regime_params
from validation.calibration.results import binomial_se, write_json
from validation.contract.prereg import Prereg

SCHEMA = "normadapt-calibration-steps/1"
STEPS = (25, 50, 100, 200, 400)
SLOPE_EFFECTS = (0.005, 0.01)   # the stated effect sizes: 0.5 and 1 percentage point of margin per doubling
GROUP_PENALTIES = (0.01, 0.02)  # the stated effect sizes of a planted group structure (log ppl)
CLUSTER_USERS = 6
SNAPSHOT_SD = 0.005          # per-count seed x adapter x eval term of the sweeps (= the default cell_sd)


@dataclass(frozen=True, kw_only=True)
class BinomialRate:
    """A rate over `n` units with its binomial Monte-Carlo se (the last two fields of every figure)."""

    n: int                # units: (experiment, user) pairs, sweeps, or experiments for `cluster`
    rate: float

    @property
    def se(self) -> float:
        return binomial_se(self.rate, self.n)


@dataclass(frozen=True)
class RateFigure(BinomialRate):
    """One rate with its Monte-Carlo standard error (binomial, over `n` units)."""

    study: str            # `interaction`, `interaction-model` or `cluster`
    regime: str
    seeds: int
    scenario: str         # `null` or `effect`
    effect: float         # planted slope (fraction per doubling) or group penalty (log ppl)
    measure: str          # `false-positive`, `power` or `coverage`


@dataclass(frozen=True)
class SweepCalibration:
    """The figures of one sweep calibration and the settings that made them."""

    figures: tuple[BinomialRate, ...]
    level: float
    interval_method: str
    n_experiments: int
    n_resamples: int
    model_fits: int
    rng_seed: int
    steps: tuple[int, ...]
    wall_s: float

    def _json(self, schema: str, **extra: Any) -> dict[str, Any]:
        return {"schema": schema, "level": self.level, "interval_method": self.interval_method,
                "n_experiments": self.n_experiments, "n_resamples": self.n_resamples,
                "model_fits": self.model_fits, "rng_seed": self.rng_seed, "steps": list(self.steps),
                "snapshot_sd": SNAPSHOT_SD, **extra, "wall_s": self.wall_s,
                "figures": [asdict(f) | {"se": f.se} for f in self.figures]}


class StepsCalibration(SweepCalibration):
    def to_json(self) -> dict[str, Any]:
        return self._json(SCHEMA, slope_effects=list(SLOPE_EFFECTS), group_penalties=list(GROUP_PENALTIES),
                          cluster_users=CLUSTER_USERS)


def _rng(rng_seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([rng_seed, 13, *key])


def interaction_experiment(params, slope: float, n_seeds: int, prereg: Prereg, n_resamples: int,
                           rng: np.random.Generator, *, fit: bool,
                           steps: tuple[int, ...] = STEPS) -> dict[str, np.ndarray]:
    """One simulated sweep through `analyze_steps`: per user the true slope, the interval of the
    bootstrap slope, and (with `fit`) the mixed model's per-user interaction interval."""
    from validation.exploratory.steps import analyze_steps
    from validation.simulation.steps import simulate_steps
    st = simulate_steps(params, prereg.lenient_margin, steps, n_seeds, rng, slopes=slope)
    a = analyze_steps(st.data.cells, st.data.docs, prereg, rng=rng, n_resamples=n_resamples, fit=fit)
    out = {"truth": st.truth.slopes.copy(),
           "low": np.array([u.trend.ci.low for u in a.users]),
           "high": np.array([u.trend.ci.high for u in a.users]),
           "direction": np.array([u.trend.direction for u in a.users])}
    if fit and a.model is not None and a.model.user_interactions:
        out["model_low"] = np.array([e.ci.low for e in a.model.user_interactions])
        out["model_high"] = np.array([e.ci.high for e in a.model.user_interactions])
    return out


def cluster_experiment(groups: tuple[int, ...] | None, penalty: float, n_seeds: int, prereg: Prereg,
                       n_resamples: int, rng: np.random.Generator) -> tuple[float, bool]:
    """One 6-user study: (the highest split support, whether every planted group is a split with
    support >= `confidence`; False for a null study)."""
    import warnings

    from validation.exploratory.similarity import similarity_structure
    from validation.inputs.arrays import build_arrays
    from validation.simulation.simulate import simulate_study
    from validation.stats.bootstrap import resample_logppl
    users = tuple(f"user{k}" for k in range(CLUSTER_USERS))
    data = simulate_study(rng, n_seeds=n_seeds, users=users, n_docs=50, personalization=0.10,
                          groups=groups, group_penalty=penalty)
    arrays = build_arrays(data)
    draws = resample_logppl(arrays, n_resamples, rng)     # the verdict's bootstrap (`judge`)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = np.nanmean(arrays.logppl, axis=0)
    sim = similarity_structure(users, point, draws, level=prereg.confidence)
    supports = {s.members: (s.support or 0.0) for s in sim.splits}
    top = max(supports.values(), default=0.0)
    if groups is None:
        return top, False
    planted = [tuple(u for u, g in zip(users, groups, strict=True) if g == label) for label in sorted(set(groups))]
    found = all(supports.get(tuple(sorted(m)), 0.0) >= prereg.confidence for m in planted)
    return top, found


def calibrate_steps(prereg: Prereg | None = None, *, seeds: tuple[int, ...] = (3, 5),
                    regimes: tuple[str, ...] = ("seed-dominated", "document-dominated"),
                    n_experiments: int = 100, n_resamples: int = 500, model_fits: int = 0,
                    rng_seed: int = 0, progress=None) -> StepsCalibration:
    """Every design (regime x seeds): `n_experiments` null sweeps and as many at each planted
    slope of `SLOPE_EFFECTS`; and as many null and planted 6-user studies (each penalty of
    `GROUP_PENALTIES`) for the cluster support."""
    prereg = Prereg() if prereg is None else prereg
    t0 = time.perf_counter()
    figs: list[RateFigure] = []
    interaction = (("null", 0.0),) + tuple(("effect", e) for e in SLOPE_EFFECTS)
    cluster = (("null", None, 0.0),) + tuple(("effect", (0, 0, 0, 1, 1, 1), g) for g in GROUP_PENALTIES)
    total = len(seeds) * (len(regimes) * len(interaction) + len(cluster)) * n_experiments
    done = 0
    for r_i, regime in enumerate(regimes):
        params = replace(regime_params(regime, users=3, n_docs=50), snapshot_sd=SNAPSHOT_SD)
        for S in seeds:
            for sc_i, (scenario, slope) in enumerate(interaction):
                recs = []
                for i in range(n_experiments):
                    recs.append(interaction_experiment(params, slope, S, prereg, n_resamples,
                                                       _rng(rng_seed, r_i, S, sc_i, i), fit=i < model_fits))
                    done += 1
                    if progress:
                        progress(done, total)
                figs += _interaction_figures(recs, regime, S, scenario, slope)
            # the cluster study does not depend on the regime's sweep: run it once per seed count
            if r_i == 0:
                for sc_i, (scenario, groups, penalty) in enumerate(cluster):
                    res = [cluster_experiment(groups, penalty, S, prereg, n_resamples,
                                              _rng(rng_seed, 99, S, sc_i, i)) for i in range(n_experiments)]
                    done += n_experiments
                    if progress:
                        progress(done, total)
                    top = np.array([t for t, _ in res])
                    if scenario == "null":
                        figs.append(RateFigure("cluster", "simulate_study", S, "null", 0.0, "false-positive",
                                               n=len(res), rate=float(np.mean(top >= prereg.confidence))))
                    else:
                        figs.append(RateFigure("cluster", "simulate_study", S, "effect", penalty, "power",
                                               n=len(res), rate=float(np.mean([f for _, f in res]))))
    return StepsCalibration(tuple(figs), prereg.confidence, prereg.interval_method, n_experiments,
                            n_resamples, model_fits, rng_seed, STEPS, round(time.perf_counter() - t0, 1))


def _interaction_figures(recs, regime: str, S: int, scenario: str, slope: float) -> list[RateFigure]:
    truth = np.concatenate([r["truth"] for r in recs])
    low = np.concatenate([r["low"] for r in recs])
    high = np.concatenate([r["high"] for r in recs])
    dirs = np.concatenate([r["direction"] for r in recs])
    n = truth.size
    out = [RateFigure("interaction", regime, S, scenario, slope, "coverage", n=n,
                      rate=float(np.mean((low <= truth) & (truth <= high))))]
    if scenario == "null":
        out.append(RateFigure("interaction", regime, S, scenario, slope, "false-positive", n=n,
                              rate=float(np.mean(np.isin(dirs, ("rises", "falls"))))))
    else:
        want = "rises" if slope > 0 else "falls"
        out.append(RateFigure("interaction", regime, S, scenario, slope, "power", n=n,
                              rate=float(np.mean(dirs == want))))
    fitted = [r for r in recs if "model_low" in r]
    if fitted:
        ml = np.concatenate([r["model_low"] for r in fitted])
        mh = np.concatenate([r["model_high"] for r in fitted])
        # the model's interaction is on the diag effect (log ratio; negative = margin grows)
        hit = (mh < 0) if slope > 0 else (ml > 0)
        excl = (ml > 0) | (mh < 0)
        out.append(RateFigure("interaction-model", regime, S, scenario, slope,
                              "false-positive" if scenario == "null" else "power", n=int(ml.size),
                              rate=float(np.mean(excl if scenario == "null" else hit))))
    return out


def format_steps_table(res: StepsCalibration) -> str:
    lines = [f"Step interaction and cluster support ({res.interval_method} intervals, level {res.level:.0%}; "
             "effect: planted slope (fraction per doubling) or group penalty (log ppl); "
             f"{res.n_experiments} experiments per cell, {res.n_resamples} resamples)",
             f"{'study':>18} {'regime':>18} {'seeds':>5} {'scenario':>8} {'effect':>6} {'measure':>14} {'n':>5} "
             f"{'rate':>6} {'se':>6}"]
    for f in res.figures:
        lines.append(f"{f.study:>18} {f.regime:>18} {f.seeds:>5} {f.scenario:>8} {f.effect:>6.3f} "
                     f"{f.measure:>14} {f.n:>5} "
                     f"{f.rate:>6.3f} {f.se:>6.3f}")
    return "\n".join(lines)


def write_steps_calibration(res: StepsCalibration, out_dir: str | Path) -> Path:
    return write_json(res.to_json(), out_dir, "calibration_steps.json")


# --------------------------------------------------------------------------- seed-shared trends (issue 23)
#
# `python -m validation.calibrate --study step-trends`. The sweeps above draw every term that
# changes with the count afresh per seed; here the simulator adds trends that the seeds SHARE
# (`SimParams.doc_trend_sd`: per adapter and held-out document, noise whose only replication is the
# documents; `trend_sd`: per adapter and eval user, a real trend of that adapter on that user's text,
# in the truth). Each sweep goes through `analyze_steps`; read per experiment:
# - `interaction`: the overall diag x log2(steps) test (`StepsAnalysis.interaction`: paired bootstrap
#   and the users' cells);
# - `slope`: each user's margin slope interval (per (experiment, user));
# - `wald`, `wald-user`: the mixed model's Wald test, overall (p < 1 - confidence) and per user
#   (descriptive since issue 23; measured to show why).
# False positive at slope 0 (interval excludes 0), power at a planted slope (the right direction),
# coverage of the true value. With cell-level trends a user's true slope moves (the per-user tests:
# coverage) while the population interaction stays 0 (the overall tests: false positive).

DOC_TREND_SD = 0.0212   # per document: a cell-level trend of sd about 0.003 at 50 documents (issue 23's)
CELL_TREND_SD = 0.003   # per adapter x eval user (a real trend: coverage only)
TREND_SLOPE = 0.01      # the planted margin slope of the power rows (1 pp per doubling)


@dataclass(frozen=True)
class TrendFigure(BinomialRate):
    """One rate of the seed-shared-trend calibration with its binomial Monte-Carlo se."""

    test: str             # `interaction`, `slope`, `wald` or `wald-user`
    regime: str
    seeds: int
    trends: str           # `none`, `documents` (doc_trend_sd) or `cells` (trend_sd, in the truth)
    trend_sd: float
    slope: float          # planted margin slope per doubling
    measure: str          # `false-positive`, `power` or `coverage`


class TrendCalibration(SweepCalibration):
    def to_json(self) -> dict[str, Any]:
        return self._json("normadapt-calibration-step-trends/1")


def trend_experiment(params, slope: float, n_seeds: int, prereg: Prereg, n_resamples: int,
                     rng: np.random.Generator, *, fit: bool) -> dict[str, np.ndarray]:
    """One sweep with the trends of `params`: per test, whether its interval excludes 0, names the
    direction of a positive margin slope, and holds the truth (arrays over users for the per-user
    tests, length 1 for the overall ones)."""
    from validation.exploratory.steps import analyze_steps
    from validation.exploratory.trends import log2_slope
    from validation.simulation.simulate import true_diagonal_effect
    from validation.simulation.steps import simulate_steps
    st = simulate_steps(params, prereg.lenient_margin, STEPS, n_seeds, rng, slopes=slope)
    a = analyze_steps(st.data.cells, st.data.docs, prereg, rng=rng, n_resamples=n_resamples, fit=fit)
    J = len(a.users)
    true_inter = float(log2_slope(np.array([[true_diagonal_effect(E[:J, :J])] for E in st.truth.expected]),
                                  STEPS)[0])
    lo = np.array([u.trend.ci.low for u in a.users])
    hi = np.array([u.trend.ci.high for u in a.users])
    it = a.interaction
    out = {"slope_excl": (lo > 0) | (hi < 0), "slope_right": lo > 0,
           "slope_cover": (lo <= st.truth.slopes) & (st.truth.slopes <= hi),
           "interaction_excl": np.array([it.direction in ("grows", "shrinks")]),
           "interaction_right": np.array([it.direction == "grows"]),   # a rising margin = a growing advantage
           "interaction_cover": np.array([it.ci.low <= true_inter <= it.ci.high])}
    if fit and a.model is not None:
        m = a.model
        out |= {"wald_excl": np.array([m.p_value < 1 - prereg.confidence]),
                "wald_right": np.array([m.interaction_ci.high < 0]),
                "wald_cover": np.array([m.interaction_ci.low <= true_inter <= m.interaction_ci.high])}
        if m.user_interactions:
            ml = np.array([e.ci.low for e in m.user_interactions])
            mh = np.array([e.ci.high for e in m.user_interactions])
            out |= {"wald-user_excl": (ml > 0) | (mh < 0), "wald-user_right": mh < 0}
    return out


def trend_designs(doc_trend_sd: float = DOC_TREND_SD, cell_trend_sd: float = CELL_TREND_SD,
                  slope: float = TREND_SLOPE) -> tuple[tuple[str, float, str, float], ...]:
    """(trends, sd, scenario, slope): without trends, with document trends (null and effect), and
    with cell-level trends (null)."""
    return (("none", 0.0, "null", 0.0), ("none", 0.0, "effect", slope),
            ("documents", doc_trend_sd, "null", 0.0), ("documents", doc_trend_sd, "effect", slope),
            ("cells", cell_trend_sd, "null", 0.0))


def calibrate_step_trends(prereg: Prereg | None = None, *, seeds: tuple[int, ...] = (3,),
                          regimes: tuple[str, ...] = ("seed-dominated", "document-dominated"),
                          designs: tuple[tuple[str, float, str, float], ...] | None = None,
                          n_experiments: int = 100, n_resamples: int = 300, model_fits: int = 0,
                          rng_seed: int = 0, progress=None) -> TrendCalibration:
    """Every regime x seeds x design of `trend_designs()`: `n_experiments` sweeps (3 users x 50
    documents, `STEPS`), the first `model_fits` of each also fitting the mixed model."""
    prereg = Prereg() if prereg is None else prereg
    designs = trend_designs() if designs is None else designs
    t0 = time.perf_counter()
    figs: list[TrendFigure] = []
    total, done = len(regimes) * len(seeds) * len(designs) * n_experiments, 0
    for r_i, regime in enumerate(regimes):
        base = replace(regime_params(regime, users=3, n_docs=50), snapshot_sd=SNAPSHOT_SD)
        for S in seeds:
            for d_i, (trends, sd, scenario, slope) in enumerate(designs):
                params = replace(base, doc_trend_sd=sd if trends == "documents" else 0.0,
                                 trend_sd=sd if trends == "cells" else 0.0)
                recs = []
                for i in range(n_experiments):
                    recs.append(trend_experiment(params, slope, S, prereg, n_resamples,
                                                 _rng(rng_seed, 23, r_i, S, d_i, i), fit=i < model_fits))
                    done += 1
                    if progress:
                        progress(done, total)
                figs += _trend_figures(recs, regime, S, trends, sd, scenario, slope)
    return TrendCalibration(tuple(figs), prereg.confidence, prereg.interval_method, n_experiments, n_resamples,
                            model_fits, rng_seed, STEPS, round(time.perf_counter() - t0, 1))


def _trend_figures(recs, regime: str, S: int, trends: str, sd: float, scenario: str,
                   slope: float) -> list[TrendFigure]:
    out = []
    for test in ("interaction", "slope", "wald", "wald-user"):
        have = [r for r in recs if f"{test}_excl" in r]
        if not have:
            continue
        def rate(key: str, have=have) -> tuple[int, float]:
            x = np.concatenate([r[key] for r in have])
            return int(x.size), float(np.mean(x))
        overall = test in ("interaction", "wald")
        # the truth is 0 (null) or the planted slope: a rate of rejections; with cell-level trends a
        # user's slope truly moves (coverage only), the population interaction does not (mean zero)
        if trends != "cells" or overall:
            n, v = rate(f"{test}_excl" if scenario == "null" else f"{test}_right")
            out.append(TrendFigure(test, regime, S, trends, sd, slope,
                                   "false-positive" if scenario == "null" else "power", n=n, rate=v))
        if f"{test}_cover" in have[0] and not (trends == "cells" and overall):
            n, v = rate(f"{test}_cover")
            out.append(TrendFigure(test, regime, S, trends, sd, slope, "coverage", n=n, rate=v))
    return out


def format_trend_table(res: TrendCalibration) -> str:
    lines = [f"Step interaction with seed-shared trends ({res.interval_method} intervals, level {res.level:.0%}; "
             f"{res.n_experiments} sweeps per row, the mixed model on the first {res.model_fits}; "
             f"{res.n_resamples} resamples; trends: none, per document (noise) or per cell (truth))",
             f"{'test':>12} {'regime':>18} {'seeds':>5} {'trends':>9} {'sd':>6} {'slope':>6} {'measure':>14} "
             f"{'n':>5} {'rate':>6} {'se':>6}"]
    for f in res.figures:
        lines.append(f"{f.test:>12} {f.regime:>18} {f.seeds:>5} {f.trends:>9} {f.trend_sd:>6.4f} {f.slope:>6.3f} "
                     f"{f.measure:>14} {f.n:>5} {f.rate:>6.3f} {f.se:>6.3f}")
    return "\n".join(lines)


def write_trend_calibration(res: TrendCalibration, out_dir: str | Path) -> Path:
    return write_json(res.to_json(), out_dir, "calibration_step_trends.json")
