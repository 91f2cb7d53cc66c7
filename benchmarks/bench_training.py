"""Adapter training speed: batched (per-row gather) vs one adapter at a time, and MFU.

    python benchmarks/bench_training.py [--fixture-set classics] [--preset cpu] [--fixtures 3]

Prints the matmul peak measured in this run (fp32, best of a few square sizes), the wall time of
training the user adapters + pooled in one batched loop and one at a time on the same windows
(PEFT's LayerNorm tuning trains one adapter per model), the speed-up, the largest absolute
difference between the two sets of adapters (target <= 1e-5), and model-FLOPs utilization
(model FLOPs per token x tokens / time / measured peak) for adapter and full (pretraining) steps.
Uses the cached base model (pretrains it first if absent).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runners.base_model import PRETRAIN_PRESETS, load_or_pretrain  # noqa: E402
from runners.data import sample_offsets, training_stream, windows_at  # noqa: E402
from runners.model import GPT, PRESETS  # noqa: E402
from runners.settings import load_fixtures  # noqa: E402
from runners.train import TrainConfig, data_order, train_adapters  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(sizes=(512, 1024, 2048), reps: int = 8, dtype: torch.dtype = torch.float32,
                device: str = "cpu") -> float:
    """Best matmul throughput (FLOP/s) in `dtype` (fp32 by default) over `sizes`, on `device`, now."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        for _ in range(2):
            a @ b
        _sync(device)
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            _sync(device)
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def load_state(fixture_set: str, n_users: int, preset: str):
    fs = load_fixtures(fixture_set, n_users, {})
    base = load_or_pretrain(PRESETS[preset], PRETRAIN_PRESETS[preset], fs.pretrain, fs.pretrain_sha256())
    streams = [training_stream(u.train) for u in fs.users]
    streams.append(training_stream(tuple(d for u in fs.users for d in u.train)))  # pooled
    return fs, base, streams


def batched_vs_sequential(base: GPT, streams: list[np.ndarray], cfg: TrainConfig, seed: int = 0,
                          device: str = "cpu") -> dict:
    T = base.config.block_size
    orders = [data_order(seed, k, len(s), T, cfg) for k, s in enumerate(streams)]
    _sync(device)
    t0 = time.perf_counter()
    batched = train_adapters(base, streams, orders, cfg, device)
    _sync(device)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [train_adapters(base, [s], [o], cfg, device) for s, o in zip(streams, orders, strict=True)]
    _sync(device)
    t_seq = time.perf_counter() - t0
    diff = max((a.states[0][k] - batched.states[i][k]).abs().max().item()
               for i, a in enumerate(alone) for k in a.states[0])
    tokens = cfg.steps * cfg.batch_size * T * len(streams)
    return {"n_adapters": len(streams), "batched_s": t_batched, "sequential_s": t_seq, "speedup": t_seq / t_batched,
            "max_abs_diff": diff, "model_flops": base.flops_per_token("norm_only") * tokens}


def full_training_flops_per_s(config, stream: np.ndarray, steps: int = 10, batch_size: int = 32) -> float:
    """Achieved model FLOP/s of full (all-weights) training steps, as in pretraining."""
    torch.manual_seed(0)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    T = config.block_size
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        x, y = windows_at(stream, sample_offsets(rng, len(stream), T, batch_size), T)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.flops_per_token("full") * steps * batch_size * T / (time.perf_counter() - t0)


def report(base: GPT, streams, cfg: TrainConfig, peak: float) -> list[str]:
    """Lines of figures; the peak is re-measured after the timed work and the larger one used,
    so a peak measured while other processes held the cores cannot inflate the MFU."""
    r = batched_vs_sequential(base, streams, cfg)
    full = full_training_flops_per_s(base.config, streams[-1])
    peak = max(peak, matmul_peak())
    return [
        f"matmul peak used for MFU (max of the measurements in this run): {peak / 1e9:.1f} GFLOP/s",
        f"adapter training, {r['n_adapters']} adapters x {cfg.steps} steps x batch {cfg.batch_size}:",
        f"  batched (per-row gather): {r['batched_s']:.2f} s;  one at a time: {r['sequential_s']:.2f} s;  "
        f"speed-up {r['speedup']:.2f}x (target >= 2x)",
        f"  max |batched - one-at-a-time| over all adapter parameters: {r['max_abs_diff']:.2e} (target <= 1e-5)",
        f"  MFU batched: {r['model_flops'] / r['batched_s'] / 1e9:.1f} GFLOP/s = "
        f"{100 * r['model_flops'] / r['batched_s'] / peak:.1f}% of peak;  one at a time: "
        f"{100 * r['model_flops'] / r['sequential_s'] / peak:.1f}% of peak",
        f"full-weight training (pretraining step, batch 32): {full / 1e9:.1f} GFLOP/s = "
        f"{100 * full / peak:.1f}% of peak",
    ]


def host_and_peak() -> float:
    """Use every core, print the host and its load, and measure the fp32 matmul peak (FLOP/s)."""
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"host: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average before {os.getloadavg()[0]:.2f}")
    peak = matmul_peak()
    print(f"matmul peak (fp32, measured now): {peak / 1e9:.1f} GFLOP/s")
    return peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixture-set", default="classics")
    p.add_argument("--fixtures", type=int, default=3)
    p.add_argument("--preset", default="cpu", choices=list(PRESETS))
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="windows per adapter per step")
    args = p.parse_args(argv)
    peak = host_and_peak()
    _, base, streams = load_state(args.fixture_set, args.fixtures, args.preset)
    for line in report(base.model, streams, TrainConfig(batch_size=args.batch_size), peak):
        print(line)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
