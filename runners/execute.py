"""Running a grid: train every adapter of a seed in one batched loop, score every adapter on every
user's held-out documents, write the seed's files, resume finished seeds, assemble the run's tables.

For each seed, the user adapters, the `pooled` control (trained on the union of the users'
training text) and, unless `--no-loo`, one leave-one-out control `loo:<user>` per user (trained on
the union of every OTHER user's training text) train together on the frozen base model, all with
the same steps, batch and learning rate; then `base` and every trained adapter are scored on every
user's held-out documents. Results
land in `<out>/<run_id>/` (docs/formats.md); finished seeds are kept, so an interrupted command
resumes where it stopped when run again.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from common.contract import BASE, POOLED, loo_name, loo_user
from fixtures.corpus import FixtureSet
from runners import rundir
from runners.base_model import BaseModel, load_or_pretrain
from runners.data import encode, eval_windows, training_stream
from runners.dtypes import DTYPES
from runners.evaluate import check_windows, doc_nll, mean_check_nll
from runners.executors import LocalExecutor, chunks
from runners.model import GPT
from runners.provenance import build_manifest
from runners.settings import GridSettings, run_config
from runners.train import TrainConfig, data_order, train_adapters

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


def prepare(base: GPT, fs: FixtureSet, device: str, encoder=None, loo: bool = True) -> Prepared:
    """`encoder`: a `--model` checkpoint's tokenizer encoder (runners.hf.tokens); None: bytes.
    `loo`: also train the leave-one-out controls `loo:<user>` (`training_sets`)."""
    T = base.config.block_size
    encoder = encoder or encode
    names, train_docs = training_sets(fs, loo)
    streams = [training_stream(d, encoder) for d in train_docs]
    checks = [check_windows(s, T) for s in streams]
    windows = {u.name: eval_windows(u.heldout, T, encoder) for u in fs.users}
    base_check = tuple(mean_check_nll(base, c, 0, device) for c in checks)
    frames = [_doc_frame(BASE, j, w, doc_nll(base, w, 0, device), rundir.OK) for j, w in windows.items()]
    return Prepared(names, streams, checks, base_check, windows, pl.concat(frames))


def _doc_frame(adapter: str, eval_user: str, w, nll: np.ndarray, status: str) -> pl.DataFrame:
    return pl.DataFrame({"adapter": adapter, "eval": eval_user, "doc_id": list(w.doc_ids), "nll_sum": nll,
                         "n_tokens": list(w.n_tokens), "n_bytes": list(w.n_bytes), "status": status},
                        schema_overrides={"n_tokens": pl.Int64, "n_bytes": pl.Int64})


def adapter_status(diverged: bool, own_nll: float, base_nll: float) -> str:
    if diverged or not np.isfinite(own_nll):
        return rundir.DIVERGED
    return rundir.WORSE_THAN_BASE if own_nll > base_nll else rundir.OK


# -- the grid's units: what an executor (runners.executors) runs, in this process or as Ray tasks --

@dataclass(frozen=True)
class TrainUnit:
    """One seed's training: every adapter of the seed in one batched loop (its seed fixes everything)."""

    seed: int
    train: TrainConfig
    device: str


@dataclass(frozen=True)
class Trained:
    """What a training unit returns: tensors and numbers, no model and no file."""

    states: list[dict[str, torch.Tensor]]  # per adapter, in `Prepared.names` order (CPU tensors)
    losses: np.ndarray  # (steps, A) training loss per step per adapter
    diverged: tuple[bool, ...]  # (A,)
    statuses: tuple[str, ...]  # (A,) health status: ok / worse_than_base / diverged
    train_s: float


@dataclass(frozen=True)
class EvalUnit:
    """A chunk of one seed's evaluation: adapters `rows` (bank positions) on every user's held-out text."""

    seed: int
    rows: tuple[int, ...]
    device: str


