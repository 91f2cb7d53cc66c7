"""The memory plan of a grid run: how a training step and a scoring pass are split to fit a budget.

Before the first step, `plan_memory` estimates the peak bytes of the run from the model's shape,
the context, the dtype and the number of adapters:

- fixed: what the process holds already (its resident memory when the plan is made, the frozen
  weights included once loaded), plus the weights still to be loaded and the built-in model's
  copies for training and scoring (a `--model` checkpoint's copies share its weights);
- the banks: each adapter's parameters, gradient and Adam moments, float32;
- activations: what autograd keeps per window of `context` tokens for the backward
  (`ACT_FLOATS`: per token and layer, (6 C + 4 F + H T) float32 values, an upper bound of what
  torch's saved-tensor hooks measured for the built-in GPT (74 C bytes at F = 4C) and a Llama
  layer (47.7 KB at C = 576, F = 1536, T = 512)); with gradient checkpointing, one layer's
  activations plus every layer's input;
- logits: never all at once (runners.losses): `logit_chunk` tokens of float32 logits, their
  softmax and their gradient at a time.

It then chooses the windows per forward/backward pass (`micro_rows`: gradient accumulation over
windows and over adapters, runners.train.step_gradients) so that the estimate stays within the
budget, switches to gradient checkpointing only when even one window would not fit, and refuses
(`MemoryPlanError`, exit 2) when nothing fits, naming the budget, the estimate and what would fit.
On a CPU a micro-batch holds at most `CPU_ACTIVATION_CAP` of activations: more windows per pass
cost memory without making the matrix multiplies of a window of hundreds of tokens faster.
A plan with `micro_rows` equal to all rows of a step and `logit_chunk` covering them is the
unsplit computation, bit for bit (the built-in default study's cells do not change).

`--max-memory SIZE` (`parse_size`) sets the budget; by default it is the resident memory plus
`SHARE` of the memory available (cgroup limit or /proc/meminfo MemAvailable; on a GPU, its free
memory).

The time of a step is measured on the model itself rather than derived from a matmul peak:
`runners.train.probe_step` times training micro-batches (the plan's slices and checkpointing; forward, sliced
loss and backward, element-wise work included) on a copy of the model, growing from one window
until a pass takes a second, and a step is `micro_batches` x `micro_rows` x that per window
(`estimate_step_seconds`). `step_flops` counts what the step computes (recorded with the effective
throughput the probe implies); `STEP_TIME_ACCURACY` is how close the estimate came to measured
steps. Everything here but `available_bytes`, `resident_bytes` and `peak_rss_bytes` is pure.
"""

from __future__ import annotations

import math
import os
import re
import resource
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch

GIB, MIB = 1 << 30, 1 << 20
SHARE = 0.5  # the default budget: resident memory + this share of the memory available
CPU_ACTIVATION_CAP = 2 * GIB  # activations of one micro-batch at most, on a CPU
LOGIT_CHUNK_BYTES = 128 * MIB  # float32 logits, log-softmax, their gradients of one chunk: 32 MiB of logits
# at most, which glibc keeps on its heap (larger blocks are mmapped and zeroed by the kernel anew each time)
MARGIN = 1.15  # on the planned (dynamic) part: allocator slack, transient buffers of the backward
EVAL_BATCH_MAX = 64  # windows per scoring pass at most (runners.evaluate.EVAL_BATCH)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": MIB, "mb": 10**6, "mib": MIB,
          "g": GIB, "gb": 10**9, "gib": GIB, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}


class MemoryPlanError(ValueError):
    """A `--max-memory` that cannot be read, or a run that cannot fit it (the message says what would)."""


