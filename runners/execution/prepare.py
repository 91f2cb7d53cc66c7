"""What a grid needs before its first step: the training sets (users, `pooled`, `loo:<user>`),
their encoded windows and health checks, and the memory plan (runners.memory) with its manifest record."""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from common.contract import BASE, POOLED, loo_name
from fixtures.corpus import FixtureSet
from runners import rundir
from runners.data import encode, eval_windows, training_stream
from runners.dtypes import DTYPES
from runners.evaluate import check_windows, doc_nll, mean_check_nll
from runners.memory import (
    SHARE,
    MemoryPlan,
    MemoryPlanError,
    available_bytes,
    bound_heap_retention,
    fmt,
    peak_rss_bytes,
    plan_memory,
    resident_bytes,
    shape_of,
    with_step_time,
)
from runners.model import GPT
from runners.routing import RoutingConfig, RoutingPlan, plan_routing
from runners.settings import GridSettings, UsageError
from runners.train import probe_step

log = logging.getLogger("runners.grid")


@dataclass(frozen=True)
class Prepared:
    """Per-run inputs shared by every seed."""

    names: tuple[str, ...]  # adapter names in bank order: users, then pooled, then loo:<user> in user order
    streams: list[np.ndarray]  # training token streams, same order
    checks: list[tuple[torch.Tensor, torch.Tensor]]  # health-check windows, same order
    base_check: tuple[float, ...]  # base mean NLL on each check set
    windows: dict  # eval user -> EvalWindows
    base_docs: pl.DataFrame  # base rows of docs.parquet without the seed column
    routing: RoutingPlan | None = None  # `--routing`: the rows built from the user adapters (runners.routing)

    @property
    def scored_names(self) -> tuple[str, ...]:
        """Every row scored besides `base`: the trained adapters, then the routing rows."""
        return self.names + (self.routing.names if self.routing is not None else ())

    def routing_statuses(self, statuses: tuple[str, ...]) -> dict[str, str]:
        """The routing rows' statuses from the trained adapters' (`RoutingPlan.status`); {} without them."""
        if self.routing is None:
            return {}
        by_name = dict(zip(self.names, statuses, strict=True))
        return {n: self.routing.status(n, by_name) for n in self.routing.names}


def training_sets(fs: FixtureSet, loo: bool = True) -> tuple[tuple[str, ...], list[tuple]]:
    """Adapter names in bank order and each one's training documents.

    Users in set order, then `pooled` (every user's text), then, with `loo`, `loo:<user>` for each
    user in set order (every OTHER user's text, in set order). A bank position fixes the adapter's
    data order (`runners.train.data_order`), so adding the loo controls leaves the user adapters'
    and `pooled`'s windows as they were.
    """
    names = [u.name for u in fs.users] + [POOLED]
    docs = [u.train for u in fs.users] + [tuple(d for u in fs.users for d in u.train)]
    if loo:
        for left_out in fs.users:
            names.append(loo_name(left_out.name))
            docs.append(tuple(d for u in fs.users if u.name != left_out.name for d in u.train))
    return tuple(names), docs


def prepare(base: GPT, fs: FixtureSet, device: str, encoder=None, loo: bool = True,
            routing: RoutingConfig | None = None) -> Prepared:
    """`encoder`: a `--model` checkpoint's tokenizer encoder (runners.hf.tokens); None: bytes.
    `loo`: also train the leave-one-out controls `loo:<user>` (`training_sets`); `routing`: also
    build and score the routing rows (runners.routing) with these settings."""
    T = base.config.block_size
    encoder = encoder or encode
    names, train_docs = training_sets(fs, loo)
    streams = [training_stream(d, encoder) for d in train_docs]
    checks = [check_windows(s, T) for s in streams]
    windows = {u.name: eval_windows(u.heldout, T, encoder) for u in fs.users}
    unique = distinct_checks(checks)  # e.g. with 2 users, loo:<a> trains on <b>'s text: the same windows
    n_windows = sum(len(w.x) for w in windows.values()) + sum(len(checks[i][0]) for i in unique.values())
    log.info("scoring the base model: %d windows of %d tokens (held-out text and health-check windows) ...",
             n_windows, T)
    t0 = time.perf_counter()
    with tqdm(total=n_windows, desc="base model scoring", unit="window", file=sys.stderr,
              disable=not sys.stderr.isatty()) as bar:
        scored = {}
        for key, i in unique.items():
            scored[key] = mean_check_nll(base, checks[i], 0, device)
            bar.update(len(checks[i][0]))
        base_check = tuple(scored[_check_key(c)] for c in checks)
        frames = [_doc_frame(BASE, j, w, doc_nll(base, w, 0, device, progress=bar), rundir.OK)
                  for j, w in windows.items()]
    log.info("base model scored in %.1f s", time.perf_counter() - t0)
    plan = None if routing is None else plan_routing([u.name for u in fs.users], routing)
    return Prepared(names, streams, checks, base_check, windows, pl.concat(frames), plan)


