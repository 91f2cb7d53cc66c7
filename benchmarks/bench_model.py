"""Benchmark of the mixed model (`validation.stats.mixed_model.fit_model`): profiled REML against statsmodels.

    PYTHONPATH=. python benchmarks/bench_model.py [--users 3 12 24 50] [--seeds 3]
        [--old-max-users 50] [--threads-max-users 24]

For each number of users N, a simulated study (`simulate_study`, seed 20260101, `--seeds` seeds,
cells only) is fitted with both engines in the same run: the default, exact profiled REML
(`engine="profiled-reml"`, `validation.stats.reml`), and statsmodels' MixedLM with its optimizer
fallbacks (`engine="mixedlm"`, the former default), with OpenBLAS on one thread as `fit_best`
now runs it, and (`mixedlm nthr`) with OpenBLAS's default threads as it ran before: on a loaded
machine its threads, waking for every small matrix, cost minutes at 50 users. Each fit is the
overall model plus the per-user model. MixedLM is timed only up to `--old-max-users` users and
with default threads only up to `--threads-max-users` (larger N: "not run"). Prints each time,
the ratio to the profiled fit measured in the same run, and the difference of the diagonal effect
(absolute) and of its SE (relative) between the engines, with the machine load beside (timings
on a shared machine mean little without it). A first small fit with each engine, untimed, takes the
imports and first-call costs out of the timings.

`--steps 25,50,100,200,400` times the training-step interaction model instead
(`validation.stats.mixed_model.fit_steps_model`: three nested random intercepts, seed / seed:adapter /
seed:adapter:steps) on a simulated sweep (`simulate_steps`, 12 documents per user, a planted slope
of 1 pp per doubling), both engines, MixedLM up to `--old-max-users` users; prints the times, their
ratio and the difference of the interaction and its SE between the engines.

Run from the repository root with `PYTHONPATH=.` (or an editable install of this checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import numpy as np

import validation.stats.mixed_model as model
from validation.inputs.arrays import build_arrays
from validation.simulation.simulate import simulate_study
from validation.stats.mixed_model import fit_model


def _timed(arrays, engine: str, blas_threads: bool = False):
    """Seconds and fit; `blas_threads`: MixedLM with OpenBLAS's default threads, as before
    `fit_best` limited them to one."""
    limiter = model.single_thread_blas
    if blas_threads:
        model.single_thread_blas = contextlib.nullcontext
    try:
        t = time.perf_counter()
        m = fit_model(arrays, engine=engine)
        return time.perf_counter() - t, m
    finally:
        model.single_thread_blas = limiter


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, nargs="+", default=[3, 12, 24, 50])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--old-max-users", type=int, default=50,
                    help="time statsmodels' MixedLM (one BLAS thread) only up to this many users")
    ap.add_argument("--threads-max-users", type=int, default=24,
                    help="time MixedLM with OpenBLAS's default threads (the former path) only up to this")
    ap.add_argument("--steps", default=None,
                    help="time the step-interaction model on a sweep of these counts, e.g. 25,50,100,200,400")
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.seeds} seeds")
    if args.steps:
        return _steps(args, tuple(int(k) for k in args.steps.split(",")))
    warm = build_arrays(simulate_study(np.random.default_rng(0), n_seeds=2, n_docs=5, with_docs=False))
    for engine in ("profiled-reml", "mixedlm"):   # imports and first calls, outside the timings
        fit_model(warm, engine=engine)
    print(f"{'users':>5} {'cells':>6} {'profiled s':>10} {'mixedlm s':>10} {'ratio':>7} "
          f"{'|d diag|':>9} {'d se rel':>9} {'optimizer':>9} {'mixedlm nthr s':>14} {'ratio':>7}")
    for n in args.users:
        users = tuple(f"u{k:02d}" for k in range(n))
        data = simulate_study(np.random.default_rng(20260101), n_seeds=args.seeds, users=users,
                              n_docs=5, with_docs=False)
        arrays = build_arrays(data)
        cells = int(np.isfinite(arrays.logppl[:, :n, :]).sum())
        t_new, new = _timed(arrays, "profiled-reml")
        if n <= args.old_max_users:
            t_old, old = _timed(arrays, "mixedlm")
            d_eff = abs(new.diagonal_effect - old.diagonal_effect)
            d_se = abs(new.diagonal_se / old.diagonal_se - 1)
            line = (f"{n:>5} {cells:>6} {t_new:>10.2f} {t_old:>10.2f} {t_old / t_new:>7.1f} "
                    f"{d_eff:>9.1e} {d_se:>9.1e} {old.optimizer:>9}")
        else:
            line = f"{n:>5} {cells:>6} {t_new:>10.2f} {'not run':>10} {'':>7} {'':>9} {'':>9} {'':>9}"
        if n <= args.threads_max_users:
            t_thr, _ = _timed(arrays, "mixedlm", blas_threads=True)
            line += f" {t_thr:>14.2f} {t_thr / t_new:>7.1f}"
        else:
            line += f" {'not run':>14}"
        print(line)
        assert new.optimizer == "profiled-reml", new.fallback


def _steps(args, counts: tuple[int, ...]) -> None:
    from validation.exploratory.steps import split_by_steps
    from validation.simulation.simulate import SimParams
    from validation.simulation.steps import simulate_steps
    from validation.stats.mixed_model import fit_steps_model

    def sweep(n: int):
        users = tuple(f"u{k:02d}" for k in range(n))
        st = simulate_steps(SimParams(users=users, n_docs=(12,) * n), 0.1, counts, args.seeds,
                            np.random.default_rng(20260101), slopes=0.01)
        return [(k, build_arrays(d)) for k, d in split_by_steps(st.data.cells, st.data.docs, "bench")]

    warm = sweep(3)
    for engine in ("profiled-reml", "mixedlm"):
        fit_steps_model(warm, engine=engine)
    print(f"step model, counts {list(counts)}")
    print(f"{'users':>5} {'cells':>6} {'profiled s':>10} {'mixedlm s':>10} {'ratio':>7} {'|d inter|':>9} "
          f"{'d se rel':>9} {'optimizer':>9}")
    for n in args.users:
        per = sweep(n)
        cells = sum(int(np.isfinite(a.logppl[:, :n, :]).sum()) for _, a in per)
        t = time.perf_counter()
        new = fit_steps_model(per)
        t_new = time.perf_counter() - t
        assert new.optimizer == "profiled-reml", new.warnings
        if n <= args.old_max_users:
            t = time.perf_counter()
            old = fit_steps_model(per, engine="mixedlm")
            t_old = time.perf_counter() - t
            print(f"{n:>5} {cells:>6} {t_new:>10.2f} {t_old:>10.2f} {t_old / t_new:>7.1f} "
                  f"{abs(new.interaction - old.interaction):>9.1e} "
                  f"{abs(new.interaction_se / old.interaction_se - 1):>9.1e} {old.optimizer:>9}")
        else:
            print(f"{n:>5} {cells:>6} {t_new:>10.2f} {'not run':>10}")


if __name__ == "__main__":
    main()
