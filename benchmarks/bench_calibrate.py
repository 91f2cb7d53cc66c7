"""Cost of one simulated experiment of `validation.calibrate`, by part (2-core machine figures in
the calibrate docstring). Run: `python benchmarks/bench_calibrate.py [--seeds 5] [--repeat 30]`."""

from __future__ import annotations

import argparse
import time

import numpy as np

from validation import Prereg, judge
from validation.simulation.simulate import SimParams, simulate_experiment


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()
    params, prereg = SimParams(), Prereg(interval_method="student-t")
    t = {"simulate": 0.0, "judge (no fit)": 0.0, "mixed-model fit": 0.0}
    for k in range(args.repeat):
        rng = np.random.default_rng(k)
        t0 = time.perf_counter()
        study = simulate_experiment(params, 0.1, args.seeds, rng)
        t1 = time.perf_counter()
        judge(study.data, prereg, rng=rng, n_resamples=args.resamples, fit=False)
        t2 = time.perf_counter()
        if k < 5:
            judge(study.data, prereg, rng=rng, n_resamples=args.resamples, fit=True)
            t["mixed-model fit"] += (time.perf_counter() - t2) - (t2 - t1)
        t["simulate"] += t1 - t0
        t["judge (no fit)"] += t2 - t1
    for name, total in t.items():
        n = 5 if name == "mixed-model fit" else args.repeat
        print(f"{name:>16}: {1000 * total / n:7.1f} ms per experiment")


if __name__ == "__main__":
    main()
