"""Norm-only adapter training: many adapters in one batched loop, each row gathering its own gains.

Adam's learning rate is constant (no schedule, no warm-up), and adapter a's window offsets for a
k-step run are the first k rows of its K-step offsets (`data_order`), so the bank after step k of a
K-step run IS a k-step run's bank: `TrainConfig.steps_list` snapshots it there
(`TrainedAdapters.snapshots`), and one training serves every listed step count
(tests/runners/test_steps.py proves it bit for bit).

The batched loop minimises sum_a mean-loss_a, so adapter a's gradient is exactly the gradient of
its own mean loss, and Adam is element-wise: the batched loop is the same computation as training
each adapter alone on the same windows (`train_adapters([one stream], ...)`), up to floating-point
summation order (benchmarks/bench_grid.py measures the difference).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from runners.data import sample_offsets, windows_at
from runners.losses import token_nll
from runners.memory import PROBE_REPEAT_S, PROBE_SECONDS, MemoryPlan, StepProbe, with_oom_retry
from runners.model import GPT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 100  # optimizer steps per adapter (the study's default)
    batch_size: int = 8  # windows of block_size tokens per adapter per step
    lr: float = 1e-2  # Adam learning rate for norm gains/biases: chosen by docs/lr_sweep.md
    # the step counts at which the bank is snapshotted and evaluated, ascending, the last == steps;
    # () means (steps,): one count (`runners.settings.parse_steps` builds it from `--steps`)
    steps_list: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.steps_list and (list(self.steps_list) != sorted(set(self.steps_list))
                                or self.steps_list[0] < 1 or self.steps_list[-1] != self.steps):
            raise ValueError(f"steps_list {self.steps_list} must be distinct ascending counts >= 1 ending at "
                             f"steps = {self.steps}")

    @property
    def counts(self) -> tuple[int, ...]:
        """The step counts snapshotted and evaluated: `steps_list`, or `(steps,)`."""
        return tuple(self.steps_list) or (self.steps,)

    def to_dict(self) -> dict:
        return {**asdict(self), "steps_list": list(self.counts)}


@dataclass(frozen=True)
class TrainedAdapters:
    states: list[dict[str, torch.Tensor]]  # one per adapter, `GPT.adapter_state` layout
    losses: np.ndarray  # (steps, A) training loss per step per adapter (nats/token)
    diverged: tuple[bool, ...]  # (A,) a non-finite loss was seen
    model: GPT  # the trained copy of the base: frozen base weights + the bank of A adapters
    # {k: the A adapter states after step k} for every k of `TrainConfig.counts` (the last is `states`)
    snapshots: dict[int, list[dict[str, torch.Tensor]]] | None = None

    def diverged_at(self, k: int) -> tuple[bool, ...]:
        """(A,) a non-finite loss in the first k steps, or a non-finite state at step k."""
        return _diverged(self.losses[:k], self.snapshots[k] if self.snapshots is not None else self.states)


def data_order(seed: int, adapter_number: int, stream_len: int, block_size: int, cfg: TrainConfig) -> np.ndarray:
    """(steps, batch_size) window offsets for one adapter: the seed's only source of randomness.

    `adapter_number` is the adapter's fixed position (users in set order, pooled last), so the
    same adapter sees the same windows whether trained in a batch or alone.
    """
    rng = np.random.default_rng([seed, adapter_number])
    return sample_offsets(rng, stream_len, block_size, cfg.steps * cfg.batch_size).reshape(cfg.steps, cfg.batch_size)


def adapter_loss(model: GPT, x: torch.Tensor, y: torch.Tensor, adapter_idx: torch.Tensor,
                 n_adapters: int, chunk: int | None = None) -> torch.Tensor:
    """(A,) mean next-token loss of each adapter's rows; rows are grouped by adapter, B per adapter.
    `chunk`: tokens per slice of the logits (runners.losses; None: all at once)."""
    nll = token_nll(model, x, y, adapter_idx, chunk)  # (A*B, T)
    return nll.view(n_adapters, -1).mean(dim=1)  # (A,)


def step_gradients(model: GPT, x: torch.Tensor, y: torch.Tensor, adapter_idx: torch.Tensor, n_adapters: int,
                   micro_rows: int | None = None, chunk: int | None = None) -> torch.Tensor:
    """Accumulate the gradient of sum_a mean-loss_a into the bank; returns the (A,) losses (detached).

    The A*B rows (grouped by adapter) go through `micro_rows` at a time (gradient accumulation over
    windows and over adapters: a micro-batch may hold part of one adapter's windows or several
    adapters'); each micro-batch adds its rows' summed NLL / (B*T) to its adapters' losses, so the
    gradient is that of one unsplit pass up to summation order (tests/runners/test_memory_plan.py). With
    `micro_rows` None or at least A*B, the step is the unsplit computation itself."""
    rows = len(x)
    if micro_rows is None or micro_rows >= rows:
        with model_routing(model, adapter_idx):
            loss = adapter_loss(model, x, y, adapter_idx, n_adapters, chunk)  # (A,)
            loss.sum().backward()
        return loss.detach()
    per_adapter = y.numel() // n_adapters  # B*T tokens of each adapter
    total = torch.zeros(n_adapters, dtype=torch.float32, device=x.device)
    for s in range(0, rows, micro_rows):
        idx = adapter_idx[s:s + micro_rows]
        with model_routing(model, idx):
            nll = token_nll(model, x[s:s + micro_rows], y[s:s + micro_rows], idx, chunk)  # (r, T)
            part = torch.zeros(n_adapters, dtype=nll.dtype, device=x.device).index_add(
                0, idx - 1, nll.sum(dim=1)) / per_adapter  # (A,)
            part.sum().backward()
        total += part.detach()
    return total


def model_routing(model, adapter_idx: torch.Tensor):
    """The model's per-row routing held over a forward AND its backward (a checkpointed HF layer
    recomputes its norms in the backward; runners.hf.model)."""
    routing = getattr(model, "routing", None)
    return routing(adapter_idx) if routing is not None else contextlib.nullcontext()


def train_adapters(base: GPT, streams: list[np.ndarray], orders: list[np.ndarray], cfg: TrainConfig,
                   device: str = "cpu", progress=None, micro_rows: int | None = None,
                   checkpointing: bool = False) -> TrainedAdapters:
    """Train len(streams) norm-only adapters on a frozen copy of `base`, all in one batch.

    streams[a]: (N_a,) tokens of adapter a's training text; orders[a]: (steps, B) window offsets.
    `micro_rows`: windows per forward/backward pass (runners.memory's plan; None: all A*B at once);
    `checkpointing`: recompute the blocks' activations in the backward. On a GPU, a step that runs
    out of memory is retried with half the micro-batch (runners.memory.with_oom_retry).
    """
    n = len(streams)
    model = copy.deepcopy(base).to(device)
    model.eval()  # no dropout anywhere; eval() only documents that
    if checkpointing:
        model.set_checkpointing(True)
    bank = model.attach_adapters(n)
    opt = torch.optim.Adam(bank, lr=cfg.lr)
    T = model.config.block_size
    chunk = getattr(model, "logit_chunk", None)
    adapter_idx = torch.arange(1, n + 1, device=device).repeat_interleave(cfg.batch_size)  # (A*B,)
    losses = np.zeros((cfg.steps, n))
    snapshot_at, snapshots = set(cfg.counts), {}
    rows = micro_rows or n * cfg.batch_size
    for step in range(cfg.steps):
        xs, ys = zip(*(windows_at(s, o[step], T) for s, o in zip(streams, orders, strict=True)), strict=True)
        x, y = torch.cat(xs).to(device), torch.cat(ys).to(device)  # (A*B, T)

        def attempt(r: int, x=x, y=y) -> torch.Tensor:
            opt.zero_grad(set_to_none=True)  # a failed attempt's partial gradients are dropped
            return step_gradients(model, x, y, adapter_idx, n, r, chunk)

        loss, rows = with_oom_retry(attempt, rows, on_retry=_retry_note)  # later steps keep the rows that fitted
        opt.step()
        losses[step] = loss.detach().cpu().double().numpy()
        if step + 1 in snapshot_at:  # cloned copies: later steps do not change them
            snapshots[step + 1] = [model.adapter_state(a) for a in range(n)]
        if progress is not None:
            progress.update(1)
    states = snapshots[cfg.steps]  # the last count is `steps`: its snapshot is the final bank
    return TrainedAdapters(states, losses, _diverged(losses, states), model, snapshots)


def _retry_note(rows: int, exc: BaseException) -> None:
    log.warning("out of memory on the GPU (%s): retrying the step with %d windows per micro-batch",
                str(exc).splitlines()[0][:200], rows)


def _diverged(losses: np.ndarray, states: list[dict[str, torch.Tensor]]) -> tuple[bool, ...]:
    """(A,) a non-finite loss among `losses` (steps, A), or a non-finite adapter state."""
    return tuple(not np.all(np.isfinite(losses[:, a])) or not all(bool(torch.isfinite(t).all()) for t in st.values())
                 for a, st in enumerate(states))


def pretrain(model: GPT, stream: np.ndarray, *, seed: int, steps: int, batch_size: int, lr: float,
             device: str = "cpu", progress=None) -> np.ndarray:
    """Train every weight of `model` in place on `stream` (AdamW, warm-up then cosine); (steps,) losses."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    T = model.config.block_size
    warmup = max(1, steps // 20)
    losses = np.zeros(steps)
    for step in range(steps):
        cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        scale = (step + 1) / warmup if step < warmup else 0.1 + 0.9 * cosine
        for g in opt.param_groups:
            g["lr"] = lr * scale
        x, y = windows_at(stream, sample_offsets(rng, len(stream), T, batch_size), T)
        logits = model(x.to(device))  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses[step] = loss.item()
        if progress is not None:
            progress.update(1)
        if (step + 1) % max(1, steps // 10) == 0:
            log.info("pretrain step %d/%d: loss %.3f nats/byte", step + 1, steps,
                     losses[max(0, step - 19):step + 1].mean())
    model.eval()
    return losses


# -- the plan's step time (runners.memory.estimate_step_seconds) ------------------------------------

def _micro_batch(model, rows: int, context: int, chunk: int | None, device: str) -> float:
    """Seconds of one training micro-batch (runners.train.step_gradients: forward, sliced loss,
    backward into adapter 1) on tokens from a private generator."""
    g = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    x = torch.randint(0, vocab, (rows, context), generator=g).to(device)
    y = torch.randint(0, vocab, (rows, context), generator=g).to(device)
    idx = torch.ones(rows, dtype=torch.long, device=device)
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step_gradients(model, x, y, idx, 1, None, chunk)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def probe_step(model, plan: MemoryPlan, device: str = "cpu") -> StepProbe:
    """Seconds per training micro-batch on `model`, a copy of the run's model (frozen weights, any
    values) whose bank it replaces, with the plan's slices and checkpointing: after a warm-up pass of
    one short window, micro-batches of 1, 4, 16, ... windows (at most the plan's `micro_rows`) until
    one takes PROBE_SECONDS; that size again, and the mean taken, when it took less than
    PROBE_REPEAT_S. A large model is thus timed on one window (a few seconds), a small one on the
    plan's own micro-batch. The global random state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        model.attach_adapters(1)
        model.to(device)
        model.logit_chunk = plan.logit_chunk
        if plan.checkpointing:
            model.set_checkpointing(True)
        _micro_batch(model, 1, min(plan.context, 32), plan.logit_chunk, device)
        rows = 1
        while True:
            secs = _micro_batch(model, rows, plan.context, plan.logit_chunk, device)
            if secs >= PROBE_SECONDS or rows >= plan.micro_rows:
                break
            rows = min(plan.micro_rows, 4 * rows)
        if secs < PROBE_REPEAT_S:
            secs = (secs + _micro_batch(model, rows, plan.context, plan.logit_chunk, device)) / 2
    return StepProbe(secs, rows)