def _check_key(check: tuple[torch.Tensor, torch.Tensor]) -> str:
    x, y = check
    return hashlib.sha256(repr((tuple(x.shape), str(x.dtype))).encode() + x.numpy().tobytes()
                          + y.numpy().tobytes()).hexdigest()


def distinct_checks(checks: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, int]:
    """The distinct health-check window sets: content hash -> first position holding it. The base
    model is scored once per distinct set (the same windows, the same batches: the same numbers)."""
    out: dict[str, int] = {}
    for i, c in enumerate(checks):
        out.setdefault(_check_key(c), i)
    return out


def plan_run(s: GridSettings, fs: FixtureSet, hf=None) -> MemoryPlan:
    """The run's memory plan (runners.memory), before anything is trained or written; UsageError
    (exit 2) naming the budget, the estimate and what would fit when nothing fits."""
    names, _ = training_sets(fs, s.loo)
    if hf is None:  # the built-in model's shape, without its weights (loaded later, from the cache)
        with torch.device("meta"):
            model = GPT(s.model)
    else:
        model = hf.model
    shape = shape_of(model)
    if s.max_memory is not None:
        budget, source = s.max_memory, "--max-memory"
    else:
        avail, held = available_bytes(s.device), resident_bytes(s.device)
        budget = held + int(SHARE * avail)
        source = (f"default: {fmt(held)} held + {SHARE:.0%} of the {fmt(avail)} available"
                  + (" on the GPU" if s.device == "cuda" else ""))
    try:
        plan = plan_memory(shape, context=model.config.block_size, n_adapters=len(names),
                           batch_size=s.train.batch_size, budget=budget, resident=resident_bytes(s.device),
                           budget_source=source, device=s.device, weights_loaded=hf is not None)
    except MemoryPlanError as exc:
        raise UsageError(str(exc)) from None
    if plan.split or plan.logit_chunk < plan.micro_rows * plan.context:  # memory is tight: keep the heap in check
        bound_heap_retention()
    log.info("timing training micro-batches of the model to estimate a step ...")
    t0 = time.perf_counter()
    torch.set_num_threads(grid_threads())  # as the training will run
    if hf is None:  # the built-in model's shape with random weights (its own are loaded later)
        with torch.random.fork_rng(devices=[]):
            twin = GPT(s.model).cast_frozen(DTYPES[s.dtype])
    else:  # a copy sharing the checkpoint's frozen weights
        twin = copy.deepcopy(model)
    try:
        probe = probe_step(twin, plan, s.device)
    except RuntimeError as exc:  # e.g. a GPU out of memory: the run's own steps retry smaller (runners.train)
        log.warning("no step time estimate: timing a micro-batch failed (%s)", str(exc).splitlines()[0][:200])
        probe = None
    del twin
    plan = with_step_time(plan, shape, probe)
    log.info("step timed in %.1f s", time.perf_counter() - t0)
    return plan


def memory_record(plan: MemoryPlan, timings: list[dict], steps: int, resumed: list[int]) -> dict:
    """The manifest's `memory`: the plan, the measured time per step of the seeds this command
    trained (not those `resumed` or kept from an earlier command) and the peak resident memory."""
    trained = [t["train_s"] for t in timings
               if t.get("seed") not in resumed and not t.get("training_kept") and "train_s" in t]
    measured = sum(trained) / (len(trained) * steps) if trained and steps else None
    return {**plan.to_json(), "step_seconds_measured": measured, "peak_rss_bytes": peak_rss_bytes()}


def _doc_frame(adapter: str, eval_user: str, w, nll: np.ndarray, status: str) -> pl.DataFrame:
    return pl.DataFrame({"adapter": adapter, "eval": eval_user, "doc_id": list(w.doc_ids), "nll_sum": nll,
                         "n_tokens": list(w.n_tokens), "n_bytes": list(w.n_bytes), "status": status},
                        schema_overrides={"n_tokens": pl.Int64, "n_bytes": pl.Int64})


def grid_threads() -> int:
    """Every core, unless `OMP_NUM_THREADS` says otherwise (on a machine shared with other jobs one
    thread can be many times faster than two that wait for each other)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)