@dataclass(frozen=True)
class Scored:
    docs: pl.DataFrame  # docs.parquet rows of the chunk's adapters, without the seed column
    eval_s: float


def train_unit(unit: TrainUnit, base: GPT, prep: Prepared) -> Trained:
    """Train every adapter of `unit.seed` in one batched loop and health-check each one."""
    torch.manual_seed(unit.seed)
    T = base.config.block_size
    orders = [data_order(unit.seed, k, len(st), T, unit.train) for k, st in enumerate(prep.streams)]
    log.info("seed %d: training %d adapters together (%d steps) ...", unit.seed, len(prep.names), unit.train.steps)
    t0 = time.perf_counter()
    with tqdm(total=unit.train.steps, desc=f"seed {unit.seed} train", file=sys.stderr,
              disable=not sys.stderr.isatty()) as bar:
        trained = train_adapters(base, prep.streams, orders, unit.train, unit.device, progress=bar)
    t_train = time.perf_counter() - t0
    model = trained.model  # frozen base + the bank just trained
    statuses = tuple(adapter_status(trained.diverged[k], mean_check_nll(model, prep.checks[k], k + 1, unit.device),
                                    prep.base_check[k]) for k in range(len(prep.names)))
    states = [{k: v.detach().cpu() for k, v in st.items()} for st in trained.states]
    return Trained(states, trained.losses, trained.diverged, statuses, t_train)


def eval_unit(unit: EvalUnit, base: GPT, prep: Prepared, trained: Trained) -> Scored:
    """Score adapters `unit.rows` on every user's held-out documents.

    The adapters are loaded into a fresh copy of the base, a bank of just these rows: a row's
    forward pass gathers its own gains and never sees another row's, and every adapter is scored on
    the same windows in the same batches, so any chunking gives the NLLs of one bank bit for bit
    (tests/test_runner_ray.py checks it)."""
    t0 = time.perf_counter()
    model = copy.deepcopy(base)
    model.attach_adapters(len(unit.rows))
    model.load_adapter_bank([trained.states[k] for k in unit.rows])
    model.to(unit.device)
    frames = [_doc_frame(prep.names[k], j, w, doc_nll(model, w, i + 1, unit.device), trained.statuses[k])
              for i, k in enumerate(unit.rows) for j, w in prep.windows.items()]
    return Scored(pl.concat(frames), time.perf_counter() - t0)


@dataclass(frozen=True)
class SeedResult:
    trained: Trained
    statuses: tuple[str, ...]  # per adapter, in `Prepared.names` order
    docs: pl.DataFrame  # docs.parquet rows of this seed (base rows included)
    train_s: float
    eval_s: float


def submit_seed(executor, seed: int, prep: Prepared, shared: tuple, train: TrainConfig, device: str) -> tuple:
    """Submit one seed's units: its training, then its evaluation in `executor.parallelism` chunks of
    adapter rows, each chunk fed the training's result. `shared`: (base model, `prep`) as handles
    from `executor.put`, so they are shipped once, not once per unit."""
    trained = executor.submit(train_unit, TrainUnit(seed, train, device), *shared)
    return trained, [executor.submit(eval_unit, EvalUnit(seed, rows, device), *shared, trained)
                     for rows in chunks(len(prep.names), executor.parallelism)]


def collect_seed(executor, seed: int, prep: Prepared, job: tuple) -> SeedResult:
    """Wait for a seed's units and assemble its docs.parquet rows (base rows first, then adapter order)."""
    trained_h, scored_h = job
    trained, *scored = executor.get([trained_h, *scored_h])
    docs = pl.concat([prep.base_docs, *(sc.docs for sc in scored)]).with_columns(pl.lit(seed, pl.Int64).alias("seed"))
    return SeedResult(trained, trained.statuses, rundir.with_rates(docs).select(list(rundir.DOC_SCHEMA)),
                      trained.train_s, sum(sc.eval_s for sc in scored))


