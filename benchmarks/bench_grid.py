"""The issue's targets: grid wall time, pretraining time, batched speed-up, max difference, MFU.

    python benchmarks/bench_grid.py [--fixture-set classics] [--preset cpu] [--seeds 5] [--fixtures 3]
                                    [--fresh-pretrain]

1. Base-model pretraining time: with `--fresh-pretrain`, pretrains into a temporary cache and
   times it; otherwise ensures the base is cached (timing it if it had to be built) and quotes the
   time recorded in the cache entry.
2. Wall time of `python -m runners.grid --seeds 5 --fixtures 3` on the defaults, base cached,
   into a fresh temporary `--out` (nothing resumed), as a subprocess: what a user waits for.
3. Batched vs one-at-a-time adapter training, max abs difference, MFU (benchmarks/bench_training.py).
4. What the leave-one-out controls `loo:<user>` add: one seed trained and scored in process with
   and without them (`--no-loo`), the difference per seed and times the seeds (`--loo-only` runs
   just this part; `--loo-seeds K` repeats it on K seeds and takes the median).
The CPU load average is printed before and after: the figures are only comparable on a quiet machine.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_training import host_and_peak, load_state, report  # noqa: E402

from runners.base_model import PRETRAIN_PRESETS, load_or_pretrain  # noqa: E402
from runners.model import PRESETS  # noqa: E402
from runners.train import TrainConfig  # noqa: E402


def pretrain_seconds(fs, preset: str, fresh: bool) -> tuple[float, str]:
    if fresh:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            load_or_pretrain(PRESETS[preset], PRETRAIN_PRESETS[preset], fs.pretrain, fs.pretrain_sha256(),
                             cache_dir=Path(tmp))
            return time.perf_counter() - t0, "measured now (fresh cache)"
    base = load_or_pretrain(PRESETS[preset], PRETRAIN_PRESETS[preset], fs.pretrain, fs.pretrain_sha256())
    how = "measured now (was not cached)" if base.built_now else f"recorded in the cache entry {base.path}"
    return base.pretrain_seconds, how


def grid_wall(args, prereg: Path) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "runners.grid", "--seeds", str(args.seeds), "--fixtures", str(args.fixtures),
               "--fixture-set", args.fixture_set, "--preset", args.preset, "--out", out, "--prereg", str(prereg), "-q"]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        manifest = json.loads((Path(out) / "latest" / "manifest.json").read_text())
    return wall, manifest


def loo_cost(fs, base, device: str = "cpu", seeds: int = 1) -> dict:
    """Median seconds of one seed (train + score) with and without the loo controls, on `base`."""
    import numpy as np

    from runners.execution.execute import prepare, train_and_score

    out = {}
    for loo in (False, True):
        t0 = time.perf_counter()
        prep = prepare(base.model, fs, device, loo=loo)
        prep_s = time.perf_counter() - t0
        runs = [train_and_score(k, base.model, prep, TrainConfig(), device) for k in range(seeds)]
        out[loo] = {"adapters": len(prep.names), "prepare_s": prep_s,
                    "train_s": float(np.median([r.train_s for r in runs])),
                    "eval_s": float(np.median([r.eval_s for r in runs]))}
    return out


def print_loo_cost(fs, base, n_seeds: int, loo_seeds: int) -> None:
    c = loo_cost(fs, base, seeds=loo_seeds)
    off, on = c[False], c[True]
    per_seed = (on["train_s"] + on["eval_s"]) - (off["train_s"] + off["eval_s"])
    print(f"leave-one-out controls ({on['adapters'] - off['adapters']} more adapters, {on['adapters']} in the batched "
          f"loop instead of {off['adapters']}), one seed, median of {loo_seeds}: train {off['train_s']:.1f} -> "
          f"{on['train_s']:.1f} s, eval {off['eval_s']:.1f} -> {on['eval_s']:.1f} s; adds {per_seed:.1f} s per seed, "
          f"{per_seed * n_seeds:.0f} s to a {n_seeds}-seed grid (`--no-loo` turns them off)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixture-set", default="classics")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--fixtures", type=int, default=3)
    p.add_argument("--fresh-pretrain", action="store_true")
    p.add_argument("--loo-only", action="store_true", help="measure only what the loo controls add")
    p.add_argument("--loo-seeds", type=int, default=1, help="seeds timed for the loo cost (median)")
    args = p.parse_args(argv)
    fs, base, streams = load_state(args.fixture_set, args.fixtures, args.preset)
    if args.loo_only:
        print(f"load average before: {os.getloadavg()}")
        print_loo_cost(fs, base, args.seeds, args.loo_seeds)
        print(f"load average after: {os.getloadavg()}")
        return 0
    peak = host_and_peak()
    seconds, how = pretrain_seconds(fs, args.preset, args.fresh_pretrain)
    print(f"pretraining the base ({args.preset}, {PRETRAIN_PRESETS[args.preset].steps} steps): {seconds:.0f} s, {how} "
          f"(target <= 600 s)")
    prereg = ROOT / "prereg.toml"
    tmp_prereg = None
    if not prereg.exists():
        tmp_prereg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        tmp_prereg.write("# benchmark placeholder\n"), tmp_prereg.close()
        prereg = Path(tmp_prereg.name)
    wall, manifest = grid_wall(args, prereg)
    t = manifest["timings"]
    per_seed = ", ".join(f"{s['train_s']:.0f}+{s['eval_s']:.0f}" for s in t["seeds"])
    print(f"`python -m runners.grid --seeds {args.seeds} --fixtures {args.fixtures}` "
          f"({args.fixture_set}, {args.preset}), "
          f"base cached: {wall:.0f} s wall (target <= 300 s); base eval {t['base_eval_s']:.0f} s; "
          f"per seed train+eval s: {per_seed}")
    for line in report(base.model, streams, TrainConfig(), peak):
        print(line)
    print_loo_cost(fs, base, args.seeds, args.loo_seeds)
    print(f"adapter: {manifest['adapter']['params']} parameters, {manifest['adapter']['bytes_fp32']} bytes fp32, "
          f"{manifest['adapter']['file_bytes']} bytes as a safetensors file")
    print(f"load average after: {os.getloadavg()}")
    if tmp_prereg is not None:
        os.unlink(tmp_prereg.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
