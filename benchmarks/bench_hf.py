"""HF backend speed: batched per-row adapters vs PEFT one adapter at a time; MFU; 135M-parameter scale.

    python benchmarks/bench_hf.py ratio [--fixtures 3] [--steps 20] [--batch-size 2] [--dtype float32]
    python benchmarks/bench_hf.py scale [--dtype bfloat16] [--context 256] [--batch-size 4]

`ratio`: a small random Llama-style checkpoint (byte tokenizer, built offline) on the classics users.
Trains the user adapters + pooled in one batched loop (the suite's `train_adapters`) and, as PEFT
does it, one adapter at a time with PEFT's own LN_TUNING model on the same windows; then scores
every adapter on every user's held-out text, the suite's way (one model, one bank) and PEFT's way
(`PeftModel.from_pretrained` per adapter). Prints both wall times, their ratios, the largest
difference between the two sets of adapters, tokens/s and model-FLOPs utilization against a matmul
peak measured in the same run in the same dtype.

`memory`: peak resident memory and wall time of the grid at its default flags (float32, context
512, batch 8; 2 users with 10 short held-out documents each, 1 seed, 1 step) for random-weight
Llama shapes of about 35M, 135M and 360M parameters with a 49,152-token vocabulary, built offline
from configs (SmolLM-135M's and SmolLM-360M's shapes, and a smaller one), each run once at the
default budget and once under `--max-memory` (default 3GiB). Every grid is a child process; its
peak resident memory is the kernel's (`os.wait4`'s rusage), beside the plan's estimate from the
run's manifest.

    python benchmarks/bench_hf.py memory [--shapes 35m,135m,360m] [--max-memory 3GiB] [--runs default,budget]

`steptime`: the plan's estimate of a training step's time (runners.train.probe_step) against the
mean time of measured steps (after a warm-up step), for the built-in presets at the default study
(3 classics users with their controls: 7 adapters, batch 8) and random Llama shapes with a
49,152-token vocabulary at context 512 (2 users: 5 adapters, batch 8), each planned for a budget.

    python benchmarks/bench_hf.py steptime [--shapes cpu,smoke,35m,135m] [--budget-gib 3]

`chunks`: the loss of 4,096 tokens over a 49,152-token vocabulary from width-576 hidden states,
forward and backward, with the logits whole and in slices of several sizes (runners.losses): user
and system CPU seconds and peak resident memory of each, so the cost of slicing is measured.

    python benchmarks/bench_hf.py chunks

`scale`: a randomly initialized Llama-style model of about 135M parameters (SmolLM-135M's shape;
a BPE tokenizer trained here on the classics pretraining text stands in for its tokenizer) runs
`python -m runners.grid --model DIR` on 2 classics users, 1 seed, 10 steps, evaluation included.
Prints the wall time of the grid and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import matmul_peak  # noqa: E402

from runners.data import windows_at  # noqa: E402
from runners.dtypes import DTYPES  # noqa: E402
from runners.evaluate import doc_nll  # noqa: E402
from runners.hf.evaluate import hf_eval_windows, hf_training_stream  # noqa: E402
from runners.hf.load import load_checkpoint  # noqa: E402
from runners.hf.peft_export import write_peft_adapter  # noqa: E402
from runners.hf.tiny import save_tiny  # noqa: E402
from runners.settings import load_fixtures  # noqa: E402
from runners.train import TrainConfig, data_order, train_adapters  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peft_train_one(path: Path, names: list[str], stream: np.ndarray, order: np.ndarray, cfg: TrainConfig, T: int,
                   dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One adapter trained the PEFT way: a fresh PeftModel (LN_TUNING), Adam on its trainable params."""
    from peft import LNTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype,
                                                trust_remote_code=False).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(base, LNTuningConfig(task_type="CAUSAL_LM", target_modules=names))
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for step in range(cfg.steps):
        x, y = windows_at(stream, order[step], T)
        logits = pm(input_ids=x, use_cache=False).logits.float()
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {n.replace("base_model.model.", "").replace(".ln_tuning_layers.default", ""): p.detach().float().clone()
            for n, p in pm.named_parameters() if p.requires_grad}


class PeftScorer(nn.Module):
    """A PeftModel behind `runners.evaluate`'s model interface (the bank index is ignored)."""

    def __init__(self, pm, block_size: int, eval_batch: int):
        super().__init__()
        self.pm, self.eval_batch = pm, eval_batch

    def forward(self, idx, adapter_idx=None):
        return self.pm(input_ids=idx, use_cache=False).logits.float()


