"""The issue's targets: grid wall time, pretraining time, batched speed-up, max difference, MFU.

    python benchmarks/bench_grid.py [--fixture-set classics] [--preset cpu] [--seeds 5] [--fixtures 3]
                                    [--fresh-pretrain]

1. Base-model pretraining time: with `--fresh-pretrain`, pretrains into a temporary cache and
   times it; otherwise ensures the base is cached (timing it if it had to be built) and quotes the
   time recorded in the cache entry.
2. Wall time of `python -m runners.grid --seeds 5 --fixtures 3` on the defaults, base cached,
   into a fresh temporary `--out` (nothing resumed), as a subprocess: what a user waits for.
3. Batched vs one-at-a-time adapter training, max abs difference, MFU (benchmarks/bench_training.py).
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixture-set", default="classics")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--fixtures", type=int, default=3)
    p.add_argument("--fresh-pretrain", action="store_true")
    args = p.parse_args(argv)
    peak = host_and_peak()
    fs, base, streams = load_state(args.fixture_set, args.fixtures, args.preset)
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
    print(f"adapter: {manifest['adapter']['params']} parameters, {manifest['adapter']['bytes_fp32']} bytes fp32, "
          f"{manifest['adapter']['file_bytes']} bytes as a safetensors file")
    print(f"load average after: {os.getloadavg()}")
    if tmp_prereg is not None:
        os.unlink(tmp_prereg.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
