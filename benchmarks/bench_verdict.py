"""Benchmark of the verdict: 5 seeds x 5 adapter rows x 3 users x 50 documents, 10,000 resamples.

    python benchmarks/bench_verdict.py [--resamples 10000] [--loop-resamples 200] [--repeats 3]

Prints the wall time of `validation.judge` (bootstrap + intervals + criteria + both mixed-model
fits; target <= 10 s), and the speed-up of the vectorized bootstrap over a plain per-resample
Python loop doing the same work (the loop is timed on `--loop-resamples` resamples and scaled
linearly to `--resamples`). The machine load is printed beside, since timings on a shared
machine mean little without it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from validation import judge
from validation.inputs.arrays import build_arrays
from validation.simulation.simulate import simulate_study
from validation.stats.bootstrap import resample_logppl


def plain_loop_bootstrap(arrays, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The same hierarchical bootstrap and statistics, one resample and one cell at a time.

    Returns (n_resamples, 5, J): margin, worst-other margin, personalization, regularization, total.
    """
    S, A, J = arrays.logppl.shape
    pooled, base = arrays.pooled, arrays.base
    out = np.empty((n_resamples, 5, J))
    for b in range(n_resamples):
        seeds = rng.integers(S, size=S)
        mean = np.empty((A, J))
        for j in range(J):
            nll, tok = arrays.doc_nll[j], arrays.doc_tok[j]
            docs = rng.integers(nll.shape[0], size=nll.shape[0])
            for a in range(A):
                total = 0.0
                for s in seeds:
                    total += nll[docs, s, a].sum() / tok[docs, s, a].sum()
                mean[a, j] = total / S
        for j in range(J):
            others = [mean[i, j] for i in range(J) if i != j]
            own = mean[j, j]
            out[b, 0, j] = 1 - np.exp(own - min(others))
            out[b, 1, j] = 1 - np.exp(own - max(others))
            out[b, 2, j] = 1 - np.exp(own - mean[pooled, j])
            out[b, 3, j] = 1 - np.exp(mean[pooled, j] - mean[base, j])
            out[b, 4, j] = 1 - np.exp(own - mean[base, j])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resamples", type=int, default=10_000)
    p.add_argument("--loop-resamples", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    load_before = os.getloadavg()
    data = simulate_study(np.random.default_rng(0), n_seeds=5, n_docs=50)
    print(f"host: {platform.node()}  cpus: {os.cpu_count()}  python {platform.python_version()}")
    print(f"load average before (1/5/15 min): {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print(f"study: 5 seeds x 5 adapter rows (3 users + base + pooled) x 3 users x 50 documents; "
          f"{args.resamples} resamples")

    totals, boots = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        v = judge(data, rng=np.random.default_rng(r), n_resamples=args.resamples, fit=True)
        totals.append(time.perf_counter() - t0)
        arrays = build_arrays(data)
        t0 = time.perf_counter()
        resample_logppl(arrays, args.resamples, np.random.default_rng(r))
        boots.append(time.perf_counter() - t0)
    assert v.model is not None and v.bootstrap.n_resamples == args.resamples
    t_total, t_boot = float(np.median(totals)), float(np.median(boots))
    print(f"judge(), model fit included: median {t_total:.2f} s over {args.repeats} runs "
          f"(min {min(totals):.2f} s, max {max(totals):.2f} s); target <= 10 s: "
          f"{'OK' if t_total <= 10 else 'MISSED'}")
    print(f"  of which the vectorized bootstrap (resampled log ppl): median {t_boot:.3f} s")

    arrays = build_arrays(data)
    t0 = time.perf_counter()
    plain_loop_bootstrap(arrays, args.loop_resamples, np.random.default_rng(0))
    t_loop = (time.perf_counter() - t0) * args.resamples / args.loop_resamples
    print(f"plain per-resample Python loop: {t_loop:.1f} s for {args.resamples} resamples "
          f"(timed on {args.loop_resamples}, scaled linearly)")
    print(f"speed-up of the vectorized bootstrap over the loop: {t_loop / t_boot:.0f}x; "
          f"of the whole judge() (model fit included) over the loop alone: {t_loop / t_total:.1f}x")
    load_after = os.getloadavg()
    print(f"load average after (1/5/15 min): {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
