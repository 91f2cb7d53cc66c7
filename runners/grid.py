"""`python -m runners.grid`: train norm-only adapters over seeds x users and cross-evaluate them.

For each seed, the user adapters and the `pooled` control (trained on the union of the users'
training text, same steps, batch and learning rate) train together in one batched loop on the
frozen base model; then `base`, `pooled` and every user adapter are scored on every user's
held-out documents. Results land in `<out>/<run_id>/` (see docs/formats.md); finished seeds
are kept, so an interrupted command resumes where it stopped when run again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from fixtures.corpus import FixtureError, FixtureSet
from runners import rundir
from runners.base_model import PRETRAIN_PRESETS, BaseModel, PretrainConfig, file_sha256, load_or_pretrain
from runners.data import eval_windows, training_stream
from runners.evaluate import check_windows, doc_nll, mean_check_nll
from runners.model import GPT, PRESETS, GPTConfig
from runners.train import TrainConfig, TrainedAdapters, data_order, train_adapters
from validation.prereg import default_prereg_path

log = logging.getLogger("runners.grid")
POOLED, BASE = "pooled", "base"


class UsageError(ValueError):
    """Bad command-line input: the message names the flag or file and the fix (exit code 2)."""


@dataclass(frozen=True)
class GridSettings:
    preset: str  # key of runners.model.PRESETS
    model: GPTConfig  # the preset's model config
    pretrain: PretrainConfig  # base-model pretraining schedule
    train: TrainConfig  # adapter training: steps, batch size, learning rate
    seeds: tuple[int, ...]  # adapter-training seeds (data order and torch seed)
    device: str  # "cpu" or "cuda"
    out: Path  # parent of the run directories
    prereg: Path  # the pre-registration file whose SHA-256 goes into the manifest
    prereg_sha256: str


# -- command line ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runners.grid", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--seed-list", help="comma-separated seeds, instead of --seeds (e.g. 3,7,11)")
    p.add_argument("--fixtures", type=int, default=3, help="the first N users of the set (default 3)")
    p.add_argument("--fixture-set", default="classics", help="built-in set name or a directory (default classics)")
    p.add_argument("--source", action="append", default=[], metavar="NAME=PATH",
                   help="local copy of a fixture source (repeatable), passed to fixtures.load_fixture_set")
    p.add_argument("--steps", type=int, default=TrainConfig.steps, help=f"adapter training steps (default {TrainConfig.steps})")
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help=f"adapter learning rate (default {TrainConfig.lr}; docs/lr_sweep.md)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help=f"windows per adapter per step (default {TrainConfig.batch_size})")
    p.add_argument("--preset", default="cpu", help=f"model preset: {', '.join(PRESETS)} (default cpu)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="override the preset's base-model pretraining steps")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", default="runs", help="parent directory of run directories (default runs/)")
    p.add_argument("--prereg", default=None,
                   help="pre-registration file (default: ./prereg.toml, else the repository's prereg.toml)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


def _positive(flag: str, value: int) -> int:
    if value < 1:
        raise UsageError(f"`{flag} {value}`: must be at least 1")
    return value


def _seeds(args: argparse.Namespace) -> tuple[int, ...]:
    if args.seed_list:
        try:
            seeds = tuple(int(s) for s in args.seed_list.split(",") if s.strip())
        except ValueError:
            raise UsageError(f"`--seed-list {args.seed_list}`: give comma-separated integers, e.g. 0,1,2") from None
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise UsageError(f"`--seed-list {args.seed_list}`: give distinct non-negative integers, e.g. 0,1,2")
        return seeds
    return tuple(range(_positive("--seeds", args.seeds)))


def _check_out(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test."):
            pass
    except OSError as exc:
        raise UsageError(f"`--out {out}`: cannot write there ({exc.strerror}); pass a writable directory") from None
    return out


def settings_from_args(args: argparse.Namespace) -> GridSettings:
    """Validate every flag that needs no fixture data; raises UsageError naming the flag and the fix."""
    if args.preset not in PRESETS:
        raise UsageError(f"`--preset {args.preset}`: unknown preset; use one of {', '.join(PRESETS)}")
    if args.device not in ("cpu", "cuda"):
        raise UsageError(f"`--device {args.device}`: use cpu or cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("`--device cuda`: no CUDA GPU is visible to torch on this machine; use `--device cpu` "
                         "(or install a CUDA build of torch on a GPU machine)")
    seeds = _seeds(args)
    if args.fixtures < 2:
        raise UsageError(f"`--fixtures {args.fixtures}`: the confusion matrix needs at least two users "
                         "(own adapter against another user's); ask for 2 or more")
    _positive("--steps", args.steps)
    _positive("--batch-size", args.batch_size)
    if not (args.lr > 0 and np.isfinite(args.lr)):
        raise UsageError(f"`--lr {args.lr}`: must be a positive number")
    prereg = Path(args.prereg) if args.prereg else default_prereg_path()
    if not prereg.is_file():
        raise UsageError(f"`--prereg {prereg}`: pre-registration file not found; create it before the run "
                         "(keys in docs/formats.md, 'prereg.toml') or pass its path")
    pretrain = PRETRAIN_PRESETS[args.preset]
    if args.pretrain_steps is not None:
        pretrain = replace(pretrain, steps=_positive("--pretrain-steps", args.pretrain_steps))
    return GridSettings(
        preset=args.preset, model=PRESETS[args.preset], pretrain=pretrain,
        train=TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr),
        seeds=seeds, device=args.device, out=_check_out(Path(args.out)), prereg=prereg,
        prereg_sha256=file_sha256(prereg),
    )


def parse_sources(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"`--source {item}`: write NAME=PATH, e.g. --source botchan=~/texts/botchan.txt")
        out[name] = Path(path).expanduser()
    return out


def load_fixtures(name: str, n_users: int, sources: dict[str, Path]) -> FixtureSet:
    """The first `n_users` users of set `name` (FixtureError on any problem)."""
    from fixtures import load_fixture_set

    return load_fixture_set(name, sources=sources or None).take(n_users)


def check_corpus_sizes(fs: FixtureSet, block_size: int) -> None:
    """Every training corpus must hold at least one training window (before anything is written)."""
    need = block_size + 2  # BOS-prefixed tokens of one window plus its shifted target
    parts = [(f"user {u.name!r} training text", u.train) for u in fs.users]
    parts.append(("the pretraining corpus", fs.pretrain))
    for what, docs in parts:
        n = len(training_stream(docs))
        if n < need:
            raise UsageError(f"{what} of fixture set {fs.name!r} has {n} tokens, fewer than one training window "
                             f"of {need} for this preset; add text or pick a preset with a shorter context")


# -- the grid ----------------------------------------------------------------------------------

def run_config(s: GridSettings, fs: FixtureSet) -> dict:
    """Everything that determines the results: its hash names the run directory."""
    return {"preset": s.preset, "model": s.model.to_dict(), "pretrain": s.pretrain.to_dict(), "train": s.train.to_dict(),
            "seeds": list(s.seeds), "device": s.device, "fixture_set": fs.name, "users": [u.name for u in fs.users],
            "users_sha256": fs.sha256(), "pretrain_corpus_sha256": fs.pretrain_sha256(), "prereg_sha256": s.prereg_sha256}


@dataclass(frozen=True)
class Prepared:
    """Per-run inputs shared by every seed."""

    names: tuple[str, ...]  # adapter names in bank order: users, then pooled
    streams: list[np.ndarray]  # training token streams, same order
    checks: list[tuple[torch.Tensor, torch.Tensor]]  # health-check windows, same order
    base_check: tuple[float, ...]  # base mean NLL on each check set
    windows: dict  # eval user -> EvalWindows
    base_docs: pl.DataFrame  # base rows of docs.parquet without the seed column


def prepare(base: GPT, fs: FixtureSet, device: str) -> Prepared:
    T = base.config.block_size
    names = tuple(u.name for u in fs.users) + (POOLED,)
    streams = [training_stream(u.train) for u in fs.users]
    streams.append(training_stream(tuple(d for u in fs.users for d in u.train)))
    checks = [check_windows(s, T) for s in streams]
    windows = {u.name: eval_windows(u.heldout, T) for u in fs.users}
    base_check = tuple(mean_check_nll(base, c, 0, device) for c in checks)
    frames = [_doc_frame(BASE, j, w, doc_nll(base, w, 0, device), rundir.OK) for j, w in windows.items()]
    return Prepared(names, streams, checks, base_check, windows, pl.concat(frames))


def _doc_frame(adapter: str, eval_user: str, w, nll: np.ndarray, status: str) -> pl.DataFrame:
    return pl.DataFrame({"adapter": adapter, "eval": eval_user, "doc_id": list(w.doc_ids), "nll_sum": nll,
                         "n_tokens": list(w.n_bytes), "n_bytes": list(w.n_bytes), "status": status},
                        schema_overrides={"n_tokens": pl.Int64, "n_bytes": pl.Int64})


def adapter_status(diverged: bool, own_nll: float, base_nll: float) -> str:
    if diverged or not np.isfinite(own_nll):
        return rundir.DIVERGED
    return rundir.WORSE_THAN_BASE if own_nll > base_nll else rundir.OK


@dataclass(frozen=True)
class SeedResult:
    trained: TrainedAdapters
    statuses: tuple[str, ...]  # per adapter, in `Prepared.names` order
    docs: pl.DataFrame  # docs.parquet rows of this seed (base rows included)
    train_s: float
    eval_s: float


def train_and_score(seed: int, base: GPT, prep: Prepared, train: TrainConfig, device: str) -> SeedResult:
    """Train every adapter of one seed in one batched loop, then score all of them on every user."""
    torch.manual_seed(seed)
    T = base.config.block_size
    orders = [data_order(seed, k, len(st), T, train) for k, st in enumerate(prep.streams)]
    t0 = time.perf_counter()
    with tqdm(total=train.steps, desc=f"seed {seed} train", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
        trained = train_adapters(base, prep.streams, orders, train, device, progress=bar)
    t_train = time.perf_counter() - t0
    model = trained.model  # frozen base + the bank just trained
    statuses = tuple(adapter_status(trained.diverged[k], mean_check_nll(model, prep.checks[k], k + 1, device),
                                    prep.base_check[k]) for k in range(len(prep.names)))
    frames = [prep.base_docs]
    for k, name in enumerate(prep.names):
        for j, w in prep.windows.items():
            frames.append(_doc_frame(name, j, w, doc_nll(model, w, k + 1, device), statuses[k]))
    docs = rundir.with_rates(pl.concat(frames).with_columns(pl.lit(seed, pl.Int64).alias("seed")))
    return SeedResult(trained, statuses, docs.select(list(rundir.DOC_SCHEMA)), t_train, time.perf_counter() - t0 - t_train)


def run_seed(seed: int, base: BaseModel, prep: Prepared, s: GridSettings, run_dir: Path) -> dict:
    """Train and evaluate one seed; write its files (done.json last). Returns its timings."""
    r = train_and_score(seed, base.model, prep, s.train, s.device)
    for k, name in enumerate(prep.names):
        _save_adapter(run_dir / "adapters" / f"seed-{seed}" / f"{name}.safetensors", r.trained.states[k],
                      {"seed": seed, "adapter": name, "status": r.statuses[k], "model": s.model.to_dict(),
                       "train": s.train.to_dict(), "base_model_sha256": base.sha256})
    log_rows = pl.DataFrame({"seed": seed, "adapter": np.repeat(prep.names, s.train.steps).tolist(),
                             "step": np.tile(np.arange(s.train.steps), len(prep.names)),
                             "loss": r.trained.losses.T.reshape(-1)}, schema=rundir.LOG_SCHEMA)
    seed_dir = run_dir / "seeds" / f"seed-{seed}"
    rundir.write_parquet(r.docs, seed_dir / "docs.parquet")
    rundir.write_parquet(log_rows, seed_dir / "train_log.parquet")
    timing = {"seed": seed, "train_s": r.train_s, "eval_s": r.eval_s, "statuses": dict(zip(prep.names, r.statuses)),
              "base_model_sha256": base.sha256}
    rundir.write_json(timing, seed_dir / "done.json")
    log.info("seed %d: trained in %.1f s, evaluated in %.1f s; %s", seed, r.train_s, r.eval_s,
             ", ".join(f"{n}={st}" for n, st in zip(prep.names, r.statuses)))
    return timing


def _save_adapter(path: Path, state: dict[str, torch.Tensor], meta: dict) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    rundir.atomic_write_with(path, lambda p: save_file(tensors, p, metadata={"config": json.dumps(meta)}))


def run_grid(fs: FixtureSet, s: GridSettings, *, on_seed_done=None) -> Path:
    """Run (or resume) the grid for fixture set `fs`; returns the run directory."""
    t_start = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    config = run_config(s, fs)
    run_dir = s.out / rundir.run_id(config, f"{Path(fs.name).name}-{s.preset}")
    with rundir.RunLock(run_dir):
        rundir.write_json(config, run_dir / "config.json")
        t0 = time.perf_counter()
        base = load_or_pretrain(s.model, s.pretrain, fs.pretrain, fs.pretrain_sha256(), device=s.device)
        t_base = time.perf_counter() - t0
        base.model.to(s.device)
        t0 = time.perf_counter()
        prep = prepare(base.model, fs, s.device)
        t_base_eval = time.perf_counter() - t0
        timings, resumed = [], []
        for seed in s.seeds:
            done = run_dir / "seeds" / f"seed-{seed}" / "done.json"
            if done.exists():
                kept = json.loads(done.read_text())
                if kept.get("base_model_sha256") == base.sha256:
                    resumed.append(seed)
                    timings.append(kept)
                    log.info("seed %d: already done, kept", seed)
                    continue
                # the base model was rebuilt since (cache evicted, corrupt, other device): a kept
                # seed would mix two base models in one run
                log.warning("seed %d: done with base model %s, now %s: redone", seed,
                            str(kept.get("base_model_sha256"))[:12], base.sha256[:12])
            timings.append(run_seed(seed, base, prep, s, run_dir))
            if on_seed_done is not None:
                on_seed_done(seed)
        docs = pl.concat([pl.read_parquet(run_dir / "seeds" / f"seed-{k}" / "docs.parquet") for k in s.seeds])
        logs = pl.concat([pl.read_parquet(run_dir / "seeds" / f"seed-{k}" / "train_log.parquet") for k in s.seeds])
        rundir.write_parquet(docs, run_dir / "docs.parquet")
        rundir.write_parquet(rundir.cells_from_docs(docs), run_dir / "cells.parquet")
        rundir.write_parquet(logs, run_dir / "train_log.parquet")
        wall = {"base_model_s": t_base, "base_eval_s": t_base_eval, "seeds": timings, "resumed_seeds": resumed,
                "total_s": time.perf_counter() - t_start}
        rundir.write_json(manifest(config, s, fs, base, run_dir, wall), run_dir / "manifest.json")
        rundir.point_latest(s.out, run_dir)
    return run_dir


# -- manifest ----------------------------------------------------------------------------------

def manifest(config: dict, s: GridSettings, fs: FixtureSet, base: BaseModel, run_dir: Path, timings: dict) -> dict:
    n_params = base.model.n_adapter_params()
    one = next((run_dir / "adapters" / f"seed-{s.seeds[0]}").glob("*.safetensors"), None)
    return {
        "run_id": run_dir.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv if sys.argv and "grid" in sys.argv[0] else None,
        "config": config,
        "seeds": list(s.seeds),
        "fixture_set": {
            "name": fs.name, "description": fs.description, "users_sha256": fs.sha256(),
            "pretrain_sha256": fs.pretrain_sha256(), "pretrain_provenance": _prov(fs.pretrain_provenance),
            "pretrain_bytes": sum(d.n_bytes for d in fs.pretrain),
            "users": [{"name": u.name, "sha256": u.sha256(), **_prov(u.provenance), "train_bytes": u.train_bytes,
                       "heldout_bytes": u.heldout_bytes, "n_train_docs": len(u.train), "n_heldout_docs": len(u.heldout)}
                      for u in fs.users],
            "leakage": [{"part_a": a, "part_b": b, "longest_shared_bytes": n} for a, b, n in fs.leakage],
        },
        "base_model": {"key": base.key, "sha256": base.sha256, "path": str(base.path), "params": base.model.n_base_params(),
                       "pretrain_seconds": base.pretrain_seconds, "built_now": base.built_now},
        "prereg": {"path": str(s.prereg.resolve()), "sha256": s.prereg_sha256},
        "adapter": {"params": n_params, "bytes_fp32": 4 * n_params, "file_bytes": one.stat().st_size if one else None,
                    "norm_layers": 2 * s.model.n_layer + 1},
        "status_values": {rundir.OK: "trained and evaluated normally",
                          rundir.DIVERGED: "NaN/inf training loss or weights, or non-finite held-out NLL",
                          rundir.WORSE_THAN_BASE: "adapter ends worse than the base on its own training text"},
        "versions": _versions(),
        "git": _git(),
        "timings": timings,
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
                 "torch_threads": torch.get_num_threads(), "device": s.device,
                 "cuda": torch.cuda.get_device_name() if s.device == "cuda" else None},
    }


def _prov(p) -> dict:
    return {"source": p.source, "licence": p.licence, "source_sha256": p.sha256, "route": p.route, "notes": p.notes}


def _versions() -> dict:
    import numpy, polars, safetensors
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "polars": polars.__version__, "safetensors": safetensors.__version__}


def _git() -> dict:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
                               text=True, timeout=10).stdout.strip() != ""
        return {"commit": commit or None, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


# -- entry point -------------------------------------------------------------------------------

def summary(run_dir: Path) -> str:
    cells = pl.read_parquet(run_dir / "cells.parquet")
    table = (cells.group_by(["adapter", "eval"], maintain_order=True).agg(pl.col("ppl").log().mean().exp().alias("ppl"))
             .pivot(on="eval", index="adapter", values="ppl"))
    bad = cells.filter(pl.col("status") != rundir.OK)
    lines = [f"run: {run_dir}", "perplexity per byte (geometric mean over seeds); rows = adapter, columns = eval user",
             str(table)]
    if len(bad):
        lines.append(f"{len(bad)} cells not ok: " + ", ".join(sorted(set(bad["status"].to_list()))))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = settings_from_args(args)
        fs = load_fixtures(args.fixture_set, args.fixtures, parse_sources(args.source))
        check_corpus_sizes(fs, settings.model.block_size)
        run_dir = run_grid(fs, settings)
    except (UsageError, FixtureError, rundir.RunLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
