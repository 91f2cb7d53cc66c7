"""Issue 13's target: a step-count sweep costs one training of the largest count plus one evaluation
per count, not one grid per count.

    python benchmarks/bench_steps.py [--steps 25,50,100,200,400] [--seeds 5] [--fixtures 3]
                                     [--preset cpu] [--fixture-set classics] [--no-loo] [--threads N]

Runs, as subprocesses, each into a fresh temporary `--out` (nothing resumed), on the same machine
in the same run: `python -m runners.grid --steps <the list>` once, then `python -m runners.grid
--steps <k>` for every k of the list, and prints both wall times and their ratio, with each run's
training and evaluation seconds from its manifest. The base model must already be cached (it is
built, untimed, first if not). The CPU load average is printed before and after: on a busy
machine the absolute seconds mean little, the ratio (measured under the same load) is the figure.
A prereg.toml naming the list's largest count as `[steps] primary` is written into the temporary
folder (the runner refuses a list without the primary).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runners.base_model import PRETRAIN_PRESETS, load_or_pretrain  # noqa: E402
from runners.model import PRESETS  # noqa: E402
from runners.settings import load_fixtures, parse_steps  # noqa: E402


def grid(steps: str, args, prereg: Path) -> dict:
    """One `python -m runners.grid` subprocess: wall seconds and the manifest's timings."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "runners.grid", "--steps", steps, "--seeds", str(args.seeds),
               "--fixtures", str(args.fixtures), "--fixture-set", args.fixture_set, "--preset", args.preset,
               "--out", out, "--prereg", str(prereg), "-q"] + (["--no-loo"] if args.no_loo else [])
        env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)
        wall = time.perf_counter() - t0
        timings = json.loads((Path(out) / "latest" / "manifest.json").read_text())["timings"]
    seeds = timings["seeds"]
    return {"wall_s": wall, "train_s": sum(s["train_s"] for s in seeds), "eval_s": sum(s["eval_s"] for s in seeds)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="25,50,100,200,400")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--fixtures", type=int, default=3)
    p.add_argument("--preset", default="cpu", choices=list(PRESETS))
    p.add_argument("--fixture-set", default="classics")
    p.add_argument("--no-loo", action="store_true", help="pass --no-loo to every grid")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for every grid (default: unset, every core); 1 on a busy machine")
    args = p.parse_args(argv)
    counts = parse_steps(args.steps)
    fs = load_fixtures(args.fixture_set, args.fixtures, {})
    load_or_pretrain(PRESETS[args.preset], PRETRAIN_PRESETS[args.preset], fs.pretrain, fs.pretrain_sha256())
    with tempfile.TemporaryDirectory() as tmp:
        prereg = Path(tmp) / "prereg.toml"
        prereg.write_text(f"[steps]\nprimary = {counts[-1]}\n")
        print(f"load average before: {os.getloadavg()}")
        print(f"grid: --preset {args.preset} --fixture-set {args.fixture_set} --seeds {args.seeds} --fixtures "
              f"{args.fixtures}{' --no-loo' if args.no_loo else ''}; host cpu_count {os.cpu_count()}, "
              f"threads {args.threads or 'all'}")
        sweep = grid(args.steps, args, prereg)
        print(f"one sweep --steps {args.steps}: {sweep['wall_s']:.1f} s wall (training {sweep['train_s']:.1f} s, "
              f"evaluation {sweep['eval_s']:.1f} s, summed over seeds)")
        separate = []
        for k in counts:
            separate.append(grid(str(k), args, prereg))
            r = separate[-1]
            print(f"  separate --steps {k}: {r['wall_s']:.1f} s wall (training {r['train_s']:.1f} s, "
                  f"evaluation {r['eval_s']:.1f} s)")
        total = sum(r["wall_s"] for r in separate)
        print(f"{len(counts)} separate grids: {total:.1f} s wall (training {sum(r['train_s'] for r in separate):.1f} s,"
              f" evaluation {sum(r['eval_s'] for r in separate):.1f} s)")
        print(f"sweep / separate grids: {sweep['wall_s'] / total:.2f} (the sweep takes {sweep['wall_s'] / total:.0%} "
              f"of the time; training alone {sweep['train_s'] / sum(r['train_s'] for r in separate):.2f}, the "
              f"largest count's share of all counts' steps is {counts[-1] / sum(counts):.2f})")
        print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
