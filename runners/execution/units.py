"""The units of a grid that an executor runs (locally or as Ray tasks, runners.execution.executors): train one
seed's adapters, score a chunk of adapters on every user's held-out documents, build and score the
routing rows; each returns plain arrays and tables, and only the driver writes files."""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from runners import rundir
from runners.evaluate import doc_nll, mean_check_nll, per_doc
from runners.execution.prepare import Prepared, _doc_frame
from runners.model import GPT
from runners.routing import built_bank, ensemble_nll
from runners.train import TrainConfig, data_order, train_adapters

log = logging.getLogger("runners.grid")


def adapter_status(diverged: bool, own_nll: float, base_nll: float) -> str:
    if diverged or not np.isfinite(own_nll):
        return rundir.DIVERGED
    return rundir.WORSE_THAN_BASE if own_nll > base_nll else rundir.OK


# -- the grid's units: what an executor (runners.execution.executors) runs, in this process or as Ray tasks --

@dataclass(frozen=True)
class TrainUnit:
    """One seed's training: every adapter of the seed in one batched loop (its seed fixes everything)."""

    seed: int
    train: TrainConfig
    device: str
    micro_rows: int | None = None  # windows per forward/backward pass (the memory plan; None: the whole step)
    checkpointing: bool = False


@dataclass(frozen=True)
class Trained:
    """What a training unit returns: tensors and numbers, no model and no file."""

    states: list[dict[str, torch.Tensor]]  # per adapter, in `Prepared.names` order (CPU tensors)
    losses: np.ndarray  # (steps, A) training loss per step per adapter
    diverged: tuple[bool, ...]  # (A,)
    statuses: tuple[str, ...]  # (A,) health status: ok / worse_than_base / diverged
    train_s: float
    # per step count k of `TrainConfig.counts`: the bank after step k (CPU tensors) and its statuses
    snapshots: dict[int, list[dict[str, torch.Tensor]]] | None = None
    statuses_at: dict[int, tuple[str, ...]] | None = None


@dataclass(frozen=True)
class EvalUnit:
    """A chunk of one seed's evaluation: adapters `rows` (bank positions) on every user's held-out text."""

    seed: int
    rows: tuple[int, ...]
    device: str
    steps: int | None = None  # the step count whose snapshot is scored (None: the final bank)


@dataclass(frozen=True)
class Scored:
    docs: pl.DataFrame  # docs.parquet rows of the chunk's adapters, without the seed and steps columns
    eval_s: float
    steps: int | None = None
    # with `--routing`: (user adapter, eval user) -> (W, T) float32 per-token NLLs, for the `ens:` rows
    tokens: dict[tuple[str, str], torch.Tensor] | None = None


@dataclass(frozen=True)
class RoutingUnit:
    """A chunk of one seed's routing rows built as adapters (`avg:`, `noise:`), at one step count."""

    seed: int
    rows: tuple[str, ...]  # of `RoutingPlan.built_names`
    device: str
    steps: int | None = None


@dataclass(frozen=True)
class RoutingScored:
    docs: pl.DataFrame  # docs.parquet rows of the chunk's rows (noise: mean over the draws), no seed / steps
    build_s: float  # building the averaged and noisy adapters
    score_s: float  # scoring them
    steps: int | None = None


def train_unit(unit: TrainUnit, base: GPT, prep: Prepared) -> Trained:
    """Train every adapter of `unit.seed` in one batched loop and health-check each one."""
    torch.manual_seed(unit.seed)
    T = base.config.block_size
    orders = [data_order(unit.seed, k, len(st), T, unit.train) for k, st in enumerate(prep.streams)]
    log.info("seed %d: training %d adapters together (%d steps) ...", unit.seed, len(prep.names), unit.train.steps)
    t0 = time.perf_counter()
    with tqdm(total=unit.train.steps, desc=f"seed {unit.seed} train", file=sys.stderr,
              disable=not sys.stderr.isatty()) as bar:
        trained = train_adapters(base, prep.streams, orders, unit.train, unit.device, progress=bar,
                                 micro_rows=unit.micro_rows, checkpointing=unit.checkpointing)
    t_train = time.perf_counter() - t0
    model = trained.model  # frozen base + the bank just trained
    statuses_at, snaps = {}, {}
    for c in unit.train.counts:  # every snapshot health-checked with its own bank loaded
        snaps[c] = [{k: v.detach().cpu() for k, v in st.items()} for st in trained.snapshots[c]]
        model.load_adapter_bank([{k: v.to(unit.device) for k, v in st.items()} for st in trained.snapshots[c]])
        div = trained.diverged_at(c)
        statuses_at[c] = tuple(adapter_status(div[k], mean_check_nll(model, prep.checks[k], k + 1, unit.device),
                                              prep.base_check[k]) for k in range(len(prep.names)))
    last = unit.train.counts[-1]
    return Trained(snaps[last], trained.losses, trained.diverged, statuses_at[last], t_train, snaps, statuses_at)


