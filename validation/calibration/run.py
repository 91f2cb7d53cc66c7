"""Running the calibration: simulate experiments, judge them, summarize into typed results.

`calibrate` is the engine of `python -m validation.calibrate` (module doc there); experiments
are deterministic given (rng_seed, seeds, scenario, index), whatever the number of processes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from common.contract import DEFAULT_RNG_SEED
from validation.calibration.plan import CRITERIA, least_favourable, margin_ladder, relations, scenarios, thresholds
from validation.calibration.results import (
    LEAST_FAVOURABLE,
    CalibrationResult,
    DesignCalibration,
    MarginCoverage,
    MethodFigures,
    StatusRate,
)
from validation.contract.prereg import INTERVAL_METHODS, Prereg
from validation.contract.status import Status
from validation.judgment import criteria as crit
from validation.simulation.simulate import SimParams, simulate_experiment
from validation.stats.intervals import document_df

_STATUS_CODE = {Status.PASS: 0, Status.TRIGGERED: 0, Status.FAIL: 1, Status.NOT_TRIGGERED: 1,
                Status.INCONCLUSIVE: 2}


@dataclass(frozen=True, eq=False)
class ExperimentRecord:
    """One simulated experiment, judged with every interval method (M methods, J users)."""

    truth: np.ndarray     # (J,) true margins
    point: np.ndarray     # (J,) estimated margins
    low: np.ndarray       # (M, J) margin interval bounds per method
    high: np.ndarray
    codes: np.ndarray     # (M, 3) statuses: 0 pass/triggered, 1 fail/not triggered, 2 inconclusive
    diag: np.ndarray      # (3,) (covered, estimate, truth) of the diagonal effect; NaN if not fitted
    seed_share: float     # the judged study's estimated seed share of the margins' variance


def run_experiment(params: SimParams, margin, n_seeds: int, prereg: Prereg,
                   n_resamples: int, rng: np.random.Generator, *, fit: bool,
                   methods: tuple[str, ...] = INTERVAL_METHODS) -> ExperimentRecord:
    """Simulate one study, judge it, and read intervals and criteria with every method."""
    from validation.judgment.study import judge

    study = simulate_experiment(params, margin, n_seeds, rng)
    v = judge(study.data, prereg, rng=rng, n_resamples=n_resamples, fit=fit)
    M, J = len(methods), len(v.users)
    n_docs = tuple(n for _, n in v.bootstrap.n_docs) or None
    doc_df = None if n_docs is None else _doc_df(study.data, [u.user for u in v.users])
    low, high, codes = np.empty((M, J)), np.empty((M, J)), np.empty((M, 3), dtype=np.int8)
    for k, m in enumerate(methods):
        if m == prereg.interval_method:
            ci, criteria = ([u.ci.low for u in v.users], [u.ci.high for u in v.users]), v.criteria
        else:
            ci = crit.margin_intervals(v.users, prereg, prereg.confidence, method=m, n_seeds=n_seeds,
                                       n_docs=n_docs, doc_df=doc_df)
            criteria = crit.read_criteria(v.users, prereg, method=m, n_seeds=n_seeds, n_docs=n_docs,
                                          doc_df=doc_df)
        codes[k] = [_STATUS_CODE[c.status] for c in criteria]
        low[k], high[k] = ci
    diag = np.full(3, np.nan)
    if v.model is not None and np.isfinite(v.model.diagonal_se):
        truth_d = study.truth.diagonal_effect
        diag[:] = (float(v.model.diagonal_ci.contains(truth_d)), v.model.diagonal_effect, truth_d)
    share = v.bootstrap.regime.seed_share if v.bootstrap.regime is not None else np.nan
    return ExperimentRecord(study.truth.margins, np.array([u.margin for u in v.users]),
                            low, high, codes, diag, float(share))


def _doc_df(data, users: list[str]) -> tuple[float, ...]:
    """`validation.stats.intervals.document_df` of each user's held-out documents (their token counts in
    one seed and adapter: the same text in every cell)."""
    docs = data.docs
    one = docs.filter((pl.col("seed") == docs["seed"][0]) & (pl.col("adapter") == docs["adapter"][0]))
    return tuple(document_df(one.filter(pl.col("eval") == u)["n_tokens"].to_numpy()) for u in users)


def _experiment_rng(rng_seed: int, n_seeds: int, rung: int, index: int, variant: int = 0) -> np.random.Generator:
    """Independent of how experiments are split across processes."""
    return np.random.default_rng([rng_seed, n_seeds, rung, index] + ([variant] if variant else []))


@dataclass(frozen=True)
class _Chunk:
    variant: int
    params: SimParams
    prereg: Prereg
    n_seeds: int
    rung: int
    margin: np.ndarray
    start: int
    stop: int
    n_fit: int
    n_resamples: int
    rng_seed: int
    methods: tuple[str, ...]


def _run_chunk(task: _Chunk) -> tuple[tuple[int, int], int, list[ExperimentRecord]]:
    out = [run_experiment(task.params, task.margin, task.n_seeds, task.prereg, task.n_resamples,
                          _experiment_rng(task.rng_seed, task.n_seeds, task.rung, i, task.variant),
                          fit=i < task.n_fit, methods=task.methods)
           for i in range(task.start, task.stop)]
    return (task.variant, task.n_seeds), task.rung, out


def _rate(name: str, relation: str, margin: float, method: str, x: np.ndarray) -> StatusRate:
    return StatusRate(name, relation, margin, method, int(x.size), float(np.mean(x == 0)),
                      float(np.mean(x == 1)), float(np.mean(x == 2)))


def summarize_design(n_seeds: int, params: SimParams, prereg: Prereg, ladder: tuple[float, ...],
                     per_rung: list[list[ExperimentRecord]], methods: tuple[str, ...],
                     wall_s: float, regime: str = "") -> DesignCalibration:
    """Records of every experiment (grouped by scenario) -> DesignCalibration."""
    k_pre = methods.index(prereg.interval_method)
    allrec = [r for rung in per_rung for r in rung]
    truth = np.stack([r.truth for r in allrec])                         # (N, J)
    low = np.stack([r.low for r in allrec])                             # (N, M, J)
    high = np.stack([r.high for r in allrec])
    covered = (low <= truth[:, None]) & (truth[:, None] <= high)        # (N, M, J)
    by_method = tuple(MethodFigures(m, float(covered[:, k].mean()), float(np.mean(high[:, k] - low[:, k])))
                      for k, m in enumerate(methods))
    by_margin = []
    for r_i, rung in enumerate(per_rung[:len(ladder)]):
        c = np.stack([(r.low[k_pre] <= r.truth) & (r.truth <= r.high[k_pre]) for r in rung])
        by_margin.append(MarginCoverage(float(ladder[r_i]), float(c.mean())))
    diag = np.stack([r.diag for r in allrec])
    fitted = np.isfinite(diag[:, 0])
    rates = []
    for name, relation, r_i in relations(prereg, ladder):
        codes = np.stack([r.codes for r in per_rung[r_i]])              # (n, M, 3)
        rates += [_rate(name, relation, float(ladder[r_i]), m, codes[:, k, CRITERIA.index(name)])
                  for k, m in enumerate(methods)]
    for k_lf, (name, _) in enumerate(least_favourable(prereg, len(params.users))):
        codes = np.stack([r.codes for r in per_rung[len(ladder) + k_lf]])
        rates += [_rate(name, LEAST_FAVOURABLE, thresholds(prereg)[name], m, codes[:, k, CRITERIA.index(name)])
                  for k, m in enumerate(methods)]
    return DesignCalibration(
        seeds=n_seeds, n_users=len(params.users), n_docs=tuple(int(n) for n in params.n_docs),
        n_experiments=len(allrec), n_model_fits=int(fitted.sum()),
        method=prereg.interval_method, level=prereg.confidence, by_method=by_method,
        coverage_by_margin=tuple(by_margin),
        diagonal_effect_coverage=float(diag[fitted, 0].mean()) if fitted.any() else None,
        status_rates=tuple(rates), wall_s=wall_s, regime=regime, seed_share=_mean_share(allrec))


def _mean_share(records: list[ExperimentRecord]) -> float | None:
    x = np.array([r.seed_share for r in records])
    return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else None


def regime_name(params: SimParams) -> str:
    """The regime label a calibration of `params` is filed under."""
    if params.expected is not None:
        return "run"
    if params.source.startswith("regime "):
        return params.source.removeprefix("regime ")
    return "seed-dominated" if params.source == "defaults" else params.source


def _calibrate_iv(seeds, n_experiments, n_resamples, n_model_fits, jobs) -> None:
    if not seeds or any(not isinstance(s, (int, np.integer)) or s < 2 for s in seeds):
        raise ValueError(f"`seeds` must be integers >= 2 (a bootstrap over seeds needs two); got {list(seeds)!r}.")
    for name, v, lo in (("n_experiments", n_experiments, 1), ("n_resamples", n_resamples, 10),
                        ("n_model_fits", n_model_fits, 0), ("jobs", jobs, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"`{name}` must be an integer >= {lo}; got {v!r}.")


def calibrate(
    params: SimParams | None = None,
    prereg: Prereg | None = None,
    *,
    seeds: tuple[int, ...] = (3, 5, 8, 12),
    n_experiments: int = 1400,
    n_resamples: int = 1000,
    n_model_fits: int = 100,
    rng_seed: int = DEFAULT_RNG_SEED,
    jobs: int = 1,
    methods: tuple[str, ...] = INTERVAL_METHODS,
    notes: tuple[str, ...] = (),
    progress=None,
    variants: tuple[SimParams, ...] = (),
) -> CalibrationResult:
    """Simulate `n_experiments` per design (split evenly over the scenarios: the margin ladder,
    every user at one rung, then the least-favourable configurations) and summarize.

    `n_model_fits` experiments per design (spread over the ladder) also fit the mixed model for
    the diagonal-effect coverage. Deterministic given `rng_seed`, whatever `jobs` is.
    `variants`: further parameter sets (other regimes or document counts) calibrated the same
    way; one design per (parameter set, number of seeds), in that order.
    Cost: about n_experiments x (20 ms + B/1000 x 10 ms) per design, plus ~0.6 s per model fit.
    """
    params = SimParams() if params is None else params
    prereg = Prereg() if prereg is None else prereg
    seeds = tuple(int(s) for s in seeds)
    _calibrate_iv(seeds, n_experiments, n_resamples, n_model_fits, jobs)
    if prereg.comparator != "best_other":
        prereg = replace(prereg, comparator="best_other")
        notes = notes + ("calibrated with comparator best_other (the true margins are defined "
                         "against the best other adapter)",)
    if prereg.interval_method not in methods:
        methods = (prereg.interval_method,) + tuple(methods)
    ladder = margin_ladder(prereg)
    every = (params,) + tuple(variants)
    L = len(scenarios(prereg, len(params.users)))
    per_rung_n = math.ceil(n_experiments / L)
    fit_per_rung = math.ceil(n_model_fits / L) if n_model_fits else 0
    chunk = max(10, per_rung_n // 8)
    tasks = [_Chunk(v, p, prereg, S, r, scenarios(prereg, len(p.users))[r], a, min(a + chunk, per_rung_n),
                    fit_per_rung, n_resamples, rng_seed, tuple(methods))
             for v, p in enumerate(every) for S in seeds for r in range(L)
             for a in range(0, per_rung_n, chunk)]
    t0 = time.perf_counter()
    records: dict[tuple[int, int], list[list[ExperimentRecord]]] = {
        (v, S): [[] for _ in range(L)] for v in range(len(every)) for S in seeds}
    if jobs > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(jobs) as pool:  # fork deadlocks with polars threads
            results = pool.imap(_run_chunk, tasks)
            for S, r, out in results:
                records[S][r].extend(out)
                if progress:
                    progress(S, r, len(out))
    else:
        for task in tasks:
            S, r, out = _run_chunk(task)
            records[S][r].extend(out)
            if progress:
                progress(S, r, len(out))
    wall = time.perf_counter() - t0
    designs = tuple(summarize_design(S, p, prereg, ladder, records[v, S], tuple(methods),
                                     wall * S / sum(seeds) / len(every), regime_name(p))
                    for v, p in enumerate(every) for S in seeds)
    return CalibrationResult(designs, ladder, n_resamples, rng_seed, params.to_json(),
                             prereg.to_json(), tuple(notes), wall)
