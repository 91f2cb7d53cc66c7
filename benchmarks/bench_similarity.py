"""Benchmark of the domain-similarity structure (`validation.exploratory.similarity.similarity_for_verdict`).

    python -m benchmarks.bench_similarity [--resamples 10000] [--repeats 3]

For 3 and 6 users (5 seeds, 50 documents per user): prints the median wall time of
`similarity_for_verdict` (it regenerates the verdict's bootstrap draws and clusters every
resample) beside that of `validation.judge` without the model fit, and the machine load.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from validation import judge
from validation.exploratory.similarity import similarity_for_verdict
from validation.simulation.simulate import simulate_study


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resamples", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.resamples} resamples")
    for n_users in (3, 6):
        users = tuple(f"user{k}" for k in range(n_users))
        groups = None if n_users == 3 else (0, 0, 0, 1, 1, 1)
        data = simulate_study(np.random.default_rng(0), users=users, groups=groups, n_docs=50)
        t_judge, t_sim = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            v = judge(data, rng=np.random.default_rng(r), n_resamples=args.resamples, fit=False)
            t1 = time.perf_counter()
            similarity_for_verdict(v, data)
            t_judge.append(t1 - t0)
            t_sim.append(time.perf_counter() - t1)
        print(f"{n_users} users: judge (no model fit) median {np.median(t_judge):.2f} s; "
              f"similarity_for_verdict median {np.median(t_sim):.2f} s")


if __name__ == "__main__":
    main()