def eval_unit(unit: EvalUnit, base: GPT, prep: Prepared, trained: Trained) -> Scored:
    """Score adapters `unit.rows` on every user's held-out documents.

    The adapters are loaded into a fresh copy of the base, a bank of just these rows: a row's
    forward pass gathers its own gains and never sees another row's, and every adapter is scored on
    the same windows in the same batches, so any chunking gives the NLLs of one bank bit for bit
    (tests/runners/test_ray.py checks it)."""
    t0 = time.perf_counter()
    states = trained.states if unit.steps is None else trained.snapshots[unit.steps]
    statuses = trained.statuses if unit.steps is None else trained.statuses_at[unit.steps]
    model = copy.deepcopy(base)
    model.attach_adapters(len(unit.rows))
    model.load_adapter_bank([states[k] for k in unit.rows])
    model.to(unit.device)
    keep = set(prep.routing.users) if prep.routing is not None else set()  # the `ens:` rows' inputs
    frames, tokens = [], {}
    for i, k in enumerate(unit.rows):
        for j, w in prep.windows.items():
            out = [] if prep.names[k] in keep else None
            frames.append(_doc_frame(prep.names[k], j, w, doc_nll(model, w, i + 1, unit.device, tokens=out),
                                     statuses[k]))
            if out is not None:
                tokens[(prep.names[k], j)] = torch.cat(out)
    return Scored(pl.concat(frames), time.perf_counter() - t0, unit.steps, tokens if keep else None)


def routing_unit(unit: RoutingUnit, base: GPT, prep: Prepared, trained: Trained) -> RoutingScored:
    """Build the `avg:` / `noise:` rows `unit.rows` from the seed's user adapters at `unit.steps` and
    score them on every user's held-out documents, through one bank as `eval_unit` scores; a
    `noise:` row's per-document NLL is the mean over its draws (runners.routing)."""
    plan = prep.routing
    t0 = time.perf_counter()
    states = trained.states if unit.steps is None else trained.snapshots[unit.steps]
    statuses = trained.statuses if unit.steps is None else trained.statuses_at[unit.steps]
    user_states = dict(zip(prep.names, states, strict=False))
    bank = built_bank(plan, unit.seed, {u: user_states[u] for u in plan.users}, unit.rows)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = copy.deepcopy(base)
    model.attach_adapters(len(bank))
    model.load_adapter_bank([st for _, st in bank])
    model.to(unit.device)
    status = prep.routing_statuses(statuses)
    frames = []
    for row in unit.rows:
        entries = [i for i, (r, _) in enumerate(bank) if r == row]
        for j, w in prep.windows.items():
            nll = np.mean([doc_nll(model, w, i + 1, unit.device) for i in entries], axis=0)
            frames.append(_doc_frame(row, j, w, nll, status[row]))
    return RoutingScored(pl.concat(frames), t_build, time.perf_counter() - t0, unit.steps)


def ensemble_frames(prep: Prepared, scored: list[Scored], statuses: tuple[str, ...]) -> list[pl.DataFrame]:
    """The `ens:<user>` rows of one step count from its scored chunks' per-token NLLs: on every
    user's held-out text, the mixture of every user adapter but `<user>` (runners.routing.ensemble_nll)."""
    plan = prep.routing
    tokens = {key: t for sc in scored for key, t in (sc.tokens or {}).items()}
    status = prep.routing_statuses(statuses)
    frames = []
    for left_out, row in zip(plan.users, plan.ens_names, strict=True):
        for j, w in prep.windows.items():
            mix = ensemble_nll([tokens[(u, j)] for u in plan.users if u != left_out])  # (W, T)
            frames.append(_doc_frame(row, j, w, per_doc(w, mix.sum(dim=1).numpy()), status[row]))
    return frames