def train_and_score(seed: int, base: GPT, prep: Prepared, train: TrainConfig, device: str,
                    executor=None) -> SeedResult:
    """Train every adapter of one seed in one batched loop, then score all of them on every user."""
    executor = executor or LocalExecutor()
    shared = (executor.put(base), executor.put(prep))
    return collect_seed(executor, seed, prep, submit_seed(executor, seed, prep, shared, train, device))


def run_seed(seed: int, base: BaseModel, prep: Prepared, s: GridSettings, run_dir: Path, hf=None,
             result: SeedResult | None = None) -> dict:
    """Train and evaluate one seed (or take its `result` from an executor); write its files (done.json
    last), here in the driver only. Returns its timings.

    `hf`: the `--model` checkpoint (runners.hf.load.HFCheckpoint); its adapters are also written as
    PEFT LN_TUNING directories under `peft/seed-<seed>/`."""
    r = result or train_and_score(seed, base.model, prep, s.train, s.device)
    model_meta = s.model.to_dict() if hf is None else hf_backend().adapter_meta(hf)
    for k, name in enumerate(prep.names):
        _save_adapter(adapter_path(run_dir, seed, name), r.trained.states[k],
                      {"seed": seed, "adapter": name, "status": r.statuses[k], "model": model_meta,
                       "train": s.train.to_dict(), "base_model_sha256": base.sha256})
    if hf is not None:
        hf_backend().write_peft_adapters(run_dir, seed, prep.names, r.trained.states, hf,
                                         {"seed": seed, "train": s.train.to_dict(), "base_model_sha256": base.sha256})
    log_rows = pl.DataFrame({"seed": seed, "adapter": np.repeat(prep.names, s.train.steps).tolist(),
                             "step": np.tile(np.arange(s.train.steps), len(prep.names)),
                             "loss": r.trained.losses.T.reshape(-1)}, schema=rundir.LOG_SCHEMA)
    seed_dir = run_dir / "seeds" / f"seed-{seed}"
    rundir.write_parquet(r.docs, seed_dir / "docs.parquet")
    rundir.write_parquet(log_rows, seed_dir / "train_log.parquet")
    written = [adapter_path(run_dir, seed, name) for name in prep.names]
    written += [seed_dir / "docs.parquet", seed_dir / "train_log.parquet"]
    timing = {"seed": seed, "train_s": r.train_s, "eval_s": r.eval_s,
              "statuses": dict(zip(prep.names, r.statuses, strict=True)),
              "base_model_sha256": base.sha256, "files": rundir.file_hashes(run_dir, written)}
    rundir.write_json(timing, seed_dir / "done.json")
    log.info("seed %d: done (trained in %.1f s, evaluated in %.1f s); statuses: %s", seed, r.train_s, r.eval_s,
             ", ".join(f"{n}={st}" for n, st in zip(prep.names, r.statuses, strict=True)))
    return timing


def adapter_path(run_dir: Path, seed: int, name: str) -> Path:
    """`adapters/seed-<k>/<user|pooled>.safetensors`; `loo:<user>` -> `adapters/seed-<k>/loo/<user>.safetensors`
    (no ':' in a file name: artifact uploaders and some file systems refuse it)."""
    left_out = loo_user(name)
    seed_dir = run_dir / "adapters" / f"seed-{seed}"
    return seed_dir / "loo" / f"{left_out}.safetensors" if left_out is not None else seed_dir / f"{name}.safetensors"


def _save_adapter(path: Path, state: dict[str, torch.Tensor], meta: dict) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    rundir.atomic_write_with(path, lambda p: save_file(tensors, p, metadata={"config": json.dumps(meta)}))


def hf_backend():
    """runners.hf.backend, imported only for a `--model` run (transformers is an optional extra)."""
    from runners.hf import backend

    return backend


