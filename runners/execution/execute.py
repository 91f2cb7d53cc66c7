"""Running a grid: train every adapter of a seed in one batched loop, score every adapter on every
user's held-out documents, write the seed's files, resume finished seeds, assemble the run's tables.

For each seed, the user adapters, the `pooled` control (trained on the union of the users'
training text) and, unless `--no-loo`, one leave-one-out control `loo:<user>` per user (trained on
the union of every OTHER user's training text) train together on the frozen base model, all with
the same steps, batch and learning rate; then `base` and every trained adapter are scored on every
user's held-out documents, and with `--routing` the rows built from the user adapters
(runners.routing: `avg:`, `ens:`, `noise:`) at every step count. Results
land in `<out>/<run_id>/` (docs/formats.md); finished seeds are kept, so an interrupted command
resumes where it stopped when run again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file

from common import seal
from fixtures.corpus import FixtureSet
from runners import rundir, snapshots
from runners.base_model import BaseModel, load_or_pretrain
from runners.dtypes import DTYPES
from runners.execution.executors import LocalExecutor, chunks
from runners.execution.prepare import Prepared, grid_threads, memory_record, plan_run, prepare
from runners.execution.units import (
    EvalUnit,
    RoutingScored,
    RoutingUnit,
    Scored,
    Trained,
    TrainUnit,
    ensemble_frames,
    eval_unit,
    routing_unit,
    train_unit,
)
from runners.memory import (
    MemoryPlan,
    apply_plan,
    bound_heap_retention,
)
from runners.model import GPT
from runners.provenance import build_manifest, record_prereg_settings, recorded_prereg_settings
from runners.routing import storage_record
from runners.settings import GridSettings, run_config
from runners.train import TrainConfig

log = logging.getLogger("runners.grid")


@dataclass(frozen=True)
class SeedResult:
    trained: Trained
    statuses: tuple[str, ...]  # per adapter, in `Prepared.names` order, at the largest step count
    docs: pl.DataFrame  # docs.parquet rows of this seed, every step count (base rows included at each)
    train_s: float
    eval_s: float
    # `--routing`: seconds building the avg/noise adapters, scoring them, deriving the ens rows ({} without)
    routing_s: dict[str, float] | None = None


def submit_seed(executor, seed: int, prep: Prepared, shared: tuple, train: TrainConfig, device: str,
                trained=None, counts: tuple[int, ...] | None = None, plan: MemoryPlan | None = None) -> tuple:
    """Submit one seed's units: its training, then, at every step count, its evaluation in
    `executor.parallelism` chunks of adapter rows, each chunk fed the training's result. `shared`:
    (base model, `prep`) as handles from `executor.put`, so they are shipped once, not once per unit.
    `trained` (a kept training, runners.snapshots) skips the training; `counts`: the counts to score.
    With routing rows (`prep.routing`), their built rows are scored in as many chunks again."""
    unit = TrainUnit(seed, train, device, *((plan.micro_rows, plan.checkpointing) if plan is not None else ()))
    trained = trained if trained is not None else executor.submit(train_unit, unit, *shared)
    counts = train.counts if counts is None else counts
    scored = [executor.submit(eval_unit, EvalUnit(seed, rows, device, k), *shared, trained)
              for k in counts for rows in chunks(len(prep.names), executor.parallelism)]
    if prep.routing is not None:
        built = prep.routing.built_names
        scored += [executor.submit(routing_unit, RoutingUnit(seed, tuple(built[i] for i in rows), device, k),
                                   *shared, trained)
                   for k in counts for rows in chunks(len(built), executor.parallelism)]
    return trained, scored


def collect_seed(executor, seed: int, prep: Prepared, job: tuple) -> SeedResult:
    """Wait for a seed's units and assemble its docs.parquet rows: per step count, base rows first,
    then adapter order, then the routing rows (avg, ens, noise; `Prepared.scored_names`)."""
    trained_h, scored_h = job
    trained, *done = executor.get([trained_h, *scored_h])
    scored = [sc for sc in done if isinstance(sc, Scored)]
    built = [sc for sc in done if isinstance(sc, RoutingScored)]
    frames, t_ens = [], 0.0
    for k in dict.fromkeys(sc.steps for sc in scored):
        at = [sc for sc in scored if sc.steps == k]
        parts = [prep.base_docs, *(sc.docs for sc in at)]
        if prep.routing is not None:
            t0 = time.perf_counter()
            parts += ensemble_frames(prep, at, trained.statuses if k is None else trained.statuses_at[k])
            t_ens += time.perf_counter() - t0
            parts += [sc.docs for sc in built if sc.steps == k]
        frames += [f.with_columns(pl.lit(k, pl.Int64).alias("steps")) for f in parts]
    routing_s = None if prep.routing is None else {
        "build_s": sum(sc.build_s for sc in built), "score_s": sum(sc.score_s for sc in built), "ens_s": t_ens}
    if not frames:  # a kept training whose every count was evaluated already
        return SeedResult(trained, trained.statuses, pl.DataFrame(schema=rundir.DOC_SCHEMA), trained.train_s, 0.0,
                          routing_s)
    docs = pl.concat(frames).with_columns(pl.lit(seed, pl.Int64).alias("seed"))
    if prep.routing is not None:  # avg and ens rows in the plan's order, whatever the chunks
        order = {n: i for i, n in enumerate(("base",) + prep.scored_names)}
        docs = docs.with_columns(pl.col("adapter").replace_strict(order, return_dtype=pl.Int64).alias("_row"),
                                 pl.int_range(pl.len()).alias("_at")).sort(["steps", "_row", "_at"]).drop("_row", "_at")
    return SeedResult(trained, trained.statuses, rundir.with_rates(docs).select(list(rundir.DOC_SCHEMA)),
                      trained.train_s, sum(sc.eval_s for sc in scored), routing_s)


def train_and_score(seed: int, base: GPT, prep: Prepared, train: TrainConfig, device: str,
                    executor=None) -> SeedResult:
    """Train every adapter of one seed in one batched loop, then score all of them on every user at
    every step count of `train.counts`."""
    executor = executor or LocalExecutor()
    shared = (executor.put(base), executor.put(prep))
    return collect_seed(executor, seed, prep, submit_seed(executor, seed, prep, shared, train, device))


def _log_rows(seed: int, names: tuple[str, ...], losses: np.ndarray, counts: tuple[int, ...]) -> pl.DataFrame:
    """train_log rows: at each count k, the losses of steps 0..k-1 (what a k-step run logs)."""
    frames = [pl.DataFrame({"seed": seed, "steps": k, "adapter": np.repeat(names, k).tolist(),
                            "step": np.tile(np.arange(k), len(names)), "loss": losses[:k].T.reshape(-1)},
                           schema=rundir.LOG_SCHEMA) for k in counts]
    return pl.concat(frames)


def _given(x):
    return x


def kept_trained(run_dir: Path, seed: int, prep: Prepared, s: GridSettings, base_sha256: str):
    """A seed's training kept from an interrupted command (runners.snapshots.kept_training), as a
    `Trained` read back from its adapter files, with the counts already evaluated; else (None, (), why)."""
    counts, names = s.train.counts, prep.names
    key = seal.env_key()
    if key and not seal.record_signed(snapshots.trained_marker(run_dir, seed), key):
        return None, (), f"trained.json is not signed with the key in ${seal.KEY_ENV}"
    kept, why = snapshots.kept_training(run_dir, seed, names, counts, base_sha256)
    if kept is None:
        return None, (), why
    if key:  # only the evaluations this key's grid recorded
        kept = replace(kept, evaluated=tuple(k for k in kept.evaluated
                                             if seal.record_signed(snapshots.count_marker(run_dir, seed, k), key)))
    snaps = {k: snapshots.load_states(run_dir, seed, names, k, counts) for k in counts}
    trained = Trained(snaps[counts[-1]], np.zeros((0, len(names))), (), kept.statuses[counts[-1]],
                      float(kept.record.get("train_s", 0.0)), snaps, kept.statuses)
    return trained, kept.evaluated, ""


def run_seed(seed: int, base: BaseModel, prep: Prepared, s: GridSettings, run_dir: Path, hf=None,
             result: SeedResult | None = None, kept: tuple[int, ...] | None = None) -> dict:
    """Train and evaluate one seed at every step count (or take its `result` from an executor); write
    its files (done.json last), here in the driver only. Returns its timings.

    `kept`: the training was kept (runners.snapshots): only `result`'s counts are written, the others
    (`kept`) are on disk already. `hf`: the `--model` checkpoint (runners.hf.load.HFCheckpoint); its
    adapters are also written as PEFT LN_TUNING directories under `peft/seed-<seed>/[steps-<k>/]`."""
    r = result or train_and_score(seed, base.model, prep, s.train, s.device)
    counts, names = s.train.counts, prep.names
    if kept is None:
        _write_training(seed, base, prep, s, run_dir, hf, r.trained)
    for k in counts:
        if kept is not None and k in kept:
            log.info("seed %d: steps %d already evaluated, kept", seed, k)
            continue
        path = rundir.write_parquet(r.docs.filter(pl.col("steps") == k), snapshots.docs_file(run_dir, seed, k, counts))
        rundir.write_json(snapshots.marker_record(run_dir, {"seed": seed, "steps": k}, [path]),
                          snapshots.count_marker(run_dir, seed, k))
        seal.sign_record(snapshots.count_marker(run_dir, seed, k), seal.env_key())
    sdir = snapshots.seed_dir(run_dir, seed)
    written = [snapshots.adapter_file(run_dir, seed, n, k, counts) for k in counts for n in names]
    written += [sdir / "train_log.parquet"] + [snapshots.docs_file(run_dir, seed, k, counts) for k in counts]
    st = r.trained.statuses_at
    timing = {"seed": seed, "steps": list(counts), "train_s": r.train_s, "eval_s": r.eval_s,
              "statuses": {**dict(zip(names, r.statuses, strict=True)), **prep.routing_statuses(r.statuses)},
              "statuses_by_steps": {str(k): {**dict(zip(names, st[k], strict=True)), **prep.routing_statuses(st[k])}
                                    for k in counts},
              "training_kept": kept is not None, "base_model_sha256": base.sha256,
              "files": rundir.file_hashes(run_dir, written)}
    if r.routing_s is not None:  # this command's time on the routing rows (runners.routing)
        timing["routing_s"] = r.routing_s
    rundir.write_json(timing, sdir / "done.json")
    seal.sign_record(sdir / "done.json", seal.env_key())
    log.info("seed %d: done (trained in %.1f s, evaluated in %.1f s); statuses: %s", seed, r.train_s, r.eval_s,
             ", ".join(f"{n}={x}" for n, x in zip(names, r.statuses, strict=True)))
    return timing


def _write_training(seed: int, base: BaseModel, prep: Prepared, s: GridSettings, run_dir: Path, hf,
                    trained: Trained) -> None:
    """The seed's adapter files at every count, its training log, then `trained.json`."""
    counts, names = s.train.counts, prep.names
    model_meta = s.model.to_dict() if hf is None else hf_backend().adapter_meta(hf)
    files = []
    for k in counts:
        for a, name in enumerate(names):
            path = snapshots.adapter_file(run_dir, seed, name, k, counts)
            _save_adapter(path, trained.snapshots[k][a],
                          {"seed": seed, "steps": k, "adapter": name, "status": trained.statuses_at[k][a],
                           "model": model_meta, "train": s.train.to_dict(), "base_model_sha256": base.sha256})
            files.append(path)
        if hf is not None:
            hf_backend().write_peft_adapters(run_dir, seed, names, trained.snapshots[k], hf,
                                             {"seed": seed, "steps": k, "train": s.train.to_dict(),
                                              "base_model_sha256": base.sha256},
                                             steps_part=snapshots.steps_part(k, counts))
    sdir = snapshots.seed_dir(run_dir, seed)
    files.append(rundir.write_parquet(_log_rows(seed, names, trained.losses, counts), sdir / "train_log.parquet"))
    for k in counts:  # a retrained seed's earlier evaluations are stale
        snapshots.count_marker(run_dir, seed, k).unlink(missing_ok=True)
    record = {"seed": seed, "steps": list(counts), "adapters": list(names), "train_s": trained.train_s,
              "statuses": {str(k): dict(zip(names, trained.statuses_at[k], strict=True)) for k in counts},
              "base_model_sha256": base.sha256}
    rundir.write_json(snapshots.marker_record(run_dir, record, files), snapshots.trained_marker(run_dir, seed))
    seal.sign_record(snapshots.trained_marker(run_dir, seed), seal.env_key())


