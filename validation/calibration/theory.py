"""The t-type interval methods in the two-component normal model: coverage as a function of the
true seed share, in seconds, without simulating studies.

`python -m validation.calibration.theory [--replicates R] [--rng-seed S] [--level 0.95]`

The model behind `satterthwaite`, `cochran-cox` and `share-blend` (`validation.stats.intervals`): the
estimate's error is N(0, v_s + v_d); the seed part is estimated on S - 1 degrees of freedom,
v_s_hat ~ v_s chi2(S - 1) / (S - 1), the document part independently on n - 1,
v_d_hat ~ v_d chi2(n - 1) / (n - 1); each method builds its critical value from the estimated
share w_hat = v_s_hat / (v_s_hat + v_d_hat) and the plug-in Welch-Satterthwaite df
(`validation.stats.intervals.critical_value`, the very function the verdict uses), and the interval is
+- critical value x sqrt(v_s_hat + v_d_hat). Coverage is the share of replicates whose interval
holds 0. What this leaves out, `validation.calibrate` measures: the bootstrap, the margins'
nonlinearity, token-weighted documents.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from common.contract import DEFAULT_RNG_SEED
from validation.stats.intervals import CRITICAL_VALUE_METHODS, critical_value

SHARES = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 21))


@dataclass(frozen=True)
class TheoryPoint:
    """Coverage of one method at one (seeds, documents, true seed share)."""

    method: str
    seeds: int
    docs: int
    share: float
    coverage: float
    replicates: int


def two_component_coverage(method: str, seeds: int, docs: int, share: float, replicates: int,
                           rng: np.random.Generator, level: float = 0.95) -> TheoryPoint:
    """Coverage of `method` at a true seed share `share` (module doc); deterministic given `rng`."""
    if not (0.0 <= share <= 1.0):
        raise ValueError(f"`share` must be in [0, 1]; got {share!r}.")
    if seeds < 2 or docs < 2 or replicates < 1:
        raise ValueError(f"need seeds >= 2, docs >= 2, replicates >= 1; got {seeds}, {docs}, {replicates}.")
    z = rng.normal(size=replicates)
    vs = share * rng.chisquare(seeds - 1, replicates) / (seeds - 1)
    vd = (1.0 - share) * rng.chisquare(docs - 1, replicates) / (docs - 1)
    total = vs + vd
    w = vs / total
    df = total ** 2 / (vs ** 2 / (seeds - 1) + vd ** 2 / (docs - 1))
    crit = critical_value(method, w, df, seeds, docs, 1.0 - level)
    return TheoryPoint(method, seeds, docs, share, float(np.mean(np.abs(z) <= crit * np.sqrt(total))), replicates)


def theory_grid(seeds=(3, 5, 8, 12), docs=(20, 50, 200), shares=SHARES, replicates: int = 100_000,
                rng_seed: int = DEFAULT_RNG_SEED, level: float = 0.95,
                methods=CRITICAL_VALUE_METHODS) -> list[TheoryPoint]:
    """Every method x design x share; the same replicates (common random numbers) for every
    method at one (seeds, docs, share)."""
    out = []
    for k, (S, n, sh) in enumerate((S, n, sh) for S in seeds for n in docs for sh in shares):
        for m in methods:
            out.append(two_component_coverage(m, S, n, sh, replicates, np.random.default_rng([rng_seed, k]), level))
    return out


def format_theory(points: list[TheoryPoint]) -> str:
    methods = list(dict.fromkeys(p.method for p in points))
    designs = list(dict.fromkeys((p.seeds, p.docs) for p in points))
    head = f"{'seeds':>5} {'docs':>5}  " + "  ".join(f"{m + ' min-max (worst share)':>40}" for m in methods)
    lines = ["Coverage over true seed shares " + ", ".join(f"{s:g}" for s in sorted({p.share for p in points}))
             + f" ({points[0].replicates} replicates each)", head]
    for S, n in designs:
        cells = []
        for m in methods:
            pts = [p for p in points if p.method == m and (p.seeds, p.docs) == (S, n)]
            lo, hi = min(pts, key=lambda p: p.coverage), max(pts, key=lambda p: p.coverage)
            cell = f"{lo.coverage:.3f}-{hi.coverage:.3f} (low at {lo.share:.2f}, high at {hi.share:.2f})"
            cells.append(cell.rjust(40))
        lines.append(f"{S:>5} {n:>5}  " + "  ".join(cells))
    every = {m: [p.coverage for p in points if p.method == m] for m in methods}
    lines.append("all designs: " + ", ".join(f"{m} {min(c):.3f}-{max(c):.3f}" for m, c in every.items()))
    se = float(np.sqrt(0.95 * 0.05 / points[0].replicates))
    lines.append(f"(Monte Carlo SE of each figure about {se:.4f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m validation.calibration.theory", description=__doc__.split("\n\n")[0])
    p.add_argument("--replicates", type=int, default=100_000, help="replicates per point (default 100000)")
    p.add_argument("--rng-seed", type=int, default=DEFAULT_RNG_SEED)
    p.add_argument("--level", type=float, default=0.95)
    p.add_argument("--seeds", default="3,5,8,12", help="comma-separated seed counts, each >= 2 (default 3,5,8,12)")
    args = p.parse_args(argv)
    if args.replicates < 1 or not (0 < args.level < 1):
        print("error: `--replicates` must be >= 1 and `--level` in (0, 1)", file=sys.stderr)
        return 2
    try:
        seeds = tuple(int(x) for x in args.seeds.split(","))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 2:
        print(f"error: `--seeds` must be comma-separated integers >= 2 (e.g. 2,3,5); got {args.seeds!r}",
              file=sys.stderr)
        return 2
    print(format_theory(theory_grid(seeds=seeds, replicates=args.replicates, rng_seed=args.rng_seed,
                                    level=args.level)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
