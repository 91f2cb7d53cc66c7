"""`python -m runners.grid`: train norm-only adapters over seeds x users and cross-evaluate them.

The command line only: flags are validated in `runners.settings`, the grid runs in
`runners.execution.execute`, the manifest is built in `runners.provenance`, the run directory's files are
written by `runners.rundir`. Files of a run: docs/formats.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import polars as pl

from common.contract import BASE, CONTROLS, DIVERGED, OK, ROUTING_PREFIXES
from fixtures.corpus import FixtureError
from runners import rundir
from runners.execution.execute import plan_run, run_grid
from runners.execution.executors import ExecutorError, make_executor
from runners.model import PRESETS
from runners.settings import (
    UsageError,
    check_corpus_sizes,
    check_limits,
    check_users_usage,
    load_fixtures,
    parse_sources,
    primary_steps_warning,
    settings_from_args,
)
from runners.train import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runners.grid", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--seed-list", help="comma-separated seeds, instead of --seeds (e.g. 3,7,11)")
    p.add_argument("--fixtures", type=int, default=3, help="the first N users of the set (default 3)")
    p.add_argument("--fixture-set", default="classics", help="built-in set name or a directory (default classics)")
    p.add_argument("--source", action="append", default=[], metavar="NAME=PATH",
                   help="local copy of a fixture source (repeatable), passed to fixtures.load_fixture_set")
    p.add_argument("--steps", default=str(TrainConfig.steps),
                   help=f"adapter training steps (default {TrainConfig.steps}); a comma-separated ascending list "
                        "(e.g. 25,50,100,200,400) trains once to the largest and evaluates a snapshot at each "
                        "(the verdict judges prereg.toml's `[steps] primary` count; docs/formats.md)")
    p.add_argument("--lr", type=float, default=TrainConfig.lr,
                   help=f"adapter learning rate (default {TrainConfig.lr}; docs/lr_sweep.md)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size,
                   help=f"windows per adapter per step (default {TrainConfig.batch_size})")
    p.add_argument("--preset", default=None, help=f"model preset: {', '.join(PRESETS)} (default cpu)")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="a local Hugging Face causal-LM checkpoint directory as the base model, instead of a "
                        "preset (needs the hf extra; docs/own_model.md)")
    p.add_argument("--dtype", default=None,
                   help="frozen base weights: float32, bfloat16, float16 or auto (default: auto, the dtype measured "
                        "faster and accurate on this hardware; float32 for exact reproduction; docs/performance.md)")
    p.add_argument("--context", type=int, default=None,
                   help="with --model: context length in tokens (default: the model's limit, at most 512 on CPU)")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help="override the preset's base-model pretraining steps")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory budget of the run, e.g. 3GiB or 500MiB: training steps are split into micro-batches "
                        "to stay within it (default: what the process holds + half the memory available; on a GPU "
                        "of its free memory; docs/own_model.md)")
    p.add_argument("--out", default="runs", help="parent directory of run directories (default runs/)")
    p.add_argument("--prereg", default=None,
                   help="pre-registration file (default: ./prereg.toml, else the repository's prereg.toml)")
    p.add_argument("--no-loo", action="store_true",
                   help="do not train the leave-one-out controls loo:<user> (one per user, each on every other "
                        "user's text); the verdict then cannot split pooled's gain (docs/methods.md)")
    p.add_argument("--routing", action="store_true",
                   help="also build, from each seed's trained user adapters without retraining, and score the "
                        "routing rows avg:<a>+<b>, ens:<user> and noise:<user>@<sigma> (prereg.toml `[routing]`; "
                        "docs/routing.md), and record one adapter's storage in the manifest")
    p.add_argument("--executor", default="local",
                   help="where the units run: local (this process, default) or ray (Ray tasks; needs the ray "
                        "extra; docs/ray.md). A run resumes with either; the results are the same")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --executor ray: a running cluster's HOST:PORT, ray://HOST:PORT or auto "
                        "(default: start a local Ray instance on this machine's CPUs)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


def format_matrix(cells: pl.DataFrame) -> str:
    """The confusion matrix as an aligned text table: perplexity per byte, geometric mean over
    seeds; rows = adapters (users in column order, then the controls), columns = whose held-out
    text; the diagonal (own adapter on own text) marked with `*`."""
    gm = cells.group_by(["adapter", "eval"]).agg(pl.col("ppl").log().mean().exp().alias("ppl"))
    ppl = {(r["adapter"], r["eval"]): r["ppl"] for r in gm.iter_rows(named=True)}
    users = sorted(set(cells["eval"].to_list()), key=cells["eval"].to_list().index)
    rows = users + sorted({a for a, _ in ppl} - set(users), key=lambda a: (a not in CONTROLS, a))
    label_w = max(len("adapter \\ eval"), *(len(r) for r in rows))
    col_w = [max(9, len(u)) for u in users]

    def cell(a: str, j: str) -> str:
        v = ppl.get((a, j))
        return "-" if v is None else f"{v:.3f}" + ("*" if a == j else " ")

    widths = list(zip(users, col_w, strict=True))
    lines = ["adapter \\ eval".ljust(label_w) + "  " + "  ".join(u.rjust(w + 1) for u, w in widths)]
    lines.append("-" * len(lines[0]))
    for a in rows:
        lines.append(a.ljust(label_w) + "  " + "  ".join(cell(a, j).rjust(w + 1) for j, w in widths))
    return "\n".join(lines)


def summary(run_dir: Path, primary_steps: int | None = None) -> str:
    """What the grid prints when it is done: the matrix in words and numbers, and the next step.
    A run of several step counts shows the matrix at `primary_steps` (prereg.toml's `[steps]
    primary`; the largest count when it is not among them), never a mean over counts."""
    cells = pl.read_parquet(run_dir / "cells.parquet")
    at = ""
    if "steps" in cells.columns and cells["steps"].n_unique() > 1:
        counts = sorted(cells["steps"].unique().to_list())
        shown = primary_steps if primary_steps in counts else counts[-1]
        cells = cells.filter(pl.col("steps") == shown)
        which = "the pre-registered primary count" if shown == primary_steps else "the largest count"
        at = (f" at {shown} training steps ({which}; also trained: "
              f"{', '.join(str(c) for c in counts if c != shown)})")
    seeds = cells["seed"].n_unique()
    bad = cells.filter(pl.col("status") != OK)
    unit = "token" if (run_dir / "peft").is_dir() else "byte"  # a --model run: its tokenizer's tokens
    is_routing = pl.any_horizontal([pl.col("adapter").str.starts_with(p) for p in ROUTING_PREFIXES])
    routing = cells.filter(is_routing)
    lines = [f"run directory: {run_dir}",
             f"held-out perplexity per {unit}{at}, geometric mean over {seeds} seed{'s' if seeds != 1 else ''} "
             "(lower is better; * = own adapter on own text, which should win its column if adapters personalize):",
             "", format_matrix(cells.filter(~is_routing)), ""]
    if len(routing):
        kinds = ", ".join(f"{n} {p.rstrip(':')}" for p in ROUTING_PREFIXES
                          if (n := routing.filter(pl.col("adapter").str.starts_with(p))["adapter"].n_unique()))
        lines += [f"routing rows scored on every user's text ({kinds}; docs/routing.md): judged by the verdict", ""]
    if len(bad):
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(bad.group_by("status").len().iter_rows()))
        hint = ("; a diverged adapter usually means `--lr` is too high (docs/lr_sweep.md)"
                if (bad["status"] == DIVERGED).any() else "")
        lines.append(f"warning: {len(bad)} cell(s) not ok ({kinds}); the verdict's gate fails on diverged cells "
                     f"(statuses: docs/formats.md){hint}")
    lines.append(f"next: python -m validation.verdict --run {run_dir}   (statistics, criteria, report, exit code)")
    return "\n".join(lines)


def open_model(settings, fs, phases: dict) -> tuple:
    """The `--model` checkpoint, loaded (`load_s` in `phases`); in a dtype narrower than float32, with
    what that costs the margins measured (runners.hf.dtype_check; `dtype_check_s`) and, beyond its
    tolerance, loaded again in float32. Returns (checkpoint, settings with the dtype and the check)."""
    from runners.dtypes import DtypeChoice, probe
    from runners.hf.backend import open_checkpoint
    from runners.hf.dtype_check import cached_measure

    log = logging.getLogger("runners.grid")
    t0 = time.perf_counter()
    log.info("loading the checkpoint %s (%s) ...", settings.hf_model, settings.dtype)
    hf = open_checkpoint(settings.hf_model, settings.dtype, settings.device, settings.context)
    phases["load_s"] = time.perf_counter() - t0
    log.info("checkpoint loaded in %.1f s", phases["load_s"])
    if hf.dtype == "float32":
        return hf, settings
    t0 = time.perf_counter()
    log.info("measuring what %s costs the margins against float32 on a few held-out documents ...", hf.dtype)
    check = cached_measure(hf, fs, settings.device, probe(settings.device).what)
    phases["dtype_check_s"] = time.perf_counter() - t0
    log.info("%s%s", check.sentence(), " (cached)" if check.cached else "")
    settings = replace(settings, dtype_check=check.to_json())
    if check.ok:
        return hf, settings
    requested = settings.dtype_choice.requested if settings.dtype_choice else settings.dtype
    reason = (f"--dtype {requested} fell back to float32: {check.sentence()}, beyond the tolerance "
              "(docs/own_model.md)")
    log.warning("warning: %s; loading the checkpoint again in float32", reason)
    del hf
    t0 = time.perf_counter()
    hf = open_checkpoint(settings.hf_model, "float32", settings.device, settings.context)
    phases["load_s"] += time.perf_counter() - t0
    return hf, replace(settings, dtype="float32", dtype_choice=DtypeChoice(requested, "float32", reason))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        settings = settings_from_args(args)
        note = primary_steps_warning(settings.prereg_settings, settings.train.steps_list or (settings.train.steps,))
        if note:
            print(f"warning: {note}", file=sys.stderr)
        fs = load_fixtures(args.fixture_set, args.fixtures, parse_sources(args.source))
        hf, phases = None, {}
        if settings.hf_model is not None:  # loaded and checked before anything is written
            hf, settings = open_model(settings, fs, phases)
        check_corpus_sizes(fs, settings.model.block_size if hf is None else hf.model.config.block_size,
                           None if hf is None else hf.encoder, batch_size=settings.train.batch_size)
        if settings.prereg_settings is not None:
            check_users_usage(settings.prereg_settings, len(fs.users))
        check_limits(settings, fs)
        t0 = time.perf_counter()
        plan = plan_run(settings, fs, hf)  # refused here (exit 2) when nothing fits the memory budget
        phases["plan_s"] = time.perf_counter() - t0
        executor = make_executor(settings.executor, settings.ray_address, device=settings.device)
        try:
            run_dir = run_grid(fs, settings, hf=hf, executor=executor, plan=plan, phases=phases)
        finally:
            executor.close()
    except (UsageError, FixtureError, ExecutorError, rundir.RunLocked, rundir.RunDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a file removed under us: no traceback, finished seeds are kept
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: cannot read or write the run directory{where}: {exc.strerror or exc}; free space or "
              "pass another `--out`, then run the same command again (finished seeds are kept)",
              file=sys.stderr)
        return 2
    print(summary(run_dir, settings.prereg_settings.primary_steps if settings.prereg_settings else None))
    if all_diverged(run_dir):
        print(f"error: every trained adapter diverged (a non-finite loss or adapter in every seed): the run is "
              f"written to {run_dir}, but there is nothing to judge and its verdict fails the gate; `--lr "
              f"{settings.train.lr:g}` is too high for this model, lower it (docs/lr_sweep.md) and train again "
              f"(exit {EXIT_ALL_DIVERGED})", file=sys.stderr)
        return EXIT_ALL_DIVERGED
    return 0


# The run is written, but every adapter it trained diverged (docs/gate.md, section 4): not 0, so a
# pipeline stops before the verdict; not 1 (an uncaught Python error) nor 2 (bad input).
EXIT_ALL_DIVERGED = 3


def all_diverged(run_dir: Path) -> bool:
    """Whether every trained adapter's cell (users, pooled, loo:<user>; not `base`) of the run diverged."""
    cells = pl.read_parquet(run_dir / "cells.parquet", columns=["adapter", "status"])
    trained = cells.filter(pl.col("adapter") != BASE)
    return trained.height > 0 and bool((trained["status"] == DIVERGED).all())


if __name__ == "__main__":
    sys.exit(main())
