"""Benchmark of the verdict's quick calibration (what `python -m validation.verdict` runs when no
calibration of the run's design is in the run directory or the cache).

    python benchmarks/bench_quick_calibration.py [--run DIR] [--seeds 5] [--docs 50] [--repeats 3]

Times `validation.calibrate.calibration_for_study` with an empty cache each time (280 simulated
experiments, 500 resamples, no model fits) on a simulated study of the default design (5 seeds
x 3 users x 50 held-out documents, or `--seeds`/`--docs`), or on a real run with `--run`, and
prints each time, the median and the machine load beside it (the figure quoted by `--help`,
docs/verdict.md and docs/methods.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from validation.calibrate import calibration_for_study
from validation.simulation.simulate import simulate_study


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", metavar="DIR", help="time the calibration of this run's design")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--docs", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.run:
        from validation.inputs.load import load_run, resolve_run
        data = load_run(resolve_run(args.run, "runs"))
        what = f"run {args.run}"
    else:
        data = simulate_study(np.random.default_rng(0), n_seeds=args.seeds, n_docs=args.docs)
        what = f"simulated study, {args.seeds} seeds x 3 users x {args.docs} documents"
    print(f"quick calibration of the design of: {what}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    times = []
    for k in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            design, _ = calibration_for_study(data, cache_dir=cache)
            times.append(time.perf_counter() - t0)
        print(f"  repeat {k + 1}: {times[-1]:.1f} s ({design.n_experiments} experiments, "
              f"{design.seeds} seeds)")
    print(f"median {statistics.median(times):.1f} s, min {min(times):.1f} s, max {max(times):.1f} s; "
          f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
