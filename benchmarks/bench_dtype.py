"""What `--dtype bfloat16` (frozen base weights in bf16) changes: accuracy, and speed per phase.

    python benchmarks/bench_dtype.py accuracy [--seeds 5] [--fixtures 3] [--preset cpu] [--out DIR]
    python benchmarks/bench_dtype.py speed [--preset cpu] [--reps 5] [--steps 10] [--dtypes float32,bfloat16]
    python benchmarks/bench_dtype.py profile [--preset cpu] [--dtype float32] [--top 15]
    python benchmarks/bench_dtype.py compile [--preset cpu] [--dtype float32] [--steps 3] [--reps 3]

accuracy: runs the real commands twice, `python -m runners.grid --dtype float32` and `--dtype
bfloat16` (default study: classics, cpu preset, 5 seeds x 3 users; base model from the cache), and
`python -m validation.verdict --no-calibration` on each, then prints side by side: per-document
NLL per byte (largest and mean difference), every cell status, every user's margin, its interval
and its gains, and every criterion's status. The rule of the issue (a dtype may become a default
only if every margin moves by less than 0.2 percentage points and no status changes) is printed
as PASS / FAIL.

speed: for pretraining (full-weight AdamW steps, float32 against bf16 autocast), adapter training
(the batched loop of runners.train on the frozen base, 2J+1 adapters of the default study) and
evaluation (held-out windows, no grad), the time per step of each dtype, measured A/B interleaved
`--reps` times (the median is printed: a loaded machine moves single figures), tokens/s, and
model-FLOPs utilization against the matmul peak of the dtype in use, measured in the same run.
The ratio bf16 / fp32 is the figure to read; absolute numbers follow the machine's load, printed
beside them (`uptime`'s 1-minute load average).

profile: torch.profiler's top operators (self CPU time) of one batched adapter-training step.

compile: adapter-training steps eager against torch.compile (A/B interleaved), the compile time
apart, and after how many steps compiling would pay for itself.
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

import numpy as np
import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_training import matmul_peak  # noqa: E402

from runners.base_model import PRETRAIN_PRESETS, load_or_pretrain  # noqa: E402
from runners.data import eval_windows, sample_offsets, training_stream, windows_at  # noqa: E402
from runners.dtypes import DTYPES  # noqa: E402
from runners.evaluate import window_nll  # noqa: E402
from runners.execution.prepare import training_sets  # noqa: E402
from runners.model import GPT, PRESETS  # noqa: E402
from runners.settings import load_fixtures  # noqa: E402
from runners.train import TrainConfig, adapter_loss  # noqa: E402

MARGIN_RULE_PP = 0.2  # the bar: every margin moves by less than this many percentage points


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


# -- accuracy -----------------------------------------------------------------------------------

def run_grid(dtype: str, args, out: Path) -> tuple[Path, float]:
    cmd = [sys.executable, "-m", "runners.grid", "--seeds", str(args.seeds), "--fixtures", str(args.fixtures),
           "--preset", args.preset, "--dtype", dtype, "--out", str(out / dtype), "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    run = (out / dtype / "latest").resolve()
    subprocess.run([sys.executable, "-m", "validation.verdict", "--run", str(run), "--no-calibration"], cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # exit 1 is a failed gate, still judged
    return run, wall


def compare_runs(a: Path, b: Path) -> tuple[list[str], bool]:
    """Lines comparing run `a` (reference) with run `b`, and whether the issue's rule holds."""
    import polars as pl

    key = ["seed", "adapter", "eval", "doc_id"]
    da = pl.read_parquet(a / "docs.parquet").select([*key, "nll_sum", "n_tokens", "status"])
    db = pl.read_parquet(b / "docs.parquet").select([*key, "nll_sum", "status"])
    j = da.join(db, on=key, suffix="_b")
    d = ((j["nll_sum_b"] - j["nll_sum"]) / j["n_tokens"]).to_numpy()  # nats per byte
    rel = (j["nll_sum_b"] / j["nll_sum"] - 1).to_numpy()
    lines = [f"per-document NLL, {len(j)} documents x adapters x seeds: difference (b - a) in nats/byte: "
             f"mean {d.mean():+.2e}, largest |.| {np.abs(d).max():.2e}; relative: largest |.| {np.abs(rel).max():.2e}"]
    cells = j.group_by(["seed", "adapter", "eval"]).agg(pl.col("status").first(), pl.col("status_b").first())
    changed = cells.filter(pl.col("status") != pl.col("status_b"))
    lines.append(f"cell statuses: {len(cells)} cells, {len(changed)} changed"
                 + ("" if changed.is_empty() else f": {changed.rows()}"))
    va, vb = (json.loads((r / "verdict.json").read_text()) for r in (a, b))
    worst = 0.0
    lines.append(f"{'user':<12} {'quantity':<22} {'a':>9} {'b':>9} {'moved (pp)':>11}")
    for ua, ub in zip(va["users"], vb["users"], strict=True):
        for q in ("margin", "ci_low", "ci_high", "worst_other_margin", "personalization_gain",
                  "regularization_gain", "total_gain"):
            x, y = ua[q], ub[q]
            moved = 100 * (y - x)
            if q == "margin":
                worst = max(worst, abs(moved))
            lines.append(f"{ua['user']:<12} {q:<22} {100 * x:>8.3f}% {100 * y:>8.3f}% {moved:>+11.3f}")
        if ua["best_other"] != ub["best_other"]:
            lines.append(f"{ua['user']:<12} best other changed: {ua['best_other']} -> {ub['best_other']}")
    crit_changed = []
    for name, ca in va["criteria"].items():
        cb = vb["criteria"][name]
        lines.append(f"criterion {name.upper():<13} a: {ca['status']:<14} b: {cb['status']:<14} "
                     f"(point: {ca['point']} / {cb['point']})")
        if (ca["status"], ca["point"]) != (cb["status"], cb["point"]):
            crit_changed.append(name)
    gate = (va["gate"].get("passed"), vb["gate"].get("passed"))
    lines.append(f"gate passed: a {gate[0]}, b {gate[1]}")
    ok = worst < MARGIN_RULE_PP and changed.is_empty() and not crit_changed and gate[0] == gate[1]
    lines.append(f"largest margin movement {worst:.3f} pp (rule: < {MARGIN_RULE_PP} pp), cell statuses changed: "
                 f"{len(changed)}, criteria changed: {crit_changed or 'none'} -> "
                 f"{'PASS: may become a default' if ok else 'FAIL: may not become a default'}")
    return lines, ok


