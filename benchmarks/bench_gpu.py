"""The `gpt30m` preset's 5 x 3 grid on a GPU: wall time, MFU, batched vs one adapter at a time.

    python benchmarks/bench_gpu.py [--out DIR] [--device cuda] [--preset gpt30m] [--seeds 5] [--fixtures 3]
                                   [--pretrain-steps 1000] [--dtype bfloat16] [--fixture-set classics]

NOT YET RUN ON A GPU: prepared for the first session that is lent a GPU machine (device time is
scarce, so this is one short command). What it does, in order, printing each figure as it goes
and writing them all to `<out>/gpu_summary.json`:
1. the device, and its matmul peak in float32 and in the dtype the run uses (measured now);
2. the base model: pretrained on the device into the cache (`--pretrain-steps`, default 1000 of
   the preset's 5000 to fit one 10-minute call: the adapters' speed does not depend on how well
   the base is trained, its perplexities do), timed, seconds per step and the 5000-step estimate;
3. `python -m runners.grid --preset gpt30m --seeds 5 --fixtures 3 --device cuda --dtype bfloat16`
   (plus the same `--pretrain-steps`), base cached: wall time, per-seed training and scoring
   time, and MFU of training and scoring from the manifest's timings;
4. batched adapter training against one adapter at a time on the same windows
   (benchmarks/bench_training.py's `batched_vs_sequential`), on the device: the ratio docs/performance.md
   quotes as untested on a GPU.
On a CPU it runs too (`--device cpu --preset tiny --fixture-set synthetic --pretrain-steps 50`):
a smoke test of the script itself, not a GPU figure.

Preparation, once, in the repository root (the device machine cannot fetch anything; its image
has torch, numpy, safetensors, tqdm, but not polars):

    echo /.whl/ >> .git/info/exclude; echo /.gpu-cache/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl polars==<the venv's version>
        # (and polars-runtime-32==<same>, where that polars splits its runtime out)
    mkdir -p .gpu-cache && cp -r ~/.cache/normadapt/fixtures .gpu-cache/fixtures

The device call (carry [".whl", ".gpu-cache"], timeout_s 600):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NORMADAPT_CACHE_DIR=$PWD/.gpu-cache && \
    python3 benchmarks/bench_gpu.py --out $OUT/bf16 && \
    python3 benchmarks/bench_gpu.py --out $OUT/fp32 --dtype float32 --skip-sequential

(the base model is pretrained once, by the first; `--pretrain-steps` is the same for both.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_training import batched_vs_sequential, matmul_peak  # noqa: E402

from runners.base_model import PRETRAIN_PRESETS, load_or_pretrain  # noqa: E402
from runners.data import training_stream  # noqa: E402
from runners.dtypes import DTYPES, choose  # noqa: E402
from runners.model import PRESETS  # noqa: E402
from runners.settings import load_fixtures  # noqa: E402
from runners.train import TrainConfig  # noqa: E402


def say(summary: dict, key: str, value, line: str) -> None:
    summary[key] = value
    print(line, flush=True)


def grid_mfu(manifest: dict, model, peak: float) -> dict:
    """Training and scoring MFU of the grid's seeds, from the manifest's timings and sizes."""
    cfg, seeds = manifest["config"]["train"], manifest["timings"]["seeds"]
    n_adapters = len(next(iter(seeds))["statuses"])
    T = model.config.block_size
    train_tokens = cfg["steps"] * cfg["batch_size"] * T * n_adapters
    heldout = sum(u["heldout_bytes"] for u in manifest["fixture_set"]["users"])  # bytes == tokens, BOS aside
    eval_tokens = heldout * n_adapters
    train_s = sum(s["train_s"] for s in seeds) / len(seeds)
    eval_s = sum(s["eval_s"] for s in seeds) / len(seeds)
    return {"adapters": n_adapters, "train_s_per_seed": train_s, "eval_s_per_seed": eval_s,
            "train_mfu": model.flops_per_token("norm_only") * train_tokens / train_s / peak,
            "eval_mfu": model.flops_per_token("forward") * eval_tokens / eval_s / peak}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu-bench-out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="gpt30m", choices=list(PRESETS))
    p.add_argument("--fixture-set", default="classics")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--fixtures", type=int, default=3)
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--dtype", default="bfloat16", help="bfloat16 (default) or float32 for the baseline")
    p.add_argument("--skip-sequential", action="store_true", help="skip the batched vs one-at-a-time part")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"args": vars(args)}
    dev = args.device
    what = torch.cuda.get_device_name() if dev == "cuda" else f"CPU x{os.cpu_count()}"
    choice = choose(args.dtype, dev, args.preset)
    say(summary, "device", what, f"device: {what}; torch {torch.__version__}; --dtype {args.dtype} -> {choice.name} "
                                 f"({choice.reason})")
    sizes = (2048, 4096, 8192) if dev == "cuda" else (512, 1024)
    peaks = {n: matmul_peak(sizes=sizes, dtype=DTYPES[n], device=dev) for n in {"float32", choice.name}}
    say(summary, "matmul_peak_flops", peaks,
        "matmul peak now: " + ", ".join(f"{n} {v / 1e12:.1f} TFLOP/s" for n, v in peaks.items()))

    fs = load_fixtures(args.fixture_set, args.fixtures, {})
    pre = PRETRAIN_PRESETS[args.preset]
    steps = args.pretrain_steps or pre.steps
    from dataclasses import replace
    pre = replace(pre, steps=steps)
    t0 = time.perf_counter()
    base = load_or_pretrain(PRESETS[args.preset], pre, fs.pretrain, fs.pretrain_sha256(), device=dev,
                            dtype=choice.torch_dtype)
    wall = time.perf_counter() - t0
    per_step = base.pretrain_seconds / steps
    full = PRETRAIN_PRESETS[args.preset].steps
    say(summary, "pretrain", {"steps": steps, "seconds": base.pretrain_seconds, "built_now": base.built_now,
                              "s_per_step": per_step, "estimate_full_s": per_step * full},
        f"pretraining {steps} steps (float32): {base.pretrain_seconds:.1f} s ({'now' if base.built_now else 'cached'}; "
        f"{wall:.1f} s with loading), {per_step * 1e3:.1f} ms/step -> about {per_step * full:.0f} s for the preset's "
        f"{full} steps")

    cmd = [sys.executable, "-m", "runners.grid", "--preset", args.preset, "--seeds", str(args.seeds), "--fixtures",
           str(args.fixtures), "--fixture-set", args.fixture_set, "--device", dev, "--dtype", args.dtype,
           "--pretrain-steps", str(steps), "--out", str(out / "runs"), "-q"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    grid_s = time.perf_counter() - t0
    if done.returncode != 0:
        print(done.stderr[-4000:])
        say(summary, "grid_error", done.stderr[-4000:], f"grid FAILED (exit {done.returncode})")
    else:
        manifest = json.loads((out / "runs" / "latest" / "manifest.json").read_text())
        m = grid_mfu(manifest, base.model, peaks[choice.name])
        say(summary, "grid", {"wall_s": grid_s, **m, "dtype": manifest["host"]["dtype"]},
            f"`{' '.join(cmd[1:])}`: {grid_s:.1f} s wall (base cached); per seed: training "
            f"{m['train_s_per_seed']:.1f} s ({m['adapters']} adapters), scoring {m['eval_s_per_seed']:.1f} s; MFU "
            f"training {100 * m['train_mfu']:.1f}%, scoring {100 * m['eval_mfu']:.1f}% of the {choice.name} peak")
        print(done.stdout[-1500:])

    if not args.skip_sequential:
        streams = [training_stream(u.train) for u in fs.users]
        streams.append(training_stream(tuple(d for u in fs.users for d in u.train)))  # pooled
        r = batched_vs_sequential(base.model, streams, TrainConfig(), device=dev)
        mfu = r["model_flops"] / r["batched_s"] / peaks[choice.name]
        say(summary, "batched_vs_sequential", r,
            f"adapter training, {r['n_adapters']} adapters x 100 steps: batched {r['batched_s']:.2f} s, one at a time "
            f"{r['sequential_s']:.2f} s: {r['speedup']:.2f}x; max |difference| {r['max_abs_diff']:.1e}; batched MFU "
            f"{100 * mfu:.1f}% of the {choice.name} peak")
    (out / "gpu_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"written: {out / 'gpu_summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
