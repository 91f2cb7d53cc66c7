"""Studies of several adapter training-step counts: cells and documents with a `steps` column.

`load_steps(run=..., cells=..., docs=...)` is THE reader of a run directory or of external cells
with their step counts: it validates the `steps` column, checks that every count holds the same
cells (and documents), validates each count as a complete study (`validation.inputs.tables`), and returns a
`StepsStudy`: the tables with their `steps` column, the sorted counts, and `at(k)`, the
`StudyData` of one count that `validation.judgment.study.judge` takes. The verdict judges the
pre-registered primary count (`Prereg.primary_steps`) and the others as exploratory
(`validation.judgment.steps`); the step-interaction analysis reads the same `StepsStudy`.

A table without a `steps` column is a one-count study (`counts == ()`, `at(None)`). A `steps`
column with missing values, values that are not whole numbers >= 1, or a count lacking cells (or
documents) that another count has is an `InputError` naming the file and the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from validation.contract.manifest import Manifest, ManifestError, read_manifest
from validation.inputs.structure import check_structure
from validation.inputs.study import StudyData
from validation.inputs.tables import (
    KEY,
    InputError,
    check_docs_match,
    check_duplicates,
    normalize_cells,
    read_table,
    row_numbers,
)

STEPS = "steps"


@dataclass(frozen=True, eq=False)
class StepsStudy:
    """Validated cells (and documents) of every step count.

    `cells` / `docs`: the columns of `StudyData.cells` / `.docs` plus `steps` (Int64; null in a
    one-count study without a `steps` column). `counts`: the sorted step counts, () when the input
    has no `steps` column. `train_log`: the run's, with its `steps` column where it has one.
    """

    cells: pl.DataFrame
    docs: pl.DataFrame | None
    counts: tuple[int, ...]
    train_log: pl.DataFrame | None = None
    manifest: Manifest | None = None
    source: Path | None = None
    _slices: dict = field(default_factory=dict, repr=False)

    @property
    def several(self) -> bool:
        return len(self.counts) > 1

    def at(self, steps: int | None) -> StudyData:
        """The study at one step count (None: the only one), as `judge` takes it."""
        if steps is None and self.several:
            raise InputError(f"{self.source}: holds several adapter training-step counts {list(self.counts)} "
                             "(column `steps`); judge it with `python -m validation.verdict`, which reads "
                             "prereg.toml's `[steps] primary`, or select one count's rows.")
        if steps is not None and self.counts and steps not in self.counts:
            raise InputError(f"{self.source}: no cells at steps = {steps}; the step counts are {list(self.counts)}.")
        key = steps if self.counts else None
        if key not in self._slices:
            self._slices[key] = _slice(self, key)
        return self._slices[key]


def _slice(study: StepsStudy, k: int | None) -> StudyData:
    def part(df: pl.DataFrame | None) -> pl.DataFrame | None:
        if df is None:
            return None
        if k is None or STEPS not in df.columns:
            return df.drop(STEPS, strict=False)
        return df.filter(pl.col(STEPS) == k).drop(STEPS)

    log = study.train_log
    if log is not None and k is not None and STEPS in log.columns:
        log = log.filter(pl.col(STEPS) == k)
    return StudyData(cells=part(study.cells), docs=part(study.docs), train_log=log, manifest=study.manifest,
                     source=study.source)


def steps_column(raw: pl.DataFrame, src: str) -> pl.Series | None:
    """The `steps` column as Int64 (None when absent); missing or invalid values are an InputError."""
    if STEPS not in raw.columns:
        return None
    col = raw[STEPS]
    if col.null_count():
        raise InputError(f"{src}: column `{STEPS}` is partial: no step count at row(s) {row_numbers(col.is_null())}; "
                         "give every row its adapter training-step count, or drop the column for a one-count study.")
    if col.dtype == pl.Boolean or not (col.dtype.is_numeric()):
        raise InputError(f"{src}: column `{STEPS}` must hold whole numbers of training steps; got {col.dtype}.")
    v = col.cast(pl.Float64).to_numpy()
    bad = ~np.isfinite(v) | (v != np.round(v)) | (v < 1)
    if bad.any():
        raise InputError(f"{src}: column `{STEPS}` must hold whole numbers >= 1 (training steps); not at row(s) "
                         f"{row_numbers(pl.Series(bad))} (e.g. {float(v[bad][0])!r}).")
    return col.cast(pl.Int64)


def _check_complete(table: pl.DataFrame, src: str, key: list[str], counts: tuple[int, ...]) -> None:
    """Every step count holds the same `key` rows: a count lacking one is a partial `steps` column."""
    have = table.select([STEPS] + key)
    every = have.select(key).unique().join(pl.DataFrame({STEPS: list(counts)}, schema={STEPS: pl.Int64}),
                                           how="cross")
    missing = every.join(have, on=[STEPS] + key, how="anti").sort([STEPS] + key)
    if missing.height:
        r = missing.row(0, named=True)
        where = ", ".join(f"{c}={r[c]!r}" for c in key)
        raise InputError(f"{src}: column `{STEPS}` is partial: {missing.height} row(s) present at some step counts "
                         f"are missing at others, e.g. {where} at steps = {r[STEPS]} (the counts are "
                         f"{list(counts)}); every count needs the same cells, or judge one count's rows alone.")


def _normalized(raw: pl.DataFrame, src: str, steps: pl.Series | None, **kw) -> pl.DataFrame:
    out = normalize_cells(raw, src, **kw)
    return out if steps is None else out.with_columns(steps.alias(STEPS))


def _diverged_rows(raw_docs: pl.DataFrame, cells: pl.DataFrame, steps: pl.Series | None) -> pl.Series | None:
    """Per document row: does it belong to a cell marked diverged (at its step count)?"""
    from common.names import normalize_name

    key = KEY + ([STEPS] if steps is not None and STEPS in cells.columns else [])
    if not {"adapter", "eval"} <= set(raw_docs.columns):
        return None
    diverged = cells.filter(pl.col("status") == "diverged").select(key).with_columns(pl.lit(True).alias("_diverged"))
    try:
        cols = [(pl.col("seed").cast(pl.Int64, strict=False) if "seed" in raw_docs.columns
                 else pl.lit(0, dtype=pl.Int64)).alias("seed"),
                pl.col("adapter").cast(pl.Utf8).map_elements(normalize_name, return_dtype=pl.Utf8),
                pl.col("eval").cast(pl.Utf8).map_elements(normalize_name, return_dtype=pl.Utf8)]
        keys = raw_docs.select(cols)
        if STEPS in key:
            keys = keys.with_columns(steps.alias(STEPS))
    except Exception:
        return None
    joined = keys.with_row_index("_row").join(diverged, on=key, how="left").sort("_row")
    return joined["_diverged"].fill_null(False)


def load_steps_tables(cells_path: str | Path, docs_path: str | Path | None = None, *,
                      train_log: pl.DataFrame | None = None, manifest: Manifest | None = None,
                      source: Path | None = None) -> StepsStudy:
    """External cells (and documents), with or without a `steps` column -> a validated StepsStudy."""
    src = str(cells_path)
    raw = read_table(cells_path)
    steps = steps_column(raw, src)
    cells = _normalized(raw, src, steps)
    counts = () if steps is None else tuple(sorted(set(steps.to_list())))
    check_duplicates(cells, src, KEY if steps is None else [STEPS] + KEY)
    if steps is not None:
        _check_complete(cells, src, KEY, counts)
    for k in counts or (None,):
        part = cells if k is None else cells.filter(pl.col(STEPS) == k)
        check_structure(part, src if k is None else f"{src} (steps = {k})")
    docs = None
    if docs_path is not None:
        dsrc = str(docs_path)
        raw_docs = read_table(docs_path)
        dsteps = steps_column(raw_docs, dsrc)
        if (dsteps is None) != (steps is None):
            has, lacks = (dsrc, src) if steps is None else (src, dsrc)
            raise InputError(f"{lacks}: no column `{STEPS}`, but {has} has one; both files need it, or neither.")
        docs = _normalized(raw_docs, dsrc, dsteps, per_doc=True, exempt=_diverged_rows(raw_docs, cells, dsteps))
        check_duplicates(docs, dsrc, (KEY if dsteps is None else [STEPS] + KEY) + ["doc_id"])
        if dsteps is not None:
            dcounts = tuple(sorted(set(dsteps.to_list())))
            if dcounts != counts:
                raise InputError(f"{dsrc}: column `{STEPS}` holds counts {list(dcounts)}, the cells {list(counts)}; "
                                 "both files must come from the same run.")
            _check_complete(docs, dsrc, KEY + ["doc_id"], counts)
        for k in counts or (None,):
            dpart = docs if k is None else docs.filter(pl.col(STEPS) == k)
            cpart = cells if k is None else cells.filter(pl.col(STEPS) == k)
            check_docs_match(dpart, cpart, dsrc if k is None else f"{dsrc} (steps = {k})")
    return StepsStudy(cells=cells, docs=docs, counts=counts, train_log=train_log, manifest=manifest,
                      source=Path(source if source is not None else cells_path))


def load_steps_run(run_dir: str | Path) -> StepsStudy:
    """A runner output directory (docs/formats.md) -> a validated StepsStudy."""
    run_dir = Path(run_dir)
    manifest = None
    mpath = run_dir / "manifest.json"
    if mpath.is_file():
        try:
            manifest = read_manifest(mpath)
        except ManifestError as e:
            raise InputError(f"{e}; the run directory is damaged: rerun `python -m runners.grid` with the "
                             "same flags to rewrite it.") from None
    docs_path = run_dir / "docs.parquet"
    tpath = run_dir / "train_log.parquet"
    return load_steps_tables(run_dir / "cells.parquet", docs_path if docs_path.is_file() else None,
                             train_log=read_table(tpath) if tpath.is_file() else None, manifest=manifest,
                             source=run_dir)


def load_steps(*, run: str | Path | None = None, cells: str | Path | None = None,
               docs: str | Path | None = None) -> StepsStudy:
    """THE multi-count reader: a run directory (`run`), or external `cells` (and `docs`)."""
    if (run is None) == (cells is None):
        raise ValueError("give `run` or `cells`")
    return load_steps_run(run) if run is not None else load_steps_tables(cells, docs)
