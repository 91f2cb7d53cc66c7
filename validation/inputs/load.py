"""Loading a study: a run directory, or external cells (and documents) -> validated `StudyData`.

The tables are read and validated by `validation.inputs.tables` and every step count of a sweep by
`validation.inputs.sweep`; their names are re-exported here (`from validation.inputs.load import
InputError, normalize_cells, ...` keeps working). Every error is an `InputError` (a ValueError)
naming the file, the row (1-based, header not counted) or the column at fault, and saying how to
fix it. Nothing here writes a file.
"""

from __future__ import annotations

from pathlib import Path

from common.contract import CONTROLS
from validation.inputs.structure import check_loo_controls, check_structure
from validation.inputs.study import StudyData
from validation.inputs.sweep import load_steps_run, load_steps_tables
from validation.inputs.tables import (
    KEY,
    MAX_LOG_PPL,
    STATUSES,
    TABLE_MEMORY_FACTOR,
    InputError,
    check_docs_match,
    check_duplicates,
    normalize_cells,
    read_table,
    row_numbers,
)

__all__ = [
    "CONTROLS", "KEY", "MAX_LOG_PPL", "STATUSES", "TABLE_MEMORY_FACTOR", "InputError", "check_docs_match",
    "check_duplicates", "check_loo_controls", "check_structure", "load_external", "load_run", "normalize_cells",
    "read_table", "resolve_run", "row_numbers",
]


def load_external(cells_path: str | Path, docs_path: str | Path | None = None, steps: int | None = None) -> StudyData:
    """External cells (CSV/Parquet) and optional per-document rows -> validated StudyData.

    A file with a `steps` column holding several counts needs `steps`, the count to return; the
    tables of every count: `validation.inputs.sweep.load_steps`."""
    return load_steps_tables(cells_path, docs_path).at(steps)


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


def load_run(run_dir: str | Path, steps: int | None = None) -> StudyData:
    """A runner output directory (docs/formats.md) -> validated StudyData; a run of several step
    counts needs `steps` (every count: `validation.inputs.sweep.load_steps`)."""
    return load_steps_run(run_dir).at(steps)
