"""From tidy tables to the dense arrays the statistics work on, and the cell problems found.

Layout (see `validation.stats.metrics`): adapter rows = the J users in sorted order, then the controls
present (`base`, `pooled`), then the leave-one-out controls `loo:<user>` in user order when present
(for every user: `validation.inputs.structure.check_loo_controls`); columns = the same J users. Only the first J
rows are user adapters ("other adapters" of the margins). Missing and diverged cells are NaN.
The routing controls (`avg:`, `ens:`, `noise:`; docs/routing.md) are left out, so no figure but
`validation.judgment.routing`'s sees them; `build_arrays(data, routing=True)` appends them after the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from common.contract import BASE, CONTROLS, POOLED, loo_name
from validation.inputs.structure import check_structure, drop_routing, routing_rows
from validation.inputs.study import StudyData
from validation.inputs.tables import KEY, InputError, check_duplicates


@dataclass(frozen=True, eq=False)
class CellProblems:
    """(seed, adapter, eval) triples, each a problem for the gate."""

    missing: tuple[tuple[int, str, str], ...]
    diverged: tuple[tuple[int, str, str], ...]
    worse_than_base: tuple[tuple[int, str, str], ...]


@dataclass(frozen=True, eq=False)
class StudyArrays:
    users: tuple[str, ...]          # J evaluation users = the first J adapter rows
    adapters: tuple[str, ...]       # A rows: users, then controls present
    seeds: tuple[int, ...]          # S
    logppl: np.ndarray              # (S, A, J) token-level log perplexity; NaN = missing/diverged
    doc_nll: tuple[np.ndarray, ...] | None  # per column j: (n_j, S, A) NLL sums per document
    doc_tok: tuple[np.ndarray, ...] | None  # per column j: (n_j, S, A) token counts
    problems: CellProblems
    warnings: tuple[str, ...]

    @property
    def pooled(self) -> int | None:
        return self.adapters.index(POOLED) if POOLED in self.adapters else None

    @property
    def base(self) -> int | None:
        return self.adapters.index(BASE) if BASE in self.adapters else None

    @property
    def loo(self) -> np.ndarray | None:
        """(J,) row index of `loo:<user j>` for each column j; None without leave-one-out controls."""
        names = [loo_name(u) for u in self.users]
        if not all(n in self.adapters for n in names):
            return None
        return np.array([self.adapters.index(n) for n in names], dtype=int)


def _triples(df: pl.DataFrame) -> tuple[tuple[int, str, str], ...]:
    return tuple((int(s), a, e) for s, a, e in df.select(KEY).sort(KEY).iter_rows())


def build_arrays(data: StudyData, routing: bool = False) -> StudyArrays:
    """Validate the structure of `data.cells` and lay it out as (S, A, J); see module doc.

    `routing=True` keeps the routing controls, as rows after every other (sorted by name: the
    `avg:`, then `ens:`, then `noise:` rows); the first rows are then those of `routing=False`."""
    cells = data.cells
    src = str(data.source) if data.source else "<cells>"
    missing_cols = [c for c in KEY + ["logppl", "status"] if c not in cells.columns]
    if missing_cols:
        raise InputError(f"{src}: cells lack column(s) {missing_cols}; build them with "
                         "`validation.inputs.tables.normalize_cells`.")
    check_structure(cells, src)   # on every row, routing controls included
    extra: tuple[str, ...] = ()
    if routing:
        extra = tuple(sorted(set(cells.filter(routing_rows(cells))["adapter"].to_list())))
    else:
        cells = drop_routing(cells)
        data = StudyData(cells=cells, docs=drop_routing(data.docs), source=data.source)
    users = tuple(sorted(set(cells["eval"].to_list())))
    present = set(cells["adapter"].to_list())
    adapters = (users + tuple(c for c in CONTROLS if c in present)
                + tuple(loo_name(u) for u in users if loo_name(u) in present) + extra)
    seeds = tuple(sorted(int(s) for s in cells["seed"].unique().to_list()))
    warnings: list[str] = []

    # One policy for duplicated cells, whatever the path (files or a StudyData built in code):
    # an input error naming the rows, never a silent choice of one of the copies.
    check_duplicates(cells, src, KEY)
    diverged = _triples(cells.filter(pl.col("status") == "diverged"))
    worse = _triples(cells.filter(pl.col("status") == "worse_than_base"))
    full = pl.DataFrame({"seed": list(seeds)}).join(pl.DataFrame({"adapter": list(adapters)}), how="cross") \
        .join(pl.DataFrame({"eval": list(users)}), how="cross")
    missing = _triples(full.join(cells.select(KEY), on=KEY, how="anti"))

    s_idx, a_idx, j_idx = _indices(cells, seeds, adapters, users)
    logppl = np.full((len(seeds), len(adapters), len(users)), np.nan)
    vals = cells["logppl"].to_numpy().astype(float)
    vals[(cells["status"] == "diverged").to_numpy()] = np.nan
    logppl[s_idx, a_idx, j_idx] = vals

    doc_nll = doc_tok = None
    if data.docs is not None:
        doc_nll, doc_tok, doc_warn = _doc_arrays(data.docs, cells, seeds, adapters, users)
        warnings += doc_warn
    return StudyArrays(users, adapters, seeds, logppl, doc_nll, doc_tok,
                       CellProblems(missing, diverged, worse), tuple(warnings))


def _indices(df: pl.DataFrame, seeds, adapters, users) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s_map = {s: i for i, s in enumerate(seeds)}
    a_map = {a: i for i, a in enumerate(adapters)}
    j_map = {u: i for i, u in enumerate(users)}
    return (np.array([s_map[int(s)] for s in df["seed"].to_list()], dtype=int),
            np.array([a_map[a] for a in df["adapter"].to_list()], dtype=int),
            np.array([j_map[u] for u in df["eval"].to_list()], dtype=int))


def _doc_arrays(docs: pl.DataFrame, cells: pl.DataFrame, seeds, adapters, users):
    """Per column j, (n_j, S, A) arrays; None (with a warning) when documents cannot be paired."""
    warnings: list[str] = []
    docs = docs.unique(KEY + ["doc_id"], keep="first", maintain_order=True)
    docs = docs.join(cells.select(KEY + ["status"]).rename({"status": "cell_status"}), on=KEY, how="inner")
    nll_out, tok_out = [], []
    for user in users:
        col = docs.filter(pl.col("eval") == user)
        doc_ids = sorted(set(col["doc_id"].to_list()))
        n_cells = cells.filter(pl.col("eval") == user).height
        per_cell = col.group_by(KEY).len()
        if (per_cell.height != n_cells or not len(doc_ids)
                or (per_cell["len"] != len(doc_ids)).any()):
            # never a silent fallback to a weaker (seeds-only) analysis: docs/gate.md
            raise InputError(f"documents of eval user {user!r} are missing or differ between "
                             "adapters/seeds, so they cannot be paired with the cells; fix the "
                             "per-document table (validation.inputs.load.load_external names the cell)")
        d_map = {d: i for i, d in enumerate(doc_ids)}
        s_idx, a_idx, _ = _indices(col, seeds, adapters, users)
        d_idx = np.array([d_map[d] for d in col["doc_id"].to_list()], dtype=int)
        nll = np.full((len(doc_ids), len(seeds), len(adapters)), np.nan)
        tok = np.full_like(nll, np.nan)
        ok = (col["cell_status"] != "diverged").to_numpy()
        nll[d_idx[ok], s_idx[ok], a_idx[ok]] = col["nll_sum"].to_numpy()[ok]
        tok[d_idx[ok], s_idx[ok], a_idx[ok]] = col["n_tokens"].to_numpy()[ok]
        nll_out.append(nll)
        tok_out.append(tok)
    # The point estimates come from the cells; the bootstrap from the documents: they must agree.
    for j, user in enumerate(users):
        c = cells.filter((pl.col("eval") == user) & (pl.col("status") != "diverged"))
        s_idx, a_idx, _ = _indices(c, seeds, adapters, users)
        from_docs = nll_out[j].sum(0)[s_idx, a_idx] / tok_out[j].sum(0)[s_idx, a_idx]
        if not np.allclose(from_docs, c["logppl"].to_numpy(), rtol=1e-6, atol=1e-9):
            raise InputError(f"per-document sums of eval user {user!r} disagree with the cells "
                             "table (log ppl differs by more than 1e-6): the bootstrap would not be "
                             "centred on the point estimates; fix the per-document table")
    return tuple(nll_out), tuple(tok_out), warnings