def parse_size(text: str, flag: str = "--max-memory") -> int:
    """Bytes of `3GiB`, `500MiB`, `2.5G`, `4096M`, `1e9` (binary K/M/G/T without `B`; `GB` is 10^9)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise MemoryPlanError(f"`{flag} {text}`: give a size such as 3GiB, 500MiB or 2.5G "
                              "(units B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB)")
    n = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(n) or n < 64 * MIB:
        raise MemoryPlanError(f"`{flag} {text}`: at least 64MiB (the interpreter alone needs more)")
    return int(n)


def fmt(n: float) -> str:
    """Bytes in words: `1.2 GiB`, `350 MiB`."""
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB else f"{n / MIB:.0f} MiB"


# -- what the machine says ------------------------------------------------------------------

def _cgroup_free() -> int | None:
    """Bytes the process's cgroup (v2 or v1) may still take, where it sets a limit."""
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         (v1 + "limit_in_bytes", v1 + "usage_in_bytes")):
        try:
            lim = open(limit, encoding="ascii").read().strip()
            if lim == "max" or int(lim) >= 1 << 60:
                return None
            return max(0, int(lim) - int(open(usage, encoding="ascii").read().strip()))
        except (OSError, ValueError):
            continue
    return None


def available_bytes(device: str = "cpu") -> int:
    """Memory available now: a GPU's free memory; else MemAvailable, or less where a cgroup says so."""
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    from common.limits import available_memory

    avail, cg = available_memory(), _cgroup_free()
    return min(avail, cg) if cg is not None else avail


def resident_bytes(device: str = "cpu") -> int:
    """What this process holds now: its resident set (on a GPU: the memory torch has allocated)."""
    if device == "cuda":
        return int(torch.cuda.memory_allocated())
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The process's peak resident set so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


MMAP_THRESHOLD = 4 * MIB  # blocks from this size on are mapped and unmapped, not kept on glibc's heap


def bound_heap_retention(threshold: int = MMAP_THRESHOLD) -> bool:
    """Have glibc's malloc map every block of `threshold` bytes or more on its own and give it back
    when freed (`mallopt(M_MMAP_THRESHOLD)`, which also stops the threshold from growing).

    Without it, the blocks of a sliced loss and of micro-batches (tens of MiB, allocated and freed
    over and over) stay on the heap, which grew by about 780 MiB over one forward and backward of
    4,096 tokens in 170-token slices (`benchmarks/bench_hf.py chunks` shapes) instead of 27 MiB:
    resident memory the plan could not bound. Costs some system time (pages are zeroed anew).
    False where the C library has no `mallopt` (not glibc): nothing changed."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False


def default_budget(device: str = "cpu") -> int:
    return resident_bytes(device) + int(SHARE * available_bytes(device))


# -- the plan (pure) --------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a model (`shape_of`)."""

    weight_bytes: int  # frozen weights (and buffers) as held, once
    weight_copies: int  # copies held at once (the built-in GPT's training or scoring copy: 2; HF shares: 1)
    n_layer: int
    width: int  # C
    ffn: int  # F, the MLP's inner width
    n_head: int
    vocab: int
    adapter_params: int  # parameters of ONE adapter
    fused_head: bool  # the logits are formed from hidden states in chunks (else held whole per pass)
    block_flops_token: float  # forward FLOPs per token of every block's matrix multiplies (2 x their weights)
    head_flops_token: float  # forward FLOPs per token of the output layer (2 C V)
    attn_width: int = 0  # heads x head width of the attention (C where 0)


def act_floats(s: ModelShape, context: int) -> float:
    """float32 values autograd keeps per token and layer while training (upper bound, module doc)."""
    return 6 * s.width + 4 * s.ffn + s.n_head * context


