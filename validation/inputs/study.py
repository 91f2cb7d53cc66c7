"""`StudyData`: the validated input of `judge`, as the loaders (`validation.inputs.load`,
`validation.inputs.sweep`) return it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from common.contract import CONTROLS, LOO_PREFIX
from validation.contract.manifest import Manifest


@dataclass(frozen=True, eq=False)
class StudyData:
    """The validated input of `judge`; the report reads its tables from here.

    `cells`: one row per (seed, adapter, eval), columns `seed:i64, adapter:str, eval:str,
    nll_sum, n_tokens, n_bytes (may be null), ppl, bpb (may be null), status`.
    `docs`: the same per held-out document plus `doc_id`, or None.
    `train_log`: `seed, adapter, step, loss`, or None. `manifest`: the run's manifest.json.
    """

    cells: pl.DataFrame
    docs: pl.DataFrame | None = None
    train_log: pl.DataFrame | None = None
    manifest: Manifest | None = None
    source: Path | None = None

    @property
    def users(self) -> tuple[str, ...]:
        """Evaluation users, sorted; every one must also be an adapter row."""
        return tuple(sorted(self.cells["eval"].unique().to_list()))

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted(int(s) for s in self.cells["seed"].unique().to_list()))

    @property
    def controls(self) -> tuple[str, ...]:
        present = set(self.cells["adapter"].unique().to_list())
        loo = tuple(sorted(a for a in present if a.startswith(LOO_PREFIX)))
        return tuple(c for c in CONTROLS if c in present) + loo
