"""What a grid run is asked to do: the validated settings, the fixture set, the run's configuration.

`settings_from_args` checks every flag before anything is trained or written; `run_config` is what
determines the results (its hash names the run directory).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from common.limits import gib, memory_budget
from fixtures.corpus import FixtureSet
from runners.base_model import PRETRAIN_PRESETS, PretrainConfig
from runners.data import training_stream
from runners.dtypes import AUTO, DtypeChoice, DtypeError, choose
from runners.model import PRESETS, GPTConfig
from runners.routing import RoutingConfig
from runners.train import TrainConfig
from validation.contract.prereg import Prereg, PreregError, check_users, default_prereg_path, load_prereg

MAX_SEEDS = 1000
# A seed feeds torch.manual_seed and numpy's generators and is stored in the tables' Int64 `seed`
# column: 32 bits (numpy's legacy seed range) keeps it valid for every one of them.
MAX_SEED = 2**32 - 1
# Windows per adapter per training step: a sanity bound (the default is 8); a batch that does not fit
# in memory is the memory planner's to refuse. A batch also may not exceed the training windows of
# the smallest user's text (`check_corpus_sizes`).
MAX_BATCH_SIZE = 4096
# Bytes per row of the tables a run assembles in memory (docs.parquet, train_log.parquet), with
# the copy `pl.concat` makes: an upper estimate.
DOC_ROW_BYTES, LOG_ROW_BYTES = 2 * 96, 2 * 40


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
    prereg_settings: Prereg | None = None  # the file, parsed and validated before anything trains
    hf_model: Path | None = None  # --model: a Hugging Face checkpoint directory instead of the preset
    dtype: str = "float32"  # --dtype resolved (runners.dtypes): frozen base weights of the preset or checkpoint
    context: int | None = None  # --context of the --model checkpoint (None: its default, runners.hf.load)
    loo: bool = True  # train the leave-one-out controls `loo:<user>` (off: `--no-loo`)
    # where the units run (runners.execution.executors); not in `run_config`: it does not change the results
    executor: str = "local"  # --executor: local or ray
    ray_address: str | None = None  # --ray-address: a running Ray cluster (None: start a local instance)
    dtype_choice: DtypeChoice | None = None  # what --dtype asked for and why it resolved to `dtype`
    max_memory: int | None = None  # --max-memory in bytes (None: runners.memory's default budget); not in run_config
    # --routing: build and score the routing rows (runners.routing) with the pre-registration's
    # `[routing]` settings; in run_config (None: off, and the run ids of before)
    routing: RoutingConfig | None = None
    # a --model run in a narrower dtype: what it measured to cost the margins (runners.hf.dtype_check), for the manifest
    dtype_check: dict | None = None


# -- flags ---------------------------------------------------------------------------------------

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
        if max(seeds) > MAX_SEED:
            raise UsageError(f"`--seed-list`: seed {max(seeds)} is larger than {MAX_SEED} (2**32 - 1), the largest "
                             "seed every random generator of the run accepts; give seeds from 0 to "
                             f"{MAX_SEED}, e.g. 0,1,2")
        if len(seeds) > MAX_SEEDS:
            raise UsageError(f"`--seed-list`: {len(seeds)} seeds, more than the {MAX_SEEDS} a run may hold; "
                             "give fewer seeds")
        return seeds
    if args.seeds > MAX_SEEDS:  # checked before range() builds the tuple
        raise UsageError(f"`--seeds {args.seeds}`: more than the {MAX_SEEDS} seeds a run may hold (each trains "
                         "every adapter again); lower `--seeds`")
    return tuple(range(_positive("--seeds", args.seeds)))


MAX_STEP_COUNTS = 64  # step counts one `--steps` list may hold


def parse_steps(value: str | int) -> tuple[int, ...]:
    """`--steps 25,50,100`: distinct positive whole numbers in ascending order (UsageError otherwise).

    One value keeps the single-count run of before; several train once to the largest and snapshot
    and evaluate the bank at each (docs/formats.md, `train.steps_list`)."""
    text = str(value).strip()
    parts = [p.strip() for p in text.split(",")]
    example = "e.g. `--steps 100` or `--steps 25,50,100,200,400`"
    if not text or any(not p for p in parts):
        raise UsageError(f"`--steps {value}`: give one step count or comma-separated counts, {example}")
    counts = []
    for p in parts:
        try:
            counts.append(int(p))
        except ValueError:
            raise UsageError(f"`--steps {value}`: {p!r} is not a whole number of steps; {example}") from None
    bad = [c for c in counts if c < 1]
    if bad:
        raise UsageError(f"`--steps {value}`: must be at least 1 (got {bad[0]}); {example}")
    dup = sorted({c for c in counts if counts.count(c) > 1})
    if dup:
        raise UsageError(f"`--steps {value}`: {dup[0]} is listed more than once; list each count once, {example}")
    if counts != sorted(counts):
        raise UsageError(f"`--steps {value}`: list the counts in ascending order "
                         f"(`--steps {','.join(map(str, sorted(counts)))}`)")
    if len(counts) > MAX_STEP_COUNTS:
        raise UsageError(f"`--steps`: {len(counts)} step counts, more than the {MAX_STEP_COUNTS} a run may "
                         "evaluate; list fewer")
    return tuple(counts)


def check_primary_steps(prereg: Prereg, counts: tuple[int, ...]) -> None:
    """A run of several step counts must train the pre-registered primary count (`[steps] primary`):
    refused before anything trains, naming the setting and the counts. A one-count run is judged at
    its count (the verdict notes a different primary; docs/formats.md)."""
    if len(counts) < 2:
        return
    listed = ",".join(map(str, counts))
    if prereg.primary_steps not in counts:
        raise UsageError(f"`--steps {listed}`: the pre-registered primary step count `[steps] primary = "
                         f"{prereg.primary_steps}` ({prereg.path or 'prereg.toml'}; 100 when the file has no "
                         f"`[steps]`) is not among them: the criteria and the gate are judged there, the other "
                         f"counts are exploratory; add {prereg.primary_steps} to `--steps`, or set `[steps] "
                         "primary` to one of the counts before the run")


def primary_steps_warning(prereg: Prereg | None, counts: tuple[int, ...]) -> str | None:
    """A one-count run at a count other than a `[steps] primary` the file states: allowed (a quick
    exploratory run), but its verdict will read NOT PRE-REGISTERED (validation.judgment.steps)."""
    if prereg is None or prereg.other_count(counts) is None:
        return None
    return (f"`--steps {counts[0]}`: {prereg.path or 'prereg.toml'} pre-registers `[steps] primary = "
            f"{prereg.primary_steps}`, so the verdict of this run will read NOT PRE-REGISTERED and its gate fails "
            f"(unless `--accept-not-preregistered`); run `--steps {prereg.primary_steps}`, or a list that includes "
            "it, for a gating run")


def _check_out(raw: str) -> Path:
    if not str(raw).strip():  # Path("") is ".": the run would be written into the current directory
        raise UsageError(f"`--out {raw!r}`: empty; pass the directory that holds the run directories "
                         "(default runs/)")
    out = Path(raw)
    latest = out / "latest"
    if latest.is_dir() and not latest.is_symlink():  # point_latest would fail after the whole grid ran
        raise UsageError(f"`--out {out}`: `{latest}` is a real directory, but the runner keeps a symlink "
                         "there to the newest run; move or rename it, or pass another `--out`")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test."):
            pass
    except OSError as exc:
        raise UsageError(f"`--out {out}`: cannot write there ({exc.strerror}); pass a writable directory") from None
    return out


def _hf_flags(args: argparse.Namespace) -> dict:
    """--model / --context: valid together only (the checkpoint itself is checked on loading)."""
    model = getattr(args, "model", None)
    if model is None:
        if getattr(args, "context", None) is not None:
            raise UsageError(f"`--context {args.context}`: applies to a Hugging Face checkpoint only; "
                             "add `--model DIR`")
        return {}
    if args.preset is not None or args.pretrain_steps is not None:
        flag = "--preset" if args.preset is not None else "--pretrain-steps"
        raise UsageError(f"`{flag}` with `--model {model}`: the checkpoint is the base model, nothing is pretrained; "
                         f"drop `{flag}`")
    if args.context is not None and args.context < 2:
        raise UsageError(f"`--context {args.context}`: must be at least 2 tokens")
    return {"hf_model": Path(model).expanduser(), "context": args.context}


def dtype_choice(requested: str | None, device: str, preset: str | None) -> DtypeChoice:
    """`--dtype` (default auto) resolved for `device` and `preset` (None: a `--model` checkpoint)
    by the shared policy, runners.dtypes; UsageError naming the flag when it cannot be used."""
    try:
        return choose(AUTO if requested is None else requested, device, preset)
    except DtypeError as exc:
        raise UsageError(str(exc)) from None


def _executor_flags(args: argparse.Namespace) -> dict:
    """--executor / --ray-address (whether the address answers is checked when the executor starts)."""
    from runners.execution.executors import EXECUTORS, RAY_INSTALL, ray_available

    name, address = getattr(args, "executor", "local"), getattr(args, "ray_address", None)
    if name not in EXECUTORS:
        raise UsageError(f"`--executor {name}`: unknown executor; use one of {', '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise UsageError(f"`--ray-address {address}`: applies to `--executor ray` only; add `--executor ray` "
                         "or drop `--ray-address`")
    if name == "ray" and not ray_available():
        raise UsageError(f"`--executor ray`: Ray is not installed; install the extra with `{RAY_INSTALL}`, "
                         "or use `--executor local`")
    return {"executor": name, "ray_address": address}


def settings_from_args(args: argparse.Namespace) -> GridSettings:
    """Validate every flag that needs no fixture data; raises UsageError naming the flag and the fix."""
    hf = _hf_flags(args)
    executor = _executor_flags(args)
    if args.preset is None:
        args = argparse.Namespace(**{**vars(args), "preset": "cpu"})
    if args.preset not in PRESETS:
        raise UsageError(f"`--preset {args.preset}`: unknown preset; use one of {', '.join(PRESETS)}")
    if args.device not in ("cpu", "cuda"):
        raise UsageError(f"`--device {args.device}`: use cpu or cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("`--device cuda`: no CUDA GPU is visible to torch on this machine; use `--device cpu` "
                         "(or install a CUDA build of torch on a GPU machine)")
    dtype = dtype_choice(getattr(args, "dtype", None), args.device, None if hf else args.preset)
    seeds = _seeds(args)
    if args.fixtures < 2:
        raise UsageError(f"`--fixtures {args.fixtures}`: the confusion matrix needs at least two users "
                         "(own adapter against another user's); ask for 2 or more")
    counts = parse_steps(args.steps)
    _positive("--batch-size", args.batch_size)
    if args.batch_size > MAX_BATCH_SIZE:
        raise UsageError(f"`--batch-size {args.batch_size}`: more than {MAX_BATCH_SIZE} training windows per "
                         "adapter per step, far beyond any useful batch (the default is "
                         f"{TrainConfig.batch_size}) and beyond memory; give at most {MAX_BATCH_SIZE}")
    if not (args.lr > 0 and np.isfinite(args.lr)):
        raise UsageError(f"`--lr {args.lr}`: must be a positive number")
    prereg = Path(args.prereg) if args.prereg else default_prereg_path()
    if not prereg.is_file():
        raise UsageError(f"`--prereg {prereg}`: pre-registration file not found; create it before the run "
                         "(keys in docs/formats.md, 'prereg.toml') or pass its path")
    try:  # a malformed file would be hashed into the manifest and refused only by the verdict
        prereg_settings = load_prereg(prereg)
    except PreregError as exc:
        raise UsageError(f"`--prereg`: {exc} Fix the file before the run (keys in docs/formats.md).") from None
    if prereg_settings.lenient_min_users > args.fixtures:
        check_users_usage(prereg_settings, args.fixtures)
    check_primary_steps(prereg_settings, counts)
    pretrain = PRETRAIN_PRESETS[args.preset]
    if args.pretrain_steps is not None:
        pretrain = replace(pretrain, steps=_positive("--pretrain-steps", args.pretrain_steps))
    return GridSettings(
        preset=args.preset, model=PRESETS[args.preset], pretrain=pretrain,
        train=TrainConfig(steps=counts[-1], batch_size=args.batch_size, lr=args.lr, steps_list=counts),
        seeds=seeds, device=args.device, out=_check_out(args.out), prereg=prereg,
        prereg_sha256=prereg_settings.sha256, prereg_settings=prereg_settings, loo=not args.no_loo,
        dtype=dtype.name, dtype_choice=dtype, max_memory=max_memory_flag(getattr(args, "max_memory", None)),
        routing=RoutingConfig.from_prereg(prereg_settings) if getattr(args, "routing", False) else None,
        **hf, **executor,
    )


def max_memory_flag(value: str | None) -> int | None:
    """`--max-memory SIZE` in bytes (runners.memory.parse_size), UsageError naming the flag."""
    from runners.memory import MemoryPlanError, parse_size

    try:
        return None if value is None else parse_size(value)
    except MemoryPlanError as exc:
        raise UsageError(str(exc)) from None


def check_users_usage(prereg: Prereg, n_users: int) -> None:
    """`lenient_min_users` larger than the users of the run: refused before anything trains."""
    try:
        check_users(prereg, n_users, "this run (`--fixtures`)")
    except PreregError as exc:
        raise UsageError(f"`--prereg`: {exc}") from None


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

    return load_fixture_set(name, sources=sources or None, n_users=n_users).take(n_users)


def check_corpus_sizes(fs: FixtureSet, block_size: int, encoder=None, batch_size: int | None = None) -> None:
    """Every training corpus must hold at least one training window (before anything is written),
    and, given `batch_size` (`--batch-size`), at least that many window positions per user.

    `encoder`: a `--model` checkpoint's tokenizer encoder (its pretraining corpus is not used then).
    """
    need = block_size + 2  # BOS-prefixed tokens of one window plus its shifted target
    parts = [(f"user {u.name!r} training text", u.train) for u in fs.users]
    if encoder is None:
        parts.append(("the pretraining corpus", fs.pretrain))
    for what, docs in parts:
        n = len(training_stream(docs) if encoder is None else training_stream(docs, encoder))
        if n < need:
            raise UsageError(f"{what} of fixture set {fs.name!r} has {n} tokens, fewer than one training window "
                             f"of {need} for this preset; add text or pick a preset with a shorter context")
        windows = n - need + 1
        if batch_size is not None and what.startswith("user") and batch_size > windows:
            raise UsageError(f"`--batch-size {batch_size}`: more windows per step than the {windows} window "
                             f"positions of {what} ({n} tokens, windows of {need}); give at most {windows}")


def check_limits(s: GridSettings, fs: FixtureSet) -> None:
    """The run's tables must fit in memory when assembled: refused up front, naming the flags."""
    n_users, n_docs = len(fs.users), sum(len(u.heldout) for u in fs.users)
    trained = n_users + 1 + (n_users if s.loo else 0)         # users + pooled (+ loo:<user>)
    if s.routing is not None:                                 # + avg pairs, ens:<user>, noise:<user>@<sigma>
        trained += min(n_users * (n_users - 1) // 2, s.routing.max_pairs) + n_users * (1 + len(s.routing.sigmas))
    doc_rows = len(s.seeds) * (trained + 1) * n_docs          # trained adapters + base, on every document
    counts = s.train.counts                                   # every table holds each step count
    doc_rows *= len(counts)
    log_rows = len(s.seeds) * (n_users + 1 + (n_users if s.loo else 0)) * sum(counts)  # per trained adapter
    need, budget = doc_rows * DOC_ROW_BYTES + log_rows * LOG_ROW_BYTES, memory_budget()
    if need > budget:
        raise UsageError(f"`--seeds {len(s.seeds)}` x `--steps {','.join(map(str, counts))}` x `--fixtures {n_users}` "
                         f"({n_docs} held-out documents) makes tables of about {gib(need)}, more than this "
                         f"machine can give ({gib(budget)}); lower `--steps` or `--seeds` (or `--fixtures`)")


def run_config(s: GridSettings, fs: FixtureSet, hf_part: dict | None = None) -> dict:
    """Everything that determines the results: its hash names the run directory.

    `hf_part`: a `--model` checkpoint's identity (runners.hf.backend.run_config_part), in place of
    the preset's model and pretraining settings."""
    routing = {} if s.routing is None else {"routing": s.routing.to_dict()}  # off: the run ids of before
    if hf_part is not None:
        return {**hf_part, "train": s.train.to_dict(), "seeds": list(s.seeds), "device": s.device,
                "fixture_set": fs.name, "users": [u.name for u in fs.users], "users_sha256": fs.sha256(),
                "prereg_sha256": s.prereg_sha256, "loo_controls": s.loo, **routing}
    config = {"preset": s.preset, "model": s.model.to_dict(), "pretrain": s.pretrain.to_dict(),
              "train": s.train.to_dict(), "seeds": list(s.seeds), "device": s.device, "fixture_set": fs.name,
              "users": [u.name for u in fs.users], "users_sha256": fs.sha256(),
              "pretrain_corpus_sha256": fs.pretrain_sha256(), "prereg_sha256": s.prereg_sha256,
              "loo_controls": s.loo}
    if s.dtype != "float32":  # float32 runs keep the run ids they had before `--dtype` existed
        config["dtype"] = s.dtype
    return {**config, **routing}