@dataclass(frozen=True)
class MemoryPlan:
    """How the run's steps and scoring passes are split, and what that is estimated to hold."""

    budget_bytes: int
    budget_source: str  # `--max-memory` or `default: ...`
    fixed_bytes: int  # resident now + weights still to load / copies
    weights_bytes: int
    bank_bytes: int  # adapter banks: parameters, gradients, Adam moments
    activation_bytes_per_window: int  # autograd's saved tensors of one training window
    logit_chunk: int  # tokens per slice of the logits
    logit_bytes: int  # one slice's logits, softmax and gradient
    rows: int  # windows of one training step (adapters x batch)
    micro_rows: int  # windows per forward/backward pass
    micro_batches: int  # passes per step
    checkpointing: bool
    train_peak_bytes: int  # estimated peak while training
    eval_batch: int  # windows per scoring pass
    eval_peak_bytes: int  # estimated peak while scoring
    context: int
    n_adapters: int
    step_flops: float = 0.0  # step_flops(...).total
    throughput_flops_s: float = 0.0  # step_flops / step_seconds: the effective throughput the probe measured
    step_seconds: float = 0.0  # estimated seconds of a training step (estimate_step_seconds; 0: not probed)

    @property
    def peak_bytes(self) -> int:
        return max(self.train_peak_bytes, self.eval_peak_bytes)

    @property
    def split(self) -> bool:
        return self.micro_rows < self.rows

    def to_json(self) -> dict:
        return {**asdict(self), "peak_bytes": self.peak_bytes}

    def line(self) -> str:
        """The one line the grid prints before the first step."""
        how = (f"{self.micro_batches} micro-batches of {self.micro_rows} windows" if self.split
               else f"all {self.rows} windows in one pass")
        ck = ", gradient checkpointing" if self.checkpointing else ""
        secs = f"{self.step_seconds:.1f}" if self.step_seconds >= 1 else f"{self.step_seconds:.2g}"
        t = (f"; a step takes about {secs} s (within {STEP_TIME_ACCURACY:.0%} where measured: "
             f"{self.step_flops / 1e9:,.1f} GFLOP at the {self.throughput_flops_s / 1e9:,.1f} GFLOP/s a timed "
             "micro-batch of this model ran at)" if self.step_seconds else "")
        return (f"memory plan: peak about {fmt(self.peak_bytes)} of a {fmt(self.budget_bytes)} budget "
                f"({self.budget_source}; weights {fmt(self.weights_bytes)}, {fmt(self.activation_bytes_per_window)} "
                f"per training window): a step of {self.n_adapters} adapters trains {how}{ck}, logits in slices "
                f"of {self.logit_chunk} tokens, {self.eval_batch} windows per scoring pass{t}")