def accuracy(args) -> int:
    print(f"accuracy: {args.preset} preset, {args.seeds} seeds x {args.fixtures} users (classics), {load()}")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-dtype-"))
    runs = {}
    for dtype in ("float32", "bfloat16"):
        runs[dtype] = run_grid(dtype, args, out)
        print(f"  grid --dtype {dtype}: {runs[dtype][1]:.0f} s wall ({load()}), {runs[dtype][0]}")
    lines, _ = compare_runs(runs["float32"][0], runs["bfloat16"][0])
    print("a = float32, b = bfloat16")
    print("\n".join(lines))
    return 0


# -- speed per phase ----------------------------------------------------------------------------

def _median_times(fns: dict[str, callable], reps: int) -> dict[str, list[float]]:
    """Each fn timed `reps` times, A/B interleaved (after one untimed warm-up call each)."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def pretrain_step_fn(config, stream: np.ndarray, batch_size: int, steps: int, dtype: torch.dtype):
    """`steps` full-weight AdamW steps (as runners.train.pretrain), under bf16 autocast unless float32."""
    torch.manual_seed(0)
    model = GPT(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    T = config.block_size

    def run():
        for _ in range(steps):
            x, y = windows_at(stream, sample_offsets(rng, len(stream), T, batch_size), T)
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not torch.float32):
                logits = model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def adapter_step_fn(base: GPT, streams, batch_size: int, steps: int, dtype: torch.dtype, compiled: bool = False):
    """`steps` steps of the batched adapter loop (runners.train.train_adapters' body) on `base` in `dtype`
    (`compiled`: the model under torch.compile)."""
    import copy

    model = copy.deepcopy(base).cast_frozen(dtype)
    n = len(streams)
    bank = model.attach_adapters(n)
    opt = torch.optim.Adam(bank, lr=1e-2)
    T = model.config.block_size
    idx = torch.arange(1, n + 1).repeat_interleave(batch_size)
    rng = np.random.default_rng(0)
    forward = torch.compile(model) if compiled else model

    def run():
        for _ in range(steps):
            xs, ys = zip(*(windows_at(s, sample_offsets(rng, len(s), T, batch_size), T) for s in streams), strict=True)
            loss = adapter_loss(forward, torch.cat(xs), torch.cat(ys), idx, n)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
    return run


def eval_fn(base: GPT, windows, dtype: torch.dtype, bank_index: int = 0):
    import copy

    model = copy.deepcopy(base).cast_frozen(dtype)
    return lambda: window_nll(model, windows.x, windows.y, bank_index)


def speed(args) -> int:
    torch.set_num_threads(os.cpu_count() or 1)
    names = args.dtypes.split(",")
    print(f"host: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads; {load()}")
    fs = load_fixtures("classics", 3, {})
    config = PRESETS[args.preset]
    if args.preset == "cpu":
        base = load_or_pretrain(config, PRETRAIN_PRESETS["cpu"], fs.pretrain, fs.pretrain_sha256()).model
    else:  # speed only: the weights' values do not change the arithmetic, so no hours of pretraining
        torch.manual_seed(0)
        base = GPT(config).eval()
        print(f"preset {args.preset}: freshly initialised weights (speed only; no cached pretrained base needed)")
    _, docs = training_sets(fs)
    streams = [training_stream(d) for d in docs]
    windows = eval_windows(tuple(d for u in fs.users for d in u.heldout)[: args.eval_docs], config.block_size)
    T, B = config.block_size, args.batch_size
    peaks = {n: matmul_peak(dtype=DTYPES[n]) for n in names}
    phases = {
        "pretraining": ({n: pretrain_step_fn(config, streams[-1], args.pretrain_batch, args.steps, DTYPES[n])
                         for n in names}, base.flops_per_token("full"), args.steps * args.pretrain_batch * T),
        "adapter training": ({n: adapter_step_fn(base, streams, B, args.steps, DTYPES[n]) for n in names},
                             base.flops_per_token("norm_only"), args.steps * len(streams) * B * T),
        "evaluation": ({n: eval_fn(base, windows, DTYPES[n]) for n in names},
                       base.flops_per_token("forward"), int(windows.x.numel())),
    }
    peaks = {n: max(p, matmul_peak(dtype=DTYPES[n])) for n, p in peaks.items()}  # the larger of before / after
    print("matmul peak, measured in this run (max of before and after): "
          + ", ".join(f"{n} {p / 1e9:.0f} GFLOP/s" for n, p in peaks.items()))
    print(f"preset {args.preset}; {len(streams)} adapters x batch {B}; pretraining batch {args.pretrain_batch}; "
          f"{args.steps} steps per repetition; {args.reps} repetitions A/B interleaved; medians")
    for phase, (fns, fpt, tokens) in phases.items():
        times = _median_times(fns, args.reps)
        med = {n: float(np.median(t)) for n, t in times.items()}
        parts = []
        for n in names:
            tps = tokens / med[n]
            mfu = 100 * fpt * tps / peaks[n]
            parts.append(f"{n}: {med[n]:.3f} s ({tokens:,} tokens), {tps:,.0f} tok/s, MFU {mfu:.1f}% of the {n} peak")
        ratio = "" if len(names) < 2 else f"; {names[0]} / {names[1]} time ratio {med[names[0]] / med[names[1]]:.2f}x"
        spread = "; ".join(f"{n} min-max {min(t):.3f}-{max(t):.3f}" for n, t in times.items())
        print(f"{phase}: " + "; ".join(parts) + ratio + f"  [{spread}; {load()}]")
    return 0


def compile_ab(args) -> int:
    """Adapter training steps, eager against torch.compile, in one dtype: A/B interleaved; the
    first (compiling) call timed apart."""
    torch.set_num_threads(os.cpu_count() or 1)
    fs = load_fixtures("classics", 3, {})
    config = PRESETS[args.preset]
    base = load_or_pretrain(config, PRETRAIN_PRESETS["cpu"], fs.pretrain, fs.pretrain_sha256()).model \
        if args.preset == "cpu" else GPT(config).eval()
    _, docs = training_sets(fs)
    streams = [training_stream(d) for d in docs]
    fns = {c: adapter_step_fn(base, streams, args.batch_size, args.steps, DTYPES[args.dtype], compiled=c == "compiled")
           for c in ("eager", "compiled")}
    t0 = time.perf_counter()
    fns["compiled"]()
    first = time.perf_counter() - t0
    print(f"torch.compile, preset {args.preset}, --dtype {args.dtype}: first call (compiling) {first:.1f} s; {load()}")
    times = _median_times(fns, args.reps)
    med = {k: float(np.median(t)) for k, t in times.items()}
    print(f"{args.steps} adapter-training steps, median of {args.reps} A/B interleaved: eager {med['eager']:.3f} s, "
          f"compiled {med['compiled']:.3f} s: eager / compiled {med['eager'] / med['compiled']:.2f}x; compiling pays "
          f"for itself after {first / max(1e-9, (med['eager'] - med['compiled']) / args.steps):.0f} steps "
          f"(if positive); {load()}")
    return 0


def profile(args) -> int:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(os.cpu_count() or 1)
    fs = load_fixtures("classics", 3, {})
    config = PRESETS[args.preset]
    if args.preset == "cpu":
        base = load_or_pretrain(config, PRETRAIN_PRESETS["cpu"], fs.pretrain, fs.pretrain_sha256()).model
    else:
        torch.manual_seed(0)
        base = GPT(config).eval()
    _, docs = training_sets(fs)
    step = adapter_step_fn(base, [training_stream(d) for d in docs], args.batch_size, 1, DTYPES[args.dtype])
    step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    print(f"one batched adapter-training step, preset {args.preset}, --dtype {args.dtype}, 3 steps profiled; {load()}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("--seeds", type=int, default=5)
    a.add_argument("--fixtures", type=int, default=3)
    a.add_argument("--preset", default="cpu", choices=list(PRESETS))
    a.add_argument("--out", default=None, help="where the two runs go (default: a new temporary directory)")
    s = sub.add_parser("speed")
    s.add_argument("--preset", default="cpu", choices=list(PRESETS))
    s.add_argument("--reps", type=int, default=5)
    s.add_argument("--steps", type=int, default=5, help="steps per timed repetition")
    s.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    s.add_argument("--pretrain-batch", type=int, default=32, help="windows per pretraining step (preset: 32)")
    s.add_argument("--eval-docs", type=int, default=30, help="held-out documents scored per repetition")
    s.add_argument("--dtypes", default="float32,bfloat16")
    c = sub.add_parser("compile")
    c.add_argument("--preset", default="cpu", choices=list(PRESETS))
    c.add_argument("--dtype", default="float32", choices=list(DTYPES))
    c.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    c.add_argument("--steps", type=int, default=3)
    c.add_argument("--reps", type=int, default=3)
    pr = sub.add_parser("profile")
    pr.add_argument("--preset", default="cpu", choices=list(PRESETS))
    pr.add_argument("--dtype", default="float32", choices=list(DTYPES))
    pr.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    pr.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    return {"accuracy": accuracy, "speed": speed, "compile": compile_ab, "profile": profile}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