def adapter_path(run_dir: Path, seed: int, name: str, steps: int | None = None,
                 counts: tuple[int, ...] | None = None) -> Path:
    """`adapters/seed-<k>/<user|pooled>.safetensors`; `loo:<user>` -> `adapters/seed-<k>/loo/<user>.safetensors`;
    in a run of several step `counts`, one `steps-<steps>/` folder further down (runners.snapshots)."""
    counts = counts or (steps or 0,)
    return snapshots.adapter_file(run_dir, seed, name, steps or counts[-1], counts)


def _save_adapter(path: Path, state: dict[str, torch.Tensor], meta: dict) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    rundir.atomic_write_with(path, lambda p: save_file(tensors, p, metadata={"config": json.dumps(meta)}))


def hf_backend():
    """runners.hf.backend, imported only for a `--model` run (transformers is an optional extra)."""
    from runners.hf import backend

    return backend


def run_grid(fs: FixtureSet, s: GridSettings, *, on_seed_done=None, hf=None, executor=None,
             plan: MemoryPlan | None = None, phases: dict | None = None) -> Path:
    """Run (or resume) the grid for fixture set `fs`; returns the run directory.

    `hf`: the loaded `--model` checkpoint (runners.hf.backend.open_checkpoint), the base model then.
    `executor`: where the units run (runners.execution.executors; default: this process). It is not part of
    the run's configuration: the results do not depend on it, and a run resumes with either.
    `plan`: the memory plan (`plan_run`; made here when not given); `phases`: times of the phases
    before this call (e.g. `load_s`, loading the checkpoint), recorded in the manifest's timings."""
    t_start = time.perf_counter()
    plan = plan or plan_run(s, fs, hf)
    torch.set_num_threads(grid_threads())
    config = run_config(s, fs, None if hf is None else hf_backend().run_config_part(hf))
    label = s.preset if hf is None else hf.path.resolve().name
    run_dir = s.out / rundir.run_id(config, f"{Path(fs.name).name}-{label}")
    with rundir.RunLock(run_dir, "grid"):
        # a run being written is not sealed: a crash from here on leaves no seal vouching for a
        # half-rewritten directory (the verdict refuses an unsealed run directory)
        for name in (seal.SEAL_FILE, seal.SIGNATURE_FILE):
            (run_dir / name).unlink(missing_ok=True)
        rundir.write_json(config, run_dir / "config.json")
        record_prereg_settings(run_dir, s)   # the pre-registration as resolved at the start
        t0 = time.perf_counter()
        if hf is None:
            base = load_or_pretrain(s.model, s.pretrain, fs.pretrain, fs.pretrain_sha256(), device=s.device,
                                    dtype=DTYPES[s.dtype])
        else:
            base = hf_backend().as_base_model(hf)
        t_base = time.perf_counter() - t0
        base.model.to(s.device)
        apply_plan(base.model, plan)
        if plan.split or plan.logit_chunk < plan.micro_rows * plan.context:  # memory is tight: keep the heap in check
            bound_heap_retention()
        log.info("%s", plan.line())
        t0 = time.perf_counter()
        if not s.loo:
            log.warning("--no-loo: the leave-one-out controls loo:<user> are not trained; the verdict cannot "
                        "split pooled's gain into what a new user gets and what comes from having seen the user")
        prep = prepare(base.model, fs, s.device, None if hf is None else hf.encoder, loo=s.loo, routing=s.routing)
        t_base_eval = time.perf_counter() - t0
        timings, resumed, kept = [], [], {}
        counts = s.train.counts
        if len(counts) > 1:
            log.info("step counts %s: each seed trains once to %d steps and is evaluated at every count",
                     ", ".join(map(str, counts)), counts[-1])
        for seed in s.seeds:
            done = run_dir / "seeds" / f"seed-{seed}" / "done.json"
            if done.exists():
                record, problem = rundir.seed_problem(run_dir, done)
                if problem is None and seal.env_key() and not seal.record_signed(done, seal.env_key()):
                    # with a signing key, a resume keeps only what this key's grid wrote: a seed planted
                    # in the directory (or restored from an unsigned cache) is redone, never signed
                    problem = f"`{done}` is not signed with the key in ${seal.KEY_ENV}"
                if problem:  # verified against the hashes recorded when the seed was written
                    log.warning("seed %d: %s: redone", seed, problem)
                elif record.get("steps", [s.train.steps]) != list(counts):
                    log.warning("seed %d: done at steps %s, this run lists %s: redone", seed, record.get("steps"),
                                list(counts))
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
        jobs, partial = {}, {}
        for seed in (k for k in s.seeds if k not in kept):
            trained, evaluated, why = kept_trained(run_dir, seed, prep, s, base.sha256)
            if trained is None:
                if snapshots.seed_dir(run_dir, seed).exists():
                    log.warning("seed %d: training not kept (%s): trained again", seed, why)
                jobs[seed] = submit_seed(executor, seed, prep, shared, s.train, s.device, plan=plan)
            else:  # evaluated here, from the adapter files: only the counts not yet written
                todo = tuple(k for k in counts if k not in evaluated)
                log.info("seed %d: training kept (trained.json verified); evaluating steps %s from the adapter "
                         "files", seed, ", ".join(map(str, todo)) or "none")
                local = LocalExecutor()
                partial[seed] = evaluated
                jobs[seed] = submit_seed(local, seed, prep, (base.model, prep), s.train, s.device,
                                         trained=local.submit(_given, trained), counts=todo)
        for seed in s.seeds:
            if seed in kept:
                resumed.append(seed)
                timings.append(kept[seed])
                continue
            ex = LocalExecutor() if seed in partial else executor
            result = collect_seed(ex, seed, prep, jobs.pop(seed))
            timings.append(run_seed(seed, base, prep, s, run_dir, hf, result, kept=partial.get(seed)))
            if on_seed_done is not None:
                on_seed_done(seed)
        docs = pl.concat([rundir.read_seed_table(snapshots.docs_file(run_dir, k, c, counts))
                          for k in s.seeds for c in counts])
        logs = pl.concat([rundir.read_seed_table(run_dir / "seeds" / f"seed-{k}" / "train_log.parquet")
                          for k in s.seeds])
        rundir.write_parquet(docs, run_dir / "docs.parquet")
        rundir.write_parquet(rundir.cells_from_docs(docs), run_dir / "cells.parquet")
        rundir.write_parquet(logs, run_dir / "train_log.parquet")
        wall = {**(phases or {}), "base_model_s": t_base, "base_eval_s": t_base_eval, "seeds": timings,
                "resumed_seeds": resumed, "total_s": time.perf_counter() - t_start}
        manifest = build_manifest(config, s, fs, base, run_dir, wall,
                                  extra_versions=None if hf is None else hf_backend().versions(),
                                  memory=memory_record(plan, timings, counts[-1], resumed),
                                  routing=None if prep.routing is None else routing_record(run_dir, s, prep, timings))
        rundir.write_json(manifest.to_json(), run_dir / "manifest.json")
        seal_run(run_dir, s, prep, fs)
        rundir.point_latest(s.out, run_dir)
    return run_dir


