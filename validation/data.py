"""Reading and validating the inputs: a run directory, or external cells (and documents).

Every error is an `InputError` (a ValueError) naming the file, the row (1-based, header not
counted) or the column at fault, and saying how to fix it. Nothing here writes a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from common.contract import CONTROLS
from validation.manifest import ManifestError, read_manifest
from validation.results import StudyData

STATUSES = ("ok", "diverged", "worse_than_base")
KEY = ["seed", "adapter", "eval"]


class InputError(ValueError):
    """Bad input: the message names the file, row or column."""


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a CSV or Parquet file; an empty or undecodable file is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty.")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pl.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".txt", ".tsv"):
            raw = path.read_bytes()
            try:
                if b"\x00" in raw:
                    raise UnicodeDecodeError("utf-8", raw, raw.index(b"\x00"), raw.index(b"\x00") + 1, "NUL byte")
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}: cannot be read as csv: not UTF-8 text (byte {e.start}).") from None
            df = pl.read_csv(path, separator="\t" if path.suffix.lower() == ".tsv" else ",",
                             infer_schema_length=None)
        else:
            raise InputError(f"{path}: unknown format `{path.suffix}`; use .csv or .parquet.")
    except InputError:
        raise
    except Exception as e:  # polars raises many types for undecodable input
        raise InputError(f"{path}: cannot be read as {path.suffix.lstrip('.') or 'a table'}: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if df.height == 0:
        raise InputError(f"{path}: the file has no rows.")
    return df


def _rows(mask: pl.Series, limit: int = 5) -> str:
    idx = np.flatnonzero(mask.fill_null(True).to_numpy())[:limit] + 1
    return ", ".join(str(i) for i in idx)


def _require_columns(df: pl.DataFrame, src: str, required: list[str]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{src}: missing column(s) {missing}; found {df.columns}.")


def _numeric(df: pl.DataFrame, src: str, col: str, *, positive: bool, finite_only: pl.Series) -> pl.Series:
    try:
        s = df[col].cast(pl.Float64, strict=True)
    except Exception:
        raise InputError(f"{src}: column `{col}` must be numeric; got {df[col].dtype}.") from None
    v = s.to_numpy()
    bad = finite_only.to_numpy() & ~np.isfinite(v)
    if bad.any():
        raise InputError(f"{src}: column `{col}` has NaN, infinite or missing values at row(s) "
                         f"{_rows(pl.Series(bad))}.")
    if positive:
        bad = finite_only.to_numpy() & ~(v > 0)
        if bad.any():
            raise InputError(f"{src}: column `{col}` must be > 0; not at row(s) {_rows(pl.Series(bad))}.")
    return s


def normalize_cells(df: pl.DataFrame, source: str | Path = "<cells>", *, per_doc: bool = False,
                    exempt: pl.Series | None = None) -> pl.DataFrame:
    """Validate one cells (or docs, `per_doc=True`) table and return it with canonical columns.

    Output columns: seed (i64), adapter, eval, [doc_id], nll_sum, n_tokens, n_bytes, logppl, ppl,
    bpb, status; nll_sum/n_tokens/n_bytes/bpb may be null (only `ppl` given). Rows of status
    "diverged" (and rows where the boolean `exempt` is True, e.g. documents of a diverged cell)
    may hold any number: they are excluded from every statistic.
    """
    src = str(source)
    _require_columns(df, src, ["adapter", "eval"] + (["doc_id"] if per_doc else []))
    has_nll = "nll_sum" in df.columns and "n_tokens" in df.columns
    if per_doc and not has_nll:
        raise InputError(f"{src}: per-document rows need columns `nll_sum` and `n_tokens`; found {df.columns}.")
    if not has_nll and "ppl" not in df.columns:
        raise InputError(f"{src}: need a `ppl` column, or `nll_sum` and `n_tokens`; found {df.columns}.")
    n = df.height
    if "seed" not in df.columns:
        df = df.with_columns(pl.lit(0, dtype=pl.Int64).alias("seed"))
    try:
        seed = df["seed"].cast(pl.Int64, strict=True)
    except Exception:
        raise InputError(f"{src}: column `seed` must hold integers; got {df['seed'].dtype}.") from None
    if seed.null_count():
        raise InputError(f"{src}: column `seed` is empty at row(s) {_rows(seed.is_null())}.")
    for col in ("adapter", "eval") + (("doc_id",) if per_doc else ()):
        s = df[col].cast(pl.Utf8)
        bad = s.is_null() | (s.str.strip_chars() == "")
        if bad.any():
            raise InputError(f"{src}: column `{col}` is empty at row(s) {_rows(bad)}.")
    status = (df["status"].cast(pl.Utf8).fill_null("ok") if "status" in df.columns
              else pl.Series("status", ["ok"] * n))
    unknown = ~status.is_in(list(STATUSES))
    if unknown.any():
        raise InputError(f"{src}: column `status` must be one of {list(STATUSES)}; row(s) "
                         f"{_rows(unknown)} hold {status.filter(unknown).unique().to_list()[:3]}.")
    checked = status != "diverged"
    if exempt is not None:
        checked = checked & ~exempt
    out: dict[str, Any] = {
        "seed": seed,
        "adapter": df["adapter"].cast(pl.Utf8).str.strip_chars(),
        "eval": df["eval"].cast(pl.Utf8).str.strip_chars(),
    }
    if per_doc:
        out["doc_id"] = df["doc_id"].cast(pl.Utf8)
    nll = tok = nbytes = None
    if has_nll:
        nll = _numeric(df, src, "nll_sum", positive=False, finite_only=checked)
        tok = _numeric(df, src, "n_tokens", positive=True, finite_only=checked)
        logppl = nll / tok
    else:
        ppl_in = _numeric(df, src, "ppl", positive=True, finite_only=checked)
        logppl = ppl_in.log()
    if "ppl" in df.columns and has_nll:
        given = _numeric(df, src, "ppl", positive=True, finite_only=checked).log()
        # a `ppl` that disagrees with exp(nll_sum / n_tokens) means a corrupted or mixed-up file
        off = checked.to_numpy() & ~(np.abs(given.to_numpy() - logppl.to_numpy())
                                     <= 1e-6 * np.maximum(1.0, np.abs(logppl.to_numpy())))
        if off.any():
            raise InputError(f"{src}: column `ppl` disagrees with exp(`nll_sum` / `n_tokens`) at row(s) "
                             f"{_rows(pl.Series(off))}; drop `ppl` or fix the file.")
    if "n_bytes" in df.columns:
        nbytes = _numeric(df, src, "n_bytes", positive=True, finite_only=checked)
    null = pl.Series([None] * n, dtype=pl.Float64)
    out.update(
        nll_sum=nll if nll is not None else null,
        n_tokens=tok if tok is not None else null,
        n_bytes=nbytes if nbytes is not None else null,
        logppl=logppl,
        ppl=logppl.exp(),
        bpb=(nll / nbytes / np.log(2)) if (nll is not None and nbytes is not None) else null,
        status=status,
    )
    return pl.DataFrame(out)


def check_duplicates(cells: pl.DataFrame, src: str, key: list[str]) -> None:
    dup = cells.select(key).is_duplicated()
    if dup.any():
        first = cells.filter(dup).row(0, named=True)
        raise InputError(f"{src}: duplicated cell(s) at row(s) {_rows(dup)}: "
                         + ", ".join(f"{k}={first[k]!r}" for k in key)
                         + " appears more than once; keep one row per " + " x ".join(key) + ".")


def check_structure(cells: pl.DataFrame, src: str) -> None:
    """Users are the `eval` values; each needs its own adapter row; other rows must be controls."""
    users = sorted(set(cells["eval"].to_list()))
    adapters = set(cells["adapter"].to_list())
    if len(users) < 2:
        raise InputError(f"{src}: column `eval` names {len(users)} user(s) {users}; "
                         "the confusion matrix needs at least two users.")
    bad_eval = [u for u in users if u in CONTROLS]
    if bad_eval:
        raise InputError(f"{src}: column `eval` holds control name(s) {bad_eval}; controls are adapters only.")
    no_diag = [u for u in users if u not in adapters]
    if no_diag:
        raise InputError(f"{src}: user(s) {no_diag} in column `eval` have no diagonal cell "
                         "(no row with that `adapter`).")
    diag_rows = cells.filter(pl.col("adapter") == pl.col("eval"))
    no_diag = [u for u in users if u not in set(diag_rows["eval"].to_list())]
    if no_diag:
        raise InputError(f"{src}: user(s) {no_diag} have no diagonal cell (adapter == eval).")
    stray = sorted(adapters - set(users) - set(CONTROLS))
    if stray:
        raise InputError(f"{src}: column `adapter` holds {stray}, which are neither users "
                         f"(values of `eval`) nor controls {list(CONTROLS)}.")


def load_external(cells_path: str | Path, docs_path: str | Path | None = None) -> StudyData:
    """External cells (CSV/Parquet) and optional per-document rows -> validated StudyData."""
    cells = normalize_cells(read_table(cells_path), cells_path)
    check_duplicates(cells, str(cells_path), KEY)
    check_structure(cells, str(cells_path))
    docs = None
    if docs_path is not None:
        raw = read_table(docs_path)
        docs = normalize_cells(raw, docs_path, per_doc=True, exempt=_in_diverged_cell(raw, cells))
        check_duplicates(docs, str(docs_path), KEY + ["doc_id"])
        _check_docs_match(docs, cells, str(docs_path))
    return StudyData(cells=cells, docs=docs, source=Path(cells_path))


def _in_diverged_cell(raw_docs: pl.DataFrame, cells: pl.DataFrame) -> pl.Series | None:
    """Per document row: does it belong to a cell marked diverged? (None if it cannot be told.)"""
    if not {"adapter", "eval"} <= set(raw_docs.columns):
        return None
    diverged = cells.filter(pl.col("status") == "diverged").select(KEY).with_columns(
        pl.lit(True).alias("_diverged"))
    try:
        keys = raw_docs.select(
            (pl.col("seed").cast(pl.Int64, strict=False) if "seed" in raw_docs.columns
             else pl.lit(0, dtype=pl.Int64)).alias("seed"),
            pl.col("adapter").cast(pl.Utf8).str.strip_chars(),
            pl.col("eval").cast(pl.Utf8).str.strip_chars())
    except Exception:
        return None
    joined = keys.with_row_index("_row").join(diverged, on=KEY, how="left").sort("_row")
    return joined["_diverged"].fill_null(False)


def _check_docs_match(docs: pl.DataFrame, cells: pl.DataFrame, src: str) -> None:
    extra = docs.select(KEY).unique().join(cells.select(KEY), on=KEY, how="anti").sort(KEY)
    if extra.height:
        r = extra.row(0, named=True)
        raise InputError(f"{src}: documents for cell(s) absent from the cells table, e.g. "
                         f"seed={r['seed']}, adapter={r['adapter']!r}, eval={r['eval']!r}.")


def resolve_run(run: str | Path | None, runs_root: str | Path = "runs") -> Path:
    """`--run DIR`, or `runs/latest` (a symlink, or a file holding the run's name or path)."""
    if run is not None:
        path = Path(run)
    else:
        latest = Path(runs_root) / "latest"
        if not latest.exists():
            raise InputError(f"{latest}: no run found; run `python -m runners.grid` first, "
                             "or pass `--run DIR` or `--cells FILE`.")
        if latest.is_file():
            target = latest.read_text().strip()
            path = Path(target) if Path(target).is_absolute() else Path(runs_root) / target
        else:
            path = latest.resolve()
    if not path.is_dir():
        raise InputError(f"{path}: run directory not found.")
    return path


def load_run(run_dir: str | Path) -> StudyData:
    """A runner output directory (docs/formats.md) -> validated StudyData."""
    run_dir = Path(run_dir)
    cells_path = run_dir / "cells.parquet"
    manifest = None
    mpath = run_dir / "manifest.json"
    if mpath.is_file():
        try:
            manifest = read_manifest(mpath)
        except ManifestError as e:
            raise InputError(f"{e}; the run directory is damaged: rerun `python -m runners.grid` with the "
                             "same flags to rewrite it.") from None
    docs_path = run_dir / "docs.parquet"
    data = load_external(cells_path, docs_path if docs_path.is_file() else None)
    train_log = None
    tpath = run_dir / "train_log.parquet"
    if tpath.is_file():
        train_log = read_table(tpath)
    return StudyData(cells=data.cells, docs=data.docs, train_log=train_log, manifest=manifest,
                     source=run_dir)
