"""The calibration of one run's own design, cheaply, for `validation.verdict`.

`calibration_for_study` reads it from the run's `calibration.json`, else from a cache keyed by
the design and the parameters estimated from the run (`validation.simulation.from_run`), else runs
a quick `validation.calibration.run.calibrate` of that one design and caches it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.contract import DEFAULT_RNG_SEED
from validation.calibration.plan import scenarios
from validation.calibration.results import DesignCalibration, calibration_text, read_calibration
from validation.calibration.run import calibrate
from validation.contract.prereg import Prereg
from validation.simulation.from_run import params_from_run
from validation.simulation.simulate import SimParams

QUICK_EXPERIMENTS = 280     # 40 per scenario: coverage to about +-0.02
QUICK_RESAMPLES = 500


def _design_key(params: SimParams, prereg: Prereg, n_seeds: int, n_experiments: int,
                n_resamples: int, rng_seed: int) -> str:
    doc = {"params": params.to_json(), "n_seeds": n_seeds, "n_experiments": n_experiments,
           "n_resamples": n_resamples, "rng_seed": rng_seed,
           "expected": None if params.expected is None else np.round(params.expected, 8).tolist(),
           "prereg": prereg.settings()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def calibration_for_study(data, prereg: Prereg | None = None, *, run_dir: str | Path | None = None,
                          cache_dir: str | Path | None = None,
                          n_experiments: int = QUICK_EXPERIMENTS, n_resamples: int = QUICK_RESAMPLES,
                          rng_seed: int = DEFAULT_RNG_SEED,
                          progress: Callable[[int, int], None] | None = None,
                          regime: str | None = None,
                          ) -> tuple[DesignCalibration | None, tuple[str, ...]]:
    """The calibration of `data`'s own design (seeds, users, documents): (design, warnings).

    In order: `run_dir/calibration.json` when it holds a design with the run's number of seeds
    and users and the pre-registered interval method (with `regime`, the study's regime label
    from `validation.stats.intervals.study_regime`, only a design simulated from this run's own
    parameters or in that regime, the one nearest the run's documents per user: a file of
    regime designs never lends the study another regime's figures); then a cache entry keyed by the design,
    the parameters estimated from the run and the settings (`cache_root()/calibration/`, or
    `cache_dir`); else a quick calibration of that one design (`n_experiments` simulated
    experiments with `n_resamples` resamples, no mixed-model fits: 5-15 s for a 3-user design,
    see benchmarks/bench_quick_calibration.py), cached. A quick calibration carries the same
    warning whether it was computed now or read from the cache (its figures are the same), with
    the seconds it took when computed. `progress(done, total)` is called as simulated
    experiments finish (only when one is computed). (None, warnings) with one seed.
    """
    from common.atomic import atomic_write_text
    prereg = Prereg() if prereg is None else prereg
    S, J = len(data.seeds), len(data.users)
    if S < 2:
        return None, ("calibration skipped: one seed, the seed-level bootstrap cannot be calibrated",)
    if run_dir is not None and (Path(run_dir) / "calibration.json").is_file():
        try:
            res = read_calibration(Path(run_dir) / "calibration.json")
            d = _run_file_design(res.designs, S, J, prereg.interval_method, regime, data)
            if d is not None:
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
    defaults = [n for n in notes if n.startswith("default parameters")]
    params_from = f"at their defaults ({defaults[0]})" if defaults else "estimated from this run"
    if path.is_file():
        try:
            design = read_calibration(path).design(S)
            return design, warn + (quick_calibration_note(design, n_resamples, params_from),)
        except (ValueError, KeyError):
            pass
    callback = None
    if progress is not None:
        total = math.ceil(n_experiments / len(scenarios(prereg, J))) * len(scenarios(prereg, J))
        done = 0

        def callback(_seeds: int, _rung: int, n: int) -> None:
            nonlocal done
            done += n
            progress(min(done, total), total)
    res = calibrate(params, prereg, seeds=(S,), n_experiments=n_experiments,
                    n_resamples=n_resamples, n_model_fits=0, rng_seed=rng_seed, notes=notes,
                    progress=callback)
    try:
        atomic_write_text(path, calibration_text(res))
    except OSError:
        pass  # a read-only cache only costs the next run the same seconds
    return res.designs[0], warn + (quick_calibration_note(res.designs[0], n_resamples, params_from),)


def _run_file_design(designs, S: int, J: int, method: str, regime: str | None, data) -> DesignCalibration | None:
    """The design of a run's calibration.json that calibrates this study (see
    `calibration_for_study`), or None."""
    fits = [d for d in designs if d.seeds == S and d.n_users == J and d.method == method]
    if regime is None:
        return fits[0] if fits else None
    fits = [d for d in fits if d.regime in ("run", "", regime)]
    if not fits:
        return None
    docs = data.docs
    n = (docs.select("eval", "doc_id").unique().height / J) if docs is not None else 0
    return min(fits, key=lambda d: (d.regime not in ("run", ""), abs(d.docs - n)))


def quick_calibration_note(design: DesignCalibration, n_resamples: int, params_from: str) -> str:
    """The warning attached to a quick calibration, identical whether it was just computed or
    read from the cache: the figures and the seconds it took when computed are both stored."""
    return (f"calibration of this design ({design.seeds} seeds, {design.n_users} users) from a "
            f"quick simulation: {design.n_experiments} experiments, {n_resamples} resamples, no "
            f"model fits (computed in {design.wall_s:.0f} s, then cached), parameters {params_from}; "
            f"coverage is known to about +-0.02. For the full figures: python -m validation.calibrate "
            f"--from-run RUN_DIR --seeds {design.seeds} --out RUN_DIR")
