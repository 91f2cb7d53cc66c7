"""The run directory: its id, its lock, its tables and the `latest` link. Every write is atomic."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import polars as pl

from common.atomic import atomic_write_text, atomic_write_with
from common.contract import DIVERGED, OK, WORSE_THAN_BASE
from common.hashing import sha256_file, sha256_json
from common.lock import RunLock, RunLocked

__all__ = ["DIVERGED", "OK", "WORSE_THAN_BASE", "RunLock", "RunLocked"]  # statuses and the lock, re-exported

# `steps`: the adapter training-step count the row was evaluated at (`--steps`; every row of a
# one-count run holds that count)
DOC_SCHEMA = {"seed": pl.Int64, "steps": pl.Int64, "adapter": pl.Utf8, "eval": pl.Utf8, "doc_id": pl.Utf8,
              "nll_sum": pl.Float64, "n_tokens": pl.Int64, "n_bytes": pl.Int64, "ppl": pl.Float64, "bpb": pl.Float64,
              "status": pl.Utf8}
CELL_COLUMNS = ["seed", "steps", "adapter", "eval", "nll_sum", "n_tokens", "n_bytes", "ppl", "bpb", "status"]
# train_log: at each step count k, the losses of steps 0..k-1 (what a k-step run logs)
LOG_SCHEMA = {"seed": pl.Int64, "steps": pl.Int64, "adapter": pl.Utf8, "step": pl.Int64, "loss": pl.Float64}


class RunDirError(RuntimeError):
    """A file of the run directory is damaged in a way the runner cannot repair by redoing a seed."""


def file_hashes(run_dir: Path, paths: list[Path]) -> dict[str, str]:
    """{path relative to the run directory: SHA-256} of the files a seed wrote (for its done.json)."""
    return {p.relative_to(run_dir).as_posix(): sha256_file(p) for p in paths}


def seed_problem(run_dir: Path, done: Path) -> tuple[dict | None, str | None]:
    """Read a seed's done.json and check every file it lists against its SHA-256.

    Returns (the record, None) when the seed can be kept, else (record or None, what is wrong);
    a seed that cannot be verified is redone, never trusted.
    """
    try:
        kept = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"`{done}` is unreadable ({type(exc).__name__})"
    files = kept.get("files") if isinstance(kept, dict) else None
    if not isinstance(files, dict) or not files:
        return (kept if isinstance(kept, dict) else None), f"`{done}` records no file hashes (an older runner)"
    for rel, digest in sorted(files.items()):
        path = run_dir / rel
        if not path.is_file():
            return kept, f"`{path}` is missing"
        try:
            actual = sha256_file(path)
        except OSError as exc:
            return kept, f"`{path}` cannot be read ({exc.strerror})"
        if actual != digest:
            return kept, f"`{path}` is corrupt (sha256 {actual[:12]}... != recorded {str(digest)[:12]}...)"
    return kept, None


def read_seed_table(path: Path) -> pl.DataFrame:
    """A per-seed table written by this runner; damage is a RunDirError naming the file."""
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - polars raises many types for a damaged file
        raise RunDirError(f"`{path}` cannot be read ({type(exc).__name__}); delete its seed folder "
                          f"`{path.parent}` and run the same command again to redo that seed") from None


def run_id(config: dict, label: str) -> str:
    """`<label>-<hash>`: the hash covers the full configuration, so a command finds its run again."""
    digest = sha256_json(config, 12)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
    return f"{safe}-{digest}"


def write_parquet(df: pl.DataFrame, path: Path) -> Path:
    return atomic_write_with(path, lambda p: df.write_parquet(p))


def write_json(obj: dict, path: Path) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def with_rates(df: pl.DataFrame) -> pl.DataFrame:
    """Add ppl = exp(nll_sum / n_tokens) and bpb = nll_sum / n_bytes / ln 2."""
    return df.with_columns(
        (pl.col("nll_sum") / pl.col("n_tokens")).exp().alias("ppl"),
        (pl.col("nll_sum") / pl.col("n_bytes") / math.log(2)).alias("bpb"),
    )


def cells_from_docs(docs: pl.DataFrame) -> pl.DataFrame:
    """One row per (seed, steps, adapter, eval): sums over documents; status is the adapter's (worst kept)."""
    key = ["seed", "steps", "adapter", "eval"] if "steps" in docs.columns else ["seed", "adapter", "eval"]
    cells = (docs.group_by(key, maintain_order=True)
             .agg(pl.col("nll_sum").sum(), pl.col("n_tokens").sum(), pl.col("n_bytes").sum(), pl.col("status").first()))
    cells = cells.with_columns(
        pl.when(pl.col("nll_sum").is_finite()).then(pl.col("status")).otherwise(pl.lit(DIVERGED)).alias("status"))
    return with_rates(cells).select([c for c in CELL_COLUMNS if c in cells.columns or c in ("ppl", "bpb")])


def point_latest(out: Path, run_dir: Path) -> None:
    """Atomically make `<out>/latest` a relative symlink to `run_dir`."""
    tmp = out / f".latest.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, out / "latest")