def ratio(args) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    td = DTYPES[args.dtype]
    fs = load_fixtures(args.fixture_set, args.fixtures, {})
    work = Path(tempfile.mkdtemp(prefix="bench-hf-"))
    path = save_tiny("llama", work / "model", ctx=args.context, width=args.width, layers=args.layers, heads=4)
    ck = load_checkpoint(path, dtype=args.dtype, context=args.context)
    T = ck.model.config.block_size
    names = [u.name for u in fs.users] + ["pooled"]
    streams = [hf_training_stream(u.train, ck.encoder) for u in fs.users]
    streams.append(hf_training_stream(tuple(d for u in fs.users for d in u.train), ck.encoder))
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-2)
    orders = [data_order(0, k, len(s), T, cfg) for k, s in enumerate(streams)]
    windows = {u.name: hf_eval_windows(u.heldout[:args.heldout_docs], T, ck.encoder) for u in fs.users}
    n_eval_tokens = sum(sum(w.n_tokens) for w in windows.values())
    print(f"model: Llama-style, {ck.model.n_base_params() / 1e6:.2f}M params, {len(ck.model.specs)} norms, "
          f"context {T}, dtype {args.dtype}; {len(names)} adapters x {cfg.steps} steps x {cfg.batch_size} windows; "
          f"{n_eval_tokens} held-out tokens per bank entry")
    peak = matmul_peak(reps=6, dtype=td)
    print(f"matmul peak ({args.dtype}, measured now): {peak / 1e9:.1f} GFLOP/s; "
          f"torch threads {torch.get_num_threads()}")

    warm = TrainConfig(steps=1, batch_size=cfg.batch_size, lr=cfg.lr)  # first backward passes are slow: not timed
    train_adapters(ck.model, streams, [o[:1] for o in orders], warm)
    peft_train_one(path, ck.model.norm_names(), streams[0], orders[0][:1], warm, T, td)
    t0 = time.perf_counter()
    batched = train_adapters(ck.model, streams, orders, cfg)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [peft_train_one(path, ck.model.norm_names(), s, o, cfg, T, td)
             for s, o in zip(streams, orders, strict=True)]
    t_peft = time.perf_counter() - t0
    diff = max((batched.states[k][n] - alone[k][n]).abs().max().item() for k in range(len(names)) for n in alone[k])
    train_tokens = len(names) * cfg.steps * cfg.batch_size * T
    flops = ck.model.flops_per_token("norm_only") * train_tokens
    print(f"train  batched: {t_batched:7.2f} s  ({train_tokens / t_batched:8.0f} tok/s, "
          f"MFU {flops / t_batched / peak:.1%})")
    print(f"train  PEFT one at a time: {t_peft:7.2f} s  -> batched is {t_peft / t_batched:.2f}x faster; "
          f"max |adapter difference| {diff:.2e}")

    t0 = time.perf_counter()
    model = batched.model
    for k in range(len(names) + 1):
        for w in windows.values():
            doc_nll(model, w, k)
    t_eval = time.perf_counter() - t0
    adirs = [write_peft_adapter(work / "peft" / n, batched.states[k], ck.model.specs, str(path))
             for k, n in enumerate(names)]
    t0 = time.perf_counter()
    base = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=td, trust_remote_code=False).eval()
    for w in windows.values():  # the base
        doc_nll(PeftScorer(base, T, ck.model.eval_batch), w, 0)
    for adir in adirs:
        for w in windows.values():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pm = PeftModel.from_pretrained(copy.deepcopy(base), adir).eval()
            doc_nll(PeftScorer(pm, T, ck.model.eval_batch), w, 0)
    t_peft_eval = time.perf_counter() - t0
    eval_tokens = n_eval_tokens * (len(names) + 1)
    eflops = ck.model.flops_per_token("forward") * eval_tokens
    print(f"eval   one bank: {t_eval:7.2f} s  ({eval_tokens / t_eval:8.0f} tok/s, MFU {eflops / t_eval:.3g} FLOP/s "
          f"= {eflops / t_eval / peak:.1%})")
    print(f"eval   PEFT reload per adapter x user: {t_peft_eval:7.2f} s -> {t_peft_eval / t_eval:.2f}x")
    print(f"total  batched {t_batched + t_eval:.2f} s vs PEFT {t_peft + t_peft_eval:.2f} s: "
          f"{(t_peft + t_peft_eval) / (t_batched + t_eval):.2f}x; peak RSS {peak_rss_mib():.0f} MiB; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def scale(args) -> None:
    from runners import grid
    from runners.hf.tiny import save_llama_135m

    fs = load_fixtures("classics", 2, {})
    work = Path(tempfile.mkdtemp(prefix="bench-hf-scale-"))
    t0 = time.perf_counter()
    path = save_llama_135m(work / "model", [d.text for d in fs.pretrain])
    print(f"built the 135M checkpoint (random weights, BPE tokenizer trained on the pretraining text) in "
          f"{time.perf_counter() - t0:.1f} s: {path}")
    peak = matmul_peak(sizes=(1024, 2048), reps=6, dtype=DTYPES[args.dtype])
    print(f"matmul peak ({args.dtype}, measured now): {peak / 1e9:.1f} GFLOP/s; "
          f"torch threads {torch.get_num_threads()}")
    argv = ["--model", str(path), "--dtype", args.dtype, "--context", str(args.context), "--fixture-set", "classics",
            "--fixtures", "2", "--seeds", "1", "--steps", "10", "--batch-size", str(args.batch_size),
            "--out", str(work / "runs"), "-q"]
    print("python -m runners.grid " + " ".join(argv))
    t0 = time.perf_counter()
    rc = grid.main(argv)
    wall = time.perf_counter() - t0
    import json

    m = json.loads((work / "runs" / "latest" / "manifest.json").read_text())
    t = m["timings"]
    print(f"grid exit {rc}: {wall:.1f} s wall (load+hash {t['base_model_s']:.1f} s, "
          f"base eval {t['base_eval_s']:.1f} s, "
          f"seed train {t['seeds'][0]['train_s']:.1f} s, seed eval {t['seeds'][0]['eval_s']:.1f} s); "
          f"peak RSS {peak_rss_mib():.0f} MiB; {m['base_model']['params'] / 1e6:.1f}M params")


# Llama shapes with SmolLM's 49,152-token vocabulary (tied embeddings)
SHAPES = {
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),  # seconds: checks the benchmark itself
    "35m": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=10, num_attention_heads=6,
                num_key_value_heads=2),
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3),
    "360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                 num_key_value_heads=5),
}