def run_grid(fs: FixtureSet, s: GridSettings, *, on_seed_done=None, hf=None, executor=None) -> Path:
    """Run (or resume) the grid for fixture set `fs`; returns the run directory.

    `hf`: the loaded `--model` checkpoint (runners.hf.backend.open_checkpoint), the base model then.
    `executor`: where the units run (runners.executors; default: this process). It is not part of
    the run's configuration: the results do not depend on it, and a run resumes with either."""
    t_start = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    config = run_config(s, fs, None if hf is None else hf_backend().run_config_part(hf))
    label = s.preset if hf is None else hf.path.resolve().name
    run_dir = s.out / rundir.run_id(config, f"{Path(fs.name).name}-{label}")
    with rundir.RunLock(run_dir):
        rundir.write_json(config, run_dir / "config.json")
        t0 = time.perf_counter()
        if hf is None:
            base = load_or_pretrain(s.model, s.pretrain, fs.pretrain, fs.pretrain_sha256(), device=s.device,
                                    dtype=DTYPES[s.dtype])
        else:
            base = hf_backend().as_base_model(hf)
        t_base = time.perf_counter() - t0
        base.model.to(s.device)
        t0 = time.perf_counter()
        if not s.loo:
            log.warning("--no-loo: the leave-one-out controls loo:<user> are not trained; the verdict cannot "
                        "split pooled's gain into what a new user gets and what comes from having seen the user")
        prep = prepare(base.model, fs, s.device, None if hf is None else hf.encoder, loo=s.loo)
        t_base_eval = time.perf_counter() - t0
        timings, resumed, kept = [], [], {}
        for seed in s.seeds:
            done = run_dir / "seeds" / f"seed-{seed}" / "done.json"
            if done.exists():
                record, problem = rundir.seed_problem(run_dir, done)
                if problem:  # verified against the hashes recorded when the seed was written
                    log.warning("seed %d: %s: redone", seed, problem)
                elif record.get("base_model_sha256") == base.sha256:
                    kept[seed] = record
                    log.info("seed %d: already done, kept", seed)
                else:
                    # the base model was rebuilt since (cache evicted, corrupt, other device): a
                    # kept seed would mix two base models in one run
                    log.warning("seed %d: done with base model %s, now %s: redone", seed,
                                str(record.get("base_model_sha256"))[:12], base.sha256[:12])
        # every seed still to do is submitted at once (a Ray executor runs them side by side; the
        # local one runs each when collected); the driver writes the seeds in order as they finish
        executor = executor or LocalExecutor()
        shared = (executor.put(base.model), executor.put(prep))
        jobs = {seed: submit_seed(executor, seed, prep, shared, s.train, s.device)
                for seed in s.seeds if seed not in kept}
        for seed in s.seeds:
            if seed in kept:
                resumed.append(seed)
                timings.append(kept[seed])
                continue
            result = collect_seed(executor, seed, prep, jobs.pop(seed))
            timings.append(run_seed(seed, base, prep, s, run_dir, hf, result))
            if on_seed_done is not None:
                on_seed_done(seed)
        docs = pl.concat([rundir.read_seed_table(run_dir / "seeds" / f"seed-{k}" / "docs.parquet") for k in s.seeds])
        logs = pl.concat([rundir.read_seed_table(run_dir / "seeds" / f"seed-{k}" / "train_log.parquet")
                          for k in s.seeds])
        rundir.write_parquet(docs, run_dir / "docs.parquet")
        rundir.write_parquet(rundir.cells_from_docs(docs), run_dir / "cells.parquet")
        rundir.write_parquet(logs, run_dir / "train_log.parquet")
        wall = {"base_model_s": t_base, "base_eval_s": t_base_eval, "seeds": timings, "resumed_seeds": resumed,
                "total_s": time.perf_counter() - t_start}
        manifest = build_manifest(config, s, fs, base, run_dir, wall,
                                  extra_versions=None if hf is None else hf_backend().versions())
        rundir.write_json(manifest.to_json(), run_dir / "manifest.json")
        rundir.point_latest(s.out, run_dir)
    return run_dir