def plan_memory(shape: ModelShape, *, context: int, n_adapters: int, batch_size: int, budget: int,
                resident: int, budget_source: str = "--max-memory", device: str = "cpu",
                weights_loaded: bool = True) -> MemoryPlan:
    """The split of a step of `n_adapters` x `batch_size` windows of `context` tokens that fits
    `budget` bytes, given `resident` bytes held now (MemoryPlanError when nothing fits)."""
    rows = n_adapters * batch_size
    w = shape.weight_bytes
    fixed = resident + (0 if weights_loaded else w) + (shape.weight_copies - 1) * w
    bank = n_adapters * shape.adapter_params * 4 * 4
    chunk = max(1, LOGIT_CHUNK_BYTES // (16 * shape.vocab))
    # without a fused head a window's logits are whole
    logit_tokens = min(chunk, rows * context) if shape.fused_head else context
    logits = 16 * shape.vocab * logit_tokens
    hid = 2 * 4 * context * max(shape.width, 1)  # a window's final hidden states and their gradient
    full = int(4 * act_floats(shape, context) * context * shape.n_layer) + hid
    # checkpointing keeps every layer's input and one layer's activations
    ckpt = int(4 * context * (shape.width * shape.n_layer + act_floats(shape, context))) + hid
    room = budget - fixed - bank - MARGIN * logits
    cap = CPU_ACTIVATION_CAP if device == "cpu" else math.inf

    def fit(per_window: int) -> int:
        if room < per_window * MARGIN:
            return 0
        return max(1, int(min(room, cap) // (per_window * MARGIN)))  # one window even past the CPU cap

    checkpointing, per_window = False, full
    r = min(rows, fit(full))
    if r < 1:
        checkpointing, per_window = True, ckpt
        r = min(rows, fit(ckpt))
    if r < 1:
        need = fixed + bank + MARGIN * (logits + ckpt)
        raise MemoryPlanError(_refusal(budget, budget_source, need, fixed, shape, context))
    m = math.ceil(rows / r)
    r = math.ceil(rows / m)  # even micro-batches
    train_peak = int(fixed + bank + MARGIN * (r * per_window + logits))
    # scoring (no autograd): a layer's transient buffers and the hidden states per window
    eval_window = int(4 * context * (4 * shape.width + 3 * shape.ffn + 2 * shape.n_head * context)) + hid
    eval_room = budget - fixed - MARGIN * logits
    eb = int(min(EVAL_BATCH_MAX, max(1, min(eval_room, cap) // (eval_window * MARGIN))))
    eval_peak = int(fixed + MARGIN * (eb * eval_window + logits))
    return MemoryPlan(budget, budget_source, int(fixed), w, bank, per_window, chunk, logits, rows, r, m,
                      checkpointing, train_peak, eb, eval_peak, context, n_adapters)


def _refusal(budget: int, source: str, need: float, fixed: int, shape: ModelShape, context: int) -> str:
    fits = [c for c in (2048, 1024, 512, 256, 128, 64, 32) if c < context]
    shorter = next((c for c in fits if fixed + MARGIN * (4 * c * (shape.width * shape.n_layer + act_floats(shape, c))
                                                           + 16 * shape.vocab * c) <= budget), None)
    hint = f"`--context {shorter}` would fit, " if shorter else ""
    return (f"`--max-memory`: the run needs about {fmt(need)} even with one window per micro-batch and gradient "
            f"checkpointing (the model and what the process holds already: {fmt(fixed)}), more than its budget of "
            f"{fmt(budget)} ({source}); {hint}or raise `--max-memory` to at least {fmt(need * 1.05)} "
            "(a smaller `--dtype` holds the weights in less)")


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step (`step_flops`), by part; `total` is their sum."""

    blocks: float  # the blocks' matrix multiplies: forward + the input gradients of the backward
    attention: float  # scores and values: forward + backward (dQ, dK, dV and the scores' gradient)
    head: float  # the output layer: logits + their gradient with respect to the hidden states
    recompute: float  # gradient checkpointing: the blocks' forward once more (0 without)

    @property
    def total(self) -> float:
        return self.blocks + self.attention + self.head + self.recompute


def step_flops(shape: ModelShape, *, rows: int, context: int, checkpointing: bool) -> StepFlops:
    """FLOPs of a norm-only training step of `rows` windows of `context` tokens (pure).

    Per token, with the frozen weights needing no gradient: the blocks' matmuls forward (2 x their
    weights) and the backward's input gradients (as much again); attention's scores and values
    forward (2 x 2 x context x attention width per layer, counted in full as nanoGPT does) and
    backward (twice that); the output layer forward and its input gradient (2 x 2 C V; the sliced
    loss takes it in the same pass, runners.losses, and recomputes nothing); with checkpointing,
    the blocks' forward again. Element-wise work (norms, activations, softmax) is not counted: the
    time estimate measures it (`runners.train.probe_step`)."""
    tokens = rows * context
    attn_fwd = 4.0 * shape.n_layer * context * (shape.attn_width or shape.width)
    blocks = 2.0 * shape.block_flops_token * tokens
    attention = 3.0 * attn_fwd * tokens
    head = 2.0 * shape.head_flops_token * tokens
    recompute = (shape.block_flops_token + attn_fwd) * tokens if checkpointing else 0.0
    return StepFlops(blocks, attention, head, recompute)


@dataclass(frozen=True)
class StepProbe:
    """Seconds of a training micro-batch of `rows` windows on the model (`runners.train.probe_step`)."""

    seconds: float
    rows: int


PROBE_SECONDS = 1.0  # the probed micro-batch grows (1, 4, 16, ... windows, up to the plan's) until it takes this long
PROBE_REPEAT_S = 10.0  # a probe shorter than this is timed twice (the mean is taken)

# The estimate's accuracy, measured: |estimate / measured step time - 1| at most this (0.87 to 1.15)
# over the built-in `cpu` preset and the smoke / 35M / 135M Llama shapes (`benchmarks/bench_hf.py
# steptime`, 2026-12-07; docs/own_model.md)
STEP_TIME_ACCURACY = 0.15


def estimate_step_seconds(probe: StepProbe, plan: MemoryPlan) -> float:
    """A step's seconds (pure): `micro_batches` passes of `micro_rows` windows, each window taking
    what a window of the probed micro-batch took."""
    return plan.micro_batches * probe.seconds * plan.micro_rows / probe.rows


def with_step_time(plan: MemoryPlan, shape: ModelShape, probe: StepProbe | None) -> MemoryPlan:
    """`plan` with its step's FLOPs and estimated seconds (`estimate_step_seconds`; 0 without a
    probe), and the effective throughput that makes (FLOPs / seconds)."""
    flops = step_flops(shape, rows=plan.rows, context=plan.context, checkpointing=plan.checkpointing).total
    secs = estimate_step_seconds(probe, plan) if probe is not None else 0.0
    return replace(plan, step_flops=flops, step_seconds=secs, throughput_flops_s=flops / secs if secs > 0 else 0.0)


# -- the model's side ---------------------------------------------------------------------------

def _matmul_weights(model, head) -> int:
    """Weights of the model's matrix multiplies other than the output layer `head` (Linear, and
    GPT-2's Conv1D projections)."""
    return sum(m.weight.numel() for m in model.modules()
               if m is not head and (isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"))


def shape_of(model, weight_copies: int | None = None) -> ModelShape:
    """The plan's view of a built-in `GPT` (also on the meta device) or a `HFAdapterLM`."""
    seen, wbytes = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            wbytes += t.numel() * t.element_size()
    hf = getattr(model, "hf", None)
    if hf is None:  # the built-in GPT
        c = model.config
        width, ffn, layers, heads, vocab = c.n_embd, 4 * c.n_embd, c.n_layer, c.n_head, c.vocab_size
        copies, fused, attn, head = 2 if weight_copies is None else weight_copies, True, c.n_embd, model.lm_head
    else:
        c = hf.config
        width = getattr(c, "hidden_size", None) or getattr(c, "n_embd", 0)
        ffn = (getattr(c, "intermediate_size", None) or getattr(c, "ffn_dim", None) or getattr(c, "n_inner", None)
               or 4 * width)
        layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", 0)
        heads = getattr(c, "num_attention_heads", None) or getattr(c, "n_head", 1)
        head_dim = getattr(c, "head_dim", None) or width // max(heads, 1)
        vocab, attn, head = model.config.vocab_size, heads * head_dim, hf.get_output_embeddings()
        copies, fused = 1 if weight_copies is None else weight_copies, bool(getattr(model, "fused_head", False))
    return ModelShape(wbytes, copies, int(layers), int(width), int(ffn), int(heads), int(vocab),
                      int(model.n_adapter_params()), fused, 2.0 * _matmul_weights(model, head),
                      float(2 * width * vocab), int(attn))


def apply_plan(model, plan: MemoryPlan) -> None:
    """Scoring passes of `plan.eval_batch` windows and logits in slices of `plan.logit_chunk` tokens."""
    model.eval_batch = plan.eval_batch
    model.logit_chunk = plan.logit_chunk


# -- a GPU that runs out of memory anyway ------------------------------------------------------

def is_cuda_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return oom is not None and isinstance(exc, oom)


def with_oom_retry(run: Callable[[int], object], rows: int, is_oom: Callable[[BaseException], bool] = is_cuda_oom,
                   on_retry: Callable[[int, BaseException], None] | None = None) -> tuple[object, int]:
    """`run(rows)`; while it raises an out-of-memory error (`is_oom`), again with half the rows
    (at least 1; the error is raised when 1 row does not fit). Returns (result, rows that worked)."""
    while True:
        try:
            return run(rows), rows
        except Exception as exc:
            if rows <= 1 or not is_oom(exc):
                raise
            rows = max(1, rows // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if on_retry is not None:
                on_retry(rows, exc)