def _user_dir(root: Path, heldout_docs: int = 10) -> Path:
    """2 synthetic users (their training text, `heldout_docs` short held-out documents) and a
    pretraining folder, as a `--fixture-set DIR` user directory."""
    from fixtures import synthetic_fixture_set

    fs = synthetic_fixture_set(2)
    for u in fs.users:
        for part, docs in (("train", u.train), ("heldout", u.heldout[:heldout_docs])):
            (root / u.name / part).mkdir(parents=True, exist_ok=True)
            for i, d in enumerate(docs):
                (root / u.name / part / f"{i:03d}.txt").write_text(d.text, encoding="utf-8")
    (root / "pretrain").mkdir(exist_ok=True)
    for i, d in enumerate(fs.pretrain[:20]):
        (root / "pretrain" / f"{i:03d}.txt").write_text(d.text, encoding="utf-8")
    return root


def _save_shape(name: str, out: Path, texts: list[str]) -> None:
    """A random Llama of shape `name` with a BPE tokenizer (vocabulary 49,152), written to `out`."""
    import transformers as tf

    from runners.hf.tiny import SMOLLM_135M, bpe_tokenizer

    tok = bpe_tokenizer(texts, SMOLLM_135M["vocab_size"])
    cfg = tf.LlamaConfig(**{**SMOLLM_135M, **SHAPES[name]}, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(out)
    tok.save_pretrained(out)


def _child(argv: list[str], env: dict) -> tuple[int, float, int, str]:
    """Run `python -m runners.grid argv`; (exit code, wall seconds, peak RSS bytes, stderr tail)."""
    import subprocess

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "runners.grid", *argv], stdout=subprocess.DEVNULL,
                                stderr=err, env=env, cwd=Path(__file__).resolve().parents[1])
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        err.seek(0)
        tail = err.read()[-3000:]
    return proc.returncode, wall, usage.ru_maxrss * 1024, tail


