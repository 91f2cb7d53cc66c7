"""Validate the validator: coverage, boundary error rates and power of the verdict, by simulation.

`python -m validation.calibrate [--out DIR] [--from-run DIR] [--seeds 3,5,8,12] [--experiments N]
[--resamples B] [--rng-seed S] [--jobs 2]`

For each design (number of seeds; users and documents from `--from-run` or 3 users x 50 docs),
experiments are simulated by `validation.simulate` at a ladder of true margins shared by every
user: 0, delta, the LENIENT bar, the STRICT bar and one step above it (0, 0.02, 0.05, 0.10,
0.15 with the default pre-registration). Each goes through `validation.judge` (the verdict's own
code). For every interval method of `validation.prereg.INTERVAL_METHODS` the same bootstrap draws
give the users' margin intervals and the criteria (`validation.criteria`), so methods are
compared on identical data. Reported per design:

- margin coverage: the share of (experiment, user) intervals containing the true margin;
- diagonal-effect coverage: the share of the mixed model's Wald intervals containing the true
  `diag` coefficient, on a subsample of experiments (`--model-fits`, the fit is the slow part);
- per criterion, PASS / FAIL / INCONCLUSIVE rates at the ladder rung just below its threshold,
  at it, and just above it; for CATASTROPHIC (TRIGGERED is its "pass"): at 0, delta and above;
- for STRICT and LENIENT also at their least-favourable boundary configuration (`least_favourable`:
  one user at the bar and the others far above for STRICT; for LENIENT all but `required - 1`
  users at the bar), where a criterion over several users is most likely to PASS by chance.

`calibration.json` is written atomically; `CalibrationResult.from_json` reads it back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from validation import criteria as crit
from validation.intervals import bootstrap_interval
from validation.prereg import INTERVAL_METHODS, Prereg, PreregError, load_prereg
from validation.results import Status
from validation.simulate import SimParams, simulate_experiment
from validation.simulate_from_run import params_from_run

SCHEMA = "normadapt-calibration/1"
CRITERIA = ("strict", "lenient", "catastrophic")
_STATUS_CODE = {Status.PASS: 0, Status.TRIGGERED: 0, Status.FAIL: 1, Status.NOT_TRIGGERED: 1,
                Status.INCONCLUSIVE: 2}


@dataclass(frozen=True)
class StatusRate:
    """How often one criterion returned each status with every user's true margin at `true_margin`.

    For CATASTROPHIC, `pass_rate` is its TRIGGERED rate and `fail_rate` its NOT_TRIGGERED rate.
    """

    criterion: str
    relation: str          # "below", "at" or "above" the criterion's threshold
    true_margin: float
    method: str            # interval method the statuses were read with
    n: int
    pass_rate: float
    fail_rate: float
    inconclusive_rate: float


@dataclass(frozen=True)
class DesignCalibration:
    """Calibration of one design (seeds x users x documents); rates are fractions in [0, 1]."""

    seeds: int
    n_users: int
    n_docs: tuple[int, ...]
    n_experiments: int
    n_model_fits: int
    method: str                                          # the pre-registered interval method
    level: float
    margin_coverage: float                               # with `method`
    margin_coverage_by_method: tuple[tuple[str, float], ...]   # over every scenario
    margin_coverage_by_margin: tuple[tuple[float, float], ...]   # (true margin, coverage), `method`
    mean_interval_width: tuple[tuple[str, float], ...]   # per method
    diagonal_effect_coverage: float | None               # None when no model was fitted
    pass_rate_at_threshold: tuple[tuple[str, float], ...]  # criterion -> PASS (TRIGGERED) rate
    pass_rate_least_favourable: tuple[tuple[str, float], ...]  # strict, lenient (`least_favourable`)
    status_rates: tuple[StatusRate, ...]                 # every criterion x relation x method
    wall_s: float

    def rates(self, method: str | None = None) -> tuple[StatusRate, ...]:
        m = method or self.method
        return tuple(r for r in self.status_rates if r.method == m)

    def to_json(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds, "n_users": self.n_users, "n_docs": list(self.n_docs),
            "n_experiments": self.n_experiments, "n_model_fits": self.n_model_fits,
            "method": self.method, "level": self.level,
            "margin_coverage": self.margin_coverage,
            "margin_coverage_by_method": dict(self.margin_coverage_by_method),
            "margin_coverage_by_margin": [{"true_margin": m, "coverage": c}
                                          for m, c in self.margin_coverage_by_margin],
            "mean_interval_width": dict(self.mean_interval_width),
            "diagonal_effect_coverage": self.diagonal_effect_coverage,
            "pass_rate_at_threshold": dict(self.pass_rate_at_threshold),
            "pass_rate_least_favourable": dict(self.pass_rate_least_favourable),
            "status_rates": [r.__dict__ for r in self.status_rates],
            "wall_s": self.wall_s,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "DesignCalibration":
        return cls(
            seeds=int(d["seeds"]), n_users=int(d["n_users"]), n_docs=tuple(d["n_docs"]),
            n_experiments=int(d["n_experiments"]), n_model_fits=int(d["n_model_fits"]),
            method=d["method"], level=float(d["level"]), margin_coverage=float(d["margin_coverage"]),
            margin_coverage_by_method=tuple(d["margin_coverage_by_method"].items()),
            margin_coverage_by_margin=tuple((r["true_margin"], r["coverage"])
                                            for r in d["margin_coverage_by_margin"]),
            mean_interval_width=tuple(d["mean_interval_width"].items()),
            diagonal_effect_coverage=d["diagonal_effect_coverage"],
            pass_rate_at_threshold=tuple(d["pass_rate_at_threshold"].items()),
            pass_rate_least_favourable=tuple(d["pass_rate_least_favourable"].items()),
            status_rates=tuple(StatusRate(**r) for r in d["status_rates"]),
            wall_s=float(d["wall_s"]),
        )


@dataclass(frozen=True)
class CalibrationResult:
    """What `calibrate` returns and `calibration.json` holds."""

    designs: tuple[DesignCalibration, ...]
    margins: tuple[float, ...]          # the ladder of true margins simulated
    n_resamples: int
    rng_seed: int
    params: dict[str, Any]              # SimParams.to_json()
    prereg: dict[str, Any]              # the pre-registered settings used
    notes: tuple[str, ...]
    wall_s: float

    def design(self, seeds: int) -> DesignCalibration:
        for d in self.designs:
            if d.seeds == seeds:
                return d
        raise KeyError(f"no design with {seeds} seeds; have {[d.seeds for d in self.designs]}")

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "designs": [d.to_json() for d in self.designs],
                "margins": list(self.margins), "n_resamples": self.n_resamples,
                "rng_seed": self.rng_seed, "params": self.params, "prereg": self.prereg,
                "notes": list(self.notes), "wall_s": self.wall_s}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "CalibrationResult":
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a calibration file: `schema` is {d.get('schema')!r}, expected {SCHEMA!r}.")
        return cls(tuple(DesignCalibration.from_json(x) for x in d["designs"]), tuple(d["margins"]),
                   int(d["n_resamples"]), int(d["rng_seed"]), d["params"], d["prereg"],
                   tuple(d["notes"]), float(d["wall_s"]))


def margin_ladder(prereg: Prereg) -> tuple[float, ...]:
    """True margins simulated: 0, delta, lenient bar, strict bar, one step above strict."""
    step = prereg.strict_margin - prereg.lenient_margin
    rungs = {0.0, prereg.delta, prereg.lenient_margin, prereg.strict_margin,
             prereg.strict_margin + (step if step > 0 else prereg.strict_margin / 2)}
    return tuple(sorted(round(r, 10) for r in rungs))


FAR_ABOVE = 0.20   # how far above the bar the "sure" users of a least-favourable scenario sit


def least_favourable(prereg: Prereg, n_users: int) -> tuple[tuple[str, np.ndarray], ...]:
    """Per criterion, the boundary configuration most likely to PASS while the truth does not:
    STRICT: one user at the bar, the others far above it; LENIENT: `required - 1` users far
    above, the other users at the bar (so that any one of them, by chance, makes the count).
    """
    req = prereg.lenient_required(n_users)
    strict = np.full(n_users, prereg.strict_margin + FAR_ABOVE)
    strict[0] = prereg.strict_margin
    lenient = np.full(n_users, prereg.lenient_margin)
    lenient[:req - 1] = prereg.lenient_margin + FAR_ABOVE
    return (("strict", strict), ("lenient", lenient))


def thresholds(prereg: Prereg) -> dict[str, float]:
    return {"strict": prereg.strict_margin, "lenient": prereg.lenient_margin,
            "catastrophic": prereg.delta}


# ---- one experiment -------------------------------------------------------------------------

def run_experiment(params: SimParams, margin: float, n_seeds: int, prereg: Prereg,
                   n_resamples: int, rng: np.random.Generator, *, fit: bool,
                   methods: tuple[str, ...] = INTERVAL_METHODS) -> dict[str, np.ndarray]:
    """Simulate one study, judge it, and read intervals and criteria with every method.

    Returns arrays: `truth` (J,), `point` (J,), `low`/`high` (M, J) margin intervals, `codes`
    (M, 3) criterion statuses (0 pass/triggered, 1 fail/not triggered, 2 inconclusive), and
    `diag` (3,) = (covered, estimate, truth), NaN when not fitted.
    """
    from validation.judging import judge

    study = simulate_experiment(params, margin, n_seeds, rng)
    v = judge(study.data, prereg, rng=rng, n_resamples=n_resamples, fit=fit)
    names = [u.user for u in v.users]
    point = np.array([u.margin for u in v.users])
    M, J = len(methods), len(names)
    low, high, codes = np.empty((M, J)), np.empty((M, J)), np.empty((M, 3), dtype=np.int8)
    for k, m in enumerate(methods):
        if m == prereg.interval_method:
            ci, criteria = [u.ci for u in v.users], v.criteria
        else:
            ci = [bootstrap_interval(u.draws_margin, u.margin, prereg.confidence, method=m,
                                     n_seeds=n_seeds) for u in v.users]
            criteria = crit.read_criteria(v.users, prereg, method=m, n_seeds=n_seeds)
        codes[k] = [_STATUS_CODE[c.status] for c in criteria]
        low[k], high[k] = [c.low for c in ci], [c.high for c in ci]
    diag = np.full(3, np.nan)
    if v.model is not None and np.isfinite(v.model.diagonal_se):
        truth_d = study.truth.diagonal_effect
        diag[:] = (float(v.model.diagonal_ci.contains(truth_d)), v.model.diagonal_effect, truth_d)
    return {"truth": study.truth.margins, "point": point, "low": low, "high": high,
            "codes": codes, "diag": diag}


def _experiment_rng(rng_seed: int, n_seeds: int, rung: int, index: int) -> np.random.Generator:
    """Independent of how experiments are split across processes."""
    return np.random.default_rng([rng_seed, n_seeds, rung, index])


def _run_chunk(task) -> tuple[int, int, list[dict[str, np.ndarray]]]:
    params, prereg, n_seeds, rung, margin, start, stop, n_fit, B, rng_seed, methods = task
    out = []
    for i in range(start, stop):
        rng = _experiment_rng(rng_seed, n_seeds, rung, i)
        out.append(run_experiment(params, margin, n_seeds, prereg, B, rng, fit=i < n_fit,
                                  methods=methods))
    return n_seeds, rung, out


# ---- aggregation ----------------------------------------------------------------------------

def _relations(prereg: Prereg, ladder: tuple[float, ...]) -> list[tuple[str, str, int]]:
    """(criterion, relation, rung index) for below / at / above each threshold."""
    out = []
    for name, t in thresholds(prereg).items():
        at = int(np.argmin(np.abs(np.asarray(ladder) - t)))
        if at > 0:
            out.append((name, "below", at - 1))
        out.append((name, "at", at))
        if at + 1 < len(ladder):
            out.append((name, "above", at + 1))
    return out


def summarize_design(n_seeds: int, params: SimParams, prereg: Prereg, ladder: tuple[float, ...],
                     per_rung: list[list[dict[str, np.ndarray]]], methods: tuple[str, ...],
                     wall_s: float) -> DesignCalibration:
    """Records of every experiment (grouped by rung) -> DesignCalibration."""
    k_pre = methods.index(prereg.interval_method)
    allrec = [r for rung in per_rung for r in rung]
    truth = np.stack([r["truth"] for r in allrec])                      # (N, J)
    low = np.stack([r["low"] for r in allrec])                          # (N, M, J)
    high = np.stack([r["high"] for r in allrec])
    covered = (low <= truth[:, None]) & (truth[:, None] <= high)        # (N, M, J)
    cov_by_method = tuple((m, float(covered[:, k].mean())) for k, m in enumerate(methods))
    width = tuple((m, float(np.mean(high[:, k] - low[:, k]))) for k, m in enumerate(methods))
    by_margin = []
    for r_i, rung in enumerate(per_rung[:len(ladder)]):
        c = np.stack([(r["low"][k_pre] <= r["truth"]) & (r["truth"] <= r["high"][k_pre]) for r in rung])
        by_margin.append((float(ladder[r_i]), float(c.mean())))
    diag = np.stack([r["diag"] for r in allrec])
    fitted = np.isfinite(diag[:, 0])
    rates = []
    for name, relation, r_i in _relations(prereg, ladder):
        codes = np.stack([r["codes"] for r in per_rung[r_i]])           # (n, M, 3)
        c = CRITERIA.index(name)
        for k, m in enumerate(methods):
            x = codes[:, k, c]
            rates.append(StatusRate(name, relation, float(ladder[r_i]), m, int(x.size),
                                    float(np.mean(x == 0)), float(np.mean(x == 1)),
                                    float(np.mean(x == 2))))
    lf_names = [name for name, _ in least_favourable(prereg, len(params.users))]
    for k_lf, name in enumerate(lf_names):
        codes = np.stack([r["codes"] for r in per_rung[len(ladder) + k_lf]])
        c = CRITERIA.index(name)
        for k, m in enumerate(methods):
            x = codes[:, k, c]
            rates.append(StatusRate(name, "at, least favourable", thresholds(prereg)[name], m,
                                    int(x.size), float(np.mean(x == 0)), float(np.mean(x == 1)),
                                    float(np.mean(x == 2))))
    at = tuple((r.criterion, r.pass_rate) for r in rates
               if r.relation == "at" and r.method == prereg.interval_method)
    lf = tuple((r.criterion, r.pass_rate) for r in rates
               if r.relation == "at, least favourable" and r.method == prereg.interval_method)
    return DesignCalibration(
        seeds=n_seeds, n_users=len(params.users), n_docs=tuple(int(n) for n in params.n_docs),
        n_experiments=len(allrec), n_model_fits=int(fitted.sum()),
        method=prereg.interval_method, level=prereg.confidence,
        margin_coverage=cov_by_method[k_pre][1], margin_coverage_by_method=cov_by_method,
        margin_coverage_by_margin=tuple(by_margin), mean_interval_width=width,
        diagonal_effect_coverage=float(diag[fitted, 0].mean()) if fitted.any() else None,
        pass_rate_at_threshold=at, pass_rate_least_favourable=lf, status_rates=tuple(rates), wall_s=wall_s)


# ---- the driver -----------------------------------------------------------------------------

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
    rng_seed: int = 20260101,
    jobs: int = 1,
    methods: tuple[str, ...] = INTERVAL_METHODS,
    notes: tuple[str, ...] = (),
    progress=None,
) -> CalibrationResult:
    """Simulate `n_experiments` per design (split evenly over the scenarios: the margin ladder,
    every user at one rung, then the least-favourable configurations) and summarize.

    `n_model_fits` experiments per design (spread over the ladder) also fit the mixed model for
    the diagonal-effect coverage. Deterministic given `rng_seed`, whatever `jobs` is.
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
    J = len(params.users)
    scenarios = [np.full(J, m) for m in ladder] + [v for _, v in least_favourable(prereg, J)]
    L = len(scenarios)
    per_rung_n = math.ceil(n_experiments / L)
    fit_per_rung = math.ceil(n_model_fits / L) if n_model_fits else 0
    chunk = max(10, per_rung_n // 8)
    tasks = [(params, prereg, S, r, scenarios[r], a, min(a + chunk, per_rung_n), fit_per_rung,
              n_resamples, rng_seed, methods)
             for S in seeds for r in range(L) for a in range(0, per_rung_n, chunk)]
    t0 = time.perf_counter()
    records: dict[int, list[list]] = {S: [[] for _ in range(L)] for S in seeds}
    if jobs > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(jobs) as pool:  # fork deadlocks with polars threads
            for S, r, out in pool.imap(_run_chunk, tasks):
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
    designs = tuple(summarize_design(S, params, prereg, ladder, records[S], methods,
                                     wall * S / sum(seeds)) for S in seeds)
    return CalibrationResult(designs, ladder, n_resamples, rng_seed, params.to_json(),
                             prereg.to_json(), tuple(notes), wall)


def write_calibration(result: CalibrationResult, out_dir: str | Path) -> Path:
    from common.atomic import atomic_write_text
    return atomic_write_text(Path(out_dir) / "calibration.json",
                             json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")


def read_calibration(path: str | Path) -> CalibrationResult:
    path = Path(path)
    try:
        return CalibrationResult.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a readable calibration.json: {type(e).__name__}: {e}") from None


# ---- the calibration of one run's design, cheaply (for validation.verdict) -------------------

QUICK_EXPERIMENTS = 280     # 40 per scenario: coverage to about +-0.02
QUICK_RESAMPLES = 500


def _design_key(params: SimParams, prereg: Prereg, n_seeds: int, n_experiments: int,
                n_resamples: int, rng_seed: int) -> str:
    import hashlib
    doc = {"params": params.to_json(), "n_seeds": n_seeds, "n_experiments": n_experiments,
           "n_resamples": n_resamples, "rng_seed": rng_seed,
           "expected": None if params.expected is None else np.round(params.expected, 8).tolist(),
           "prereg": {k: v for k, v in prereg.to_json().items() if k not in ("sha256", "path")}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def calibration_for_study(data, prereg: Prereg | None = None, *, run_dir: str | Path | None = None,
                          cache_dir: str | Path | None = None,
                          n_experiments: int = QUICK_EXPERIMENTS, n_resamples: int = QUICK_RESAMPLES,
                          rng_seed: int = 20260101) -> tuple[DesignCalibration | None, tuple[str, ...]]:
    """The calibration of `data`'s own design (seeds, users, documents): (design, warnings).

    In order: `run_dir/calibration.json` when it holds a design with the run's number of seeds
    and users and the pre-registered interval method; then a cache entry keyed by the design,
    the parameters estimated from the run and the settings (`cache_root()/calibration/`, or
    `cache_dir`); else a quick calibration of that one design (`n_experiments` simulated
    experiments with `n_resamples` resamples, no mixed-model fits: about 10-30 s), cached,
    with a warning saying so. (None, warnings) with one seed: nothing to calibrate.
    """
    from common.atomic import atomic_write_text
    prereg = Prereg() if prereg is None else prereg
    S, J = len(data.seeds), len(data.users)
    if S < 2:
        return None, ("calibration skipped: one seed, the seed-level bootstrap cannot be calibrated",)
    if run_dir is not None and (Path(run_dir) / "calibration.json").is_file():
        try:
            res = read_calibration(Path(run_dir) / "calibration.json")
            for d in res.designs:
                if d.seeds == S and d.n_users == J and d.method == prereg.interval_method:
                    return d, ()
        except ValueError as e:
            warn = (f"{e}; ignored",)
        else:
            warn = ()
    else:
        warn = ()
    notes: tuple[str, ...]
    try:
        params, notes = params_from_run(data)
    except ValueError as e:
        params, notes = SimParams().with_design(users=J, n_docs=50), (f"default parameters: {e}",)
    key = _design_key(params, prereg, S, n_experiments, n_resamples, rng_seed)
    if cache_dir is None:
        from common.cache import cache_root  # the cache contract shared by every layer
        cache_dir = cache_root() / "calibration"
    path = Path(cache_dir) / f"{key}.json"
    if path.is_file():
        try:
            return read_calibration(path).design(S), warn
        except (ValueError, KeyError):
            pass
    t0 = time.perf_counter()
    res = calibrate(params, prereg, seeds=(S,), n_experiments=n_experiments,
                    n_resamples=n_resamples, n_model_fits=0, rng_seed=rng_seed, notes=notes)
    try:
        atomic_write_text(path, json.dumps(res.to_json(), indent=2, allow_nan=False) + "\n")
    except OSError:
        pass  # a read-only cache only costs the next run the same seconds
    defaults = [n for n in notes if n.startswith("default parameters")]
    params_from = f"at their defaults ({defaults[0]})" if defaults else "estimated from this run"
    msg = (f"calibration of this design ({S} seeds, {J} users) from a quick simulation: "
           f"{res.designs[0].n_experiments} experiments, {n_resamples} resamples, no model fits "
           f"({time.perf_counter() - t0:.0f} s), parameters {params_from}; coverage is "
           f"known to about +-0.02. For the full figures: python -m validation.calibrate "
           f"--from-run RUN_DIR --seeds {S} --out RUN_DIR")
    return res.designs[0], warn + (msg,)


# ---- the table ------------------------------------------------------------------------------

def format_table(result: CalibrationResult) -> str:
    """A plain-text summary: coverage per design and method, then status rates per criterion."""
    lines = []
    methods = [m for m, _ in result.designs[0].margin_coverage_by_method]
    head = f"{'seeds':>5} {'users':>5} {'docs':>5} {'N':>6}  " + "  ".join(
        f"{'cov ' + m:>22}" for m in methods) + f"  {'diag cov (fits)':>16}"
    lines += [f"Margin-interval coverage (nominal {result.designs[0].level:.0%})", head]
    for d in result.designs:
        covs = dict(d.margin_coverage_by_method)
        widths = dict(d.mean_interval_width)
        diag = "n/a" if d.diagonal_effect_coverage is None else f"{d.diagonal_effect_coverage:.3f} ({d.n_model_fits})"
        lines.append(f"{d.seeds:>5} {d.n_users:>5} {int(np.mean(d.n_docs)):>5} {d.n_experiments:>6}  "
                     + "  ".join(f"{covs[m]:>8.3f} (w {widths[m]:.3f})".rjust(22) for m in methods)
                     + f"  {diag:>16}")
    for m in methods:
        lines += ["", f"Criterion status rates, intervals: {m}  (pass = PASS, or TRIGGERED for catastrophic)",
                  f"{'seeds':>5} {'criterion':>12} {'relation':>21} {'margin':>7} {'pass':>7} {'fail':>7} {'inconcl':>7}"]
        for d in result.designs:
            for r in d.rates(m):
                lines.append(f"{d.seeds:>5} {r.criterion:>12} {r.relation:>21} {r.true_margin:>7.3f} "
                             f"{r.pass_rate:>7.3f} {r.fail_rate:>7.3f} {r.inconclusive_rate:>7.3f}")
    return "\n".join(lines)


# ---- CLI ------------------------------------------------------------------------------------

def _parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"`--seeds` must be comma-separated integers, e.g. 3,5,8,12; got {text!r}") from None
    if not seeds or min(seeds) < 2:
        raise argparse.ArgumentTypeError(f"`--seeds` needs integers >= 2; got {text!r}")
    return seeds


def _positive(name: str, lo: int = 1):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = lo - 1
        if v < lo:
            raise argparse.ArgumentTypeError(f"`{name}` must be an integer >= {lo}; got {text!r}")
        return v
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m validation.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="calibration", help="directory for calibration.json (default ./calibration)")
    p.add_argument("--from-run", metavar="DIR", help="estimate the simulation's parameters and design from a run")
    p.add_argument("--seeds", type=_parse_seeds, default=(3, 5, 8, 12), help="designs: numbers of seeds (default 3,5,8,12)")
    p.add_argument("--experiments", type=_positive("--experiments"), default=1400,
                   help="simulated experiments per design, split over the 7 scenarios (default 1400)")
    p.add_argument("--resamples", type=_positive("--resamples", 10), default=1000,
                   help="bootstrap resamples per experiment (default 1000)")
    p.add_argument("--model-fits", type=_positive("--model-fits", 0), default=100,
                   help="experiments per design that also fit the mixed model (default 100)")
    p.add_argument("--users", type=_positive("--users", 2), default=None, help="users (default 3, or the run's)")
    p.add_argument("--docs", type=_positive("--docs"), default=None, help="documents per user (default 50, or the run's)")
    p.add_argument("--prereg", default=None, help="pre-registration file (default prereg.toml if present)")
    p.add_argument("--rng-seed", type=int, default=20260101, help="seed of every simulation (default 20260101)")
    p.add_argument("--jobs", type=_positive("--jobs"), default=min(2, os.cpu_count() or 1),
                   help="worker processes (default 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prereg_path = args.prereg or ("prereg.toml" if Path("prereg.toml").is_file() else None)
        prereg = load_prereg(prereg_path) if prereg_path else Prereg()
        notes: tuple[str, ...] = ()
        if args.from_run:
            if args.users or args.docs:
                raise ValueError("`--users`/`--docs` cannot be combined with `--from-run` (the run fixes them).")
            params, notes = params_from_run(args.from_run)
        else:
            params = SimParams().with_design(users=args.users, n_docs=args.docs)
    except (ValueError, PreregError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"calibrating {len(args.seeds)} design(s) x {args.experiments} experiments, "
          f"B={args.resamples}, {args.jobs} process(es); parameters: {params.source}", file=sys.stderr)
    result = calibrate(params, prereg, seeds=args.seeds, n_experiments=args.experiments,
                       n_resamples=args.resamples, n_model_fits=args.model_fits,
                       rng_seed=args.rng_seed, jobs=args.jobs, notes=notes)
    path = write_calibration(result, args.out)
    print(format_table(result))
    print(f"\nwrote {path} in {result.wall_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