def routing_record(run_dir: Path, s: GridSettings, prep: Prepared, timings: list[dict]) -> dict:
    """The manifest's `routing` record (docs/formats.md): the plan (pairs, sigmas, draws, the noise's
    definition, the rows), one user's adapter's storage (its file of the first seed at the largest
    count, as safetensors in float32 and float16), and the seconds the rows took, summed over the
    seeds as each seed's `done.json` recorded them (a kept seed: when it was scored)."""
    counts = s.train.counts
    user = prep.routing.users[0]
    state = snapshots.load_states(run_dir, s.seeds[0], (user,), counts[-1], counts)[0]
    seconds = {k: sum(float((t.get("routing_s") or {}).get(k, 0.0)) for t in timings)
               for k in ("build_s", "score_s", "ens_s")}
    return {**prep.routing.to_json(), "storage": storage_record(state), "storage_adapter": user,
            "seconds": {**seconds, "total_s": sum(seconds.values())}}


def seal_run(run_dir: Path, s: GridSettings, prep: Prepared, fs: FixtureSet) -> Path:
    """Write the run's seal last (common.seal): every file written, and the facts the verdict
    judges by; signed when `$NORMADAPT_SEAL_KEY` holds a key (docs/gate.md, section 4)."""
    facts = seal.seal_facts(run_id=run_dir.name, seeds=s.seeds, steps=s.train.counts,
                            users=[u.name for u in fs.users], adapters=prep.scored_names,
                            heldout={u: list(w.doc_ids) for u, w in prep.windows.items()},
                            prereg_sha256=s.prereg_sha256, prereg_settings=recorded_prereg_settings(run_dir, s))
    key = seal.env_key()
    path = seal.write_seal(run_dir, facts, key)
    log.info("sealed %s (%d files%s)", path, len(seal.read_seal(run_dir).files),
             f"; signed with the key in ${seal.KEY_ENV}" if key else "")
    return path