def memory_mode(args) -> None:
    import json
    import multiprocessing as mp

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-hf-memory-"))
    users = _user_dir(work / "users")
    texts = [p.read_text() for p in sorted((users / "pretrain").glob("*.txt"))]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"work {work}; OMP_NUM_THREADS={env['OMP_NUM_THREADS']}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print("| shape | params | flags | exit | wall | peak RSS (measured) | plan: peak estimate, budget | "
          "micro-batches x windows | step (measured / estimated) | before the first step: load, plan, base scoring |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.shapes.split(","):
        model = work / f"llama-{name}"
        if not (model / "config.json").is_file():
            p = mp.get_context("spawn").Process(target=_save_shape, args=(name, model, texts))  # its memory freed
            p.start()
            p.join()
        runs = {"default": [], "budget": ["--max-memory", args.max_memory]}
        for extra in (runs[r] for r in args.runs.split(",")):
            out = work / f"runs-{name}-{'budget' if extra else 'default'}"
            argv = ["--model", str(model), "--fixture-set", str(users), "--fixtures", "2", "--seeds", "1",
                    "--steps", "1", "--out", str(out), *extra]
            rc, wall, rss, tail = _child(argv, env)
            flags = " ".join(extra) or "defaults"
            if rc != 0:
                print(f"| {name} | | {flags} | {rc} | {wall:.0f} s | {rss / 2**30:.2f} GiB | | | | |")
                print(tail, file=sys.stderr)
                continue
            m = json.loads((out / "latest" / "manifest.json").read_text())
            mem, t = m["memory"], m["timings"]
            ck = " (checkpointing)" if mem["checkpointing"] else ""
            print(f"| {name} | {m['base_model']['params'] / 1e6:.0f}M | {flags} | {rc} | {wall:.0f} s | "
                  f"{rss / 2**30:.2f} GiB | {mem['peak_bytes'] / 2**30:.2f} GiB of {mem['budget_bytes'] / 2**30:.2f} "
                  f"GiB | {mem['micro_batches']} x {mem['micro_rows']}{ck} | "
                  f"{mem['step_seconds_measured']:.0f} s / {mem['step_seconds']:.0f} s | "
                  f"{t.get('load_s', 0):.0f} s, {t.get('plan_s', 0):.0f} s, {t['base_eval_s']:.0f} s |", flush=True)


def steptime_mode(args) -> None:
    """The plan's step-time estimate against measured training steps, per shape."""
    import transformers as tf

    from runners.dtypes import DTYPES
    from runners.execution.prepare import training_sets
    from runners.hf.model import HFAdapterLM
    from runners.memory import (
        STEP_TIME_ACCURACY,
        apply_plan,
        bound_heap_retention,
        plan_memory,
        resident_bytes,
        shape_of,
        with_step_time,
    )
    from runners.model import GPT, PRESETS
    from runners.settings import load_fixtures
    from runners.train import probe_step

    budget = int(float(args.budget_gib) * 2**30)
    td = DTYPES[args.dtype]
    print(f"dtype {args.dtype}; torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs; budget {args.budget_gib} GiB")
    print("| model | context | adapters x batch | plan | estimate | measured (mean of steps) | estimate / measured |")
    print("|---|---|---|---|---|---|---|")
    for name in args.shapes.split(","):
        torch.manual_seed(0)
        if name in PRESETS:  # the built-in model at its default study: 3 classics users, loo on
            cfg = PRESETS[name]
            model = GPT(cfg).cast_frozen(td)
            n_adapters = len(training_sets(load_fixtures("classics", 3, {}), True)[0])
        else:  # a random Llama of SHAPES[name] with a 49,152-token vocabulary, context 512; 2 users, loo on
            from runners.hf.tiny import SMOLLM_135M

            hcfg = tf.LlamaConfig(**{**SMOLLM_135M, **SHAPES[name]})
            model = HFAdapterLM(tf.AutoModelForCausalLM.from_config(hcfg, dtype=td), 512)
            n_adapters = 5
        T = model.config.block_size
        shape = shape_of(model)
        if name not in PRESETS:  # as the grid does when its plan is tight (logits in slices)
            bound_heap_retention()
        plan = plan_memory(shape, context=T, n_adapters=n_adapters, batch_size=args.batch_size, budget=budget,
                           resident=resident_bytes(), weights_loaded=True)
        t0 = time.perf_counter()
        plan = with_step_time(plan, shape, probe_step(copy.deepcopy(model), plan))
        t_probe = time.perf_counter() - t0
        apply_plan(model, plan)
        rng = np.random.default_rng(0)
        streams = [rng.integers(0, model.config.vocab_size, size=20 * T).astype(np.int64) for _ in range(n_adapters)]
        cfg_t = TrainConfig(steps=args.steps + 1, batch_size=args.batch_size)
        orders = [data_order(0, k, len(st), T, cfg_t) for k, st in enumerate(streams)]

        class Tick:  # the time of each step, from train_adapters' progress updates
            def __init__(self):
                self.t, self.times = time.perf_counter(), []

            def update(self, n):
                now = time.perf_counter()
                self.times.append(now - self.t)
                self.t = now

        tick = Tick()
        train_adapters(model, streams, orders, cfg_t, micro_rows=plan.micro_rows, checkpointing=plan.checkpointing,
                       progress=tick)
        times = tick.times
        measured = float(np.mean(times[1:]))  # the first step warms up allocator and kernels
        how = f"{plan.micro_batches} x {plan.micro_rows}" + (" (ckpt)" if plan.checkpointing else "")
        print(f"| {name} ({model.n_base_params() / 1e6:.1f}M) | {T} | {n_adapters} x {args.batch_size} | {how} | "
              f"{plan.step_seconds:.2f} s (probe {t_probe:.1f} s) | {measured:.2f} s "
              f"({', '.join(f'{t:.2f}' for t in times)}) | {plan.step_seconds / measured:.2f} |", flush=True)
        del model
    print(f"stated accuracy (runners.memory.STEP_TIME_ACCURACY): within {STEP_TIME_ACCURACY:.0%}")


def chunks_mode(args) -> None:
    from runners.losses import nll_from_hidden
    from runners.memory import bound_heap_retention

    bounded = bound_heap_retention()  # as the grid does when its plan is tight
    torch.manual_seed(0)
    V, C, N = 49152, 576, 4096
    W = torch.randn(V, C) * 0.02
    h0, y = torch.randn(1, N, C), torch.randint(0, V, (1, N))
    print(f"{N} tokens, width {C}, vocabulary {V}; torch threads {torch.get_num_threads()}; heap bounded "
          f"{bounded}; load average {os.getloadavg()[0]:.1f}")
    for chunk in (85, 170, 341, 1024, N):  # ascending: the peak so far is each size's own
        h = h0.clone().requires_grad_(True)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        nll_from_hidden(lambda x: F.linear(x, W), h, y, chunk).sum().backward()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        what = "whole logits" if chunk >= N else f"slices of {chunk} tokens ({chunk * V * 4 / 2**20:.0f} MiB of logits)"
        print(f"{what:42s} user {r1.ru_utime - r0.ru_utime:5.2f} s, system {r1.ru_stime - r0.ru_stime:5.2f} s, "
              f"wall {time.perf_counter() - t0:5.2f} s; peak RSS so far {r1.ru_maxrss / 1024:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("ratio")
    r.add_argument("--fixture-set", default="classics")
    r.add_argument("--fixtures", type=int, default=3)
    r.add_argument("--steps", type=int, default=20)
    r.add_argument("--batch-size", type=int, default=2)
    r.add_argument("--context", type=int, default=128)
    r.add_argument("--width", type=int, default=128)
    r.add_argument("--layers", type=int, default=4)
    r.add_argument("--dtype", default="float32", choices=list(DTYPES))
    r.add_argument("--heldout-docs", type=int, default=10, help="held-out documents per user scored (default 10)")
    c = sub.add_parser("scale")
    c.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    c.add_argument("--context", type=int, default=256)
    c.add_argument("--batch-size", type=int, default=4)
    mm = sub.add_parser("memory")
    mm.add_argument("--shapes", default="35m,135m,360m", help=f"comma-separated, of {', '.join(SHAPES)}")
    mm.add_argument("--max-memory", default="3GiB", help="the budget of each shape's second run (default 3GiB)")
    mm.add_argument("--runs", default="default,budget",
                    help="which runs per shape: default (the default budget), budget (--max-memory); default both")
    mm.add_argument("--work", default=None, help="working directory (default: a new temporary one); "
                                                  "checkpoints built there are reused")
    sub.add_parser("chunks")
    st = sub.add_parser("steptime")
    st.add_argument("--shapes", default="cpu,smoke,35m,135m", help="built-in presets and Llama shapes")
    st.add_argument("--steps", type=int, default=2, help="steps timed after a warm-up step (default 2)")
    st.add_argument("--batch-size", type=int, default=8)
    st.add_argument("--dtype", default="float32", choices=list(DTYPES))
    st.add_argument("--budget-gib", default="3", help="the plan's budget in GiB (default 3)")
    args = p.parse_args(argv)
    if args.mode == "steptime":
        steptime_mode(args)
    elif args.mode == "chunks":
        chunks_mode(args)
    elif args.mode == "ratio":
        ratio(args)
    elif args.mode == "memory":
        memory_mode(args)
    else:
        scale(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
