"""Planted routing rows (`avg:`, `ens:`, `noise:`; docs/routing.md) for simulated studies.

A planted row copies the per-document NLL of a source adapter on every column (a different source
per column where asked), shifts its log perplexity by a chosen amount and adds per-(seed, document)
noise, so its figures have a known centre and a real bootstrap spread. The cells are the sums of
the documents, as the runner writes them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from common.contract import avg_name, ens_name, noise_name
from validation.inputs.study import StudyData

STORAGE = {"parameters": 2304, "bytes_float32": 9216, "bytes_float16": 4608}


def planted_row(data: StudyData, name: str, source, shift=0.0, *, rng: np.random.Generator,
                sd: float = 0.01) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(cells, docs) of row `name`: per column `eval`, the documents of adapter `source` (a name, or
    a dict eval -> name) with log perplexity + `shift` (a number, or a dict eval -> number) + N(0, sd)
    per (seed, document)."""
    users = data.users
    src = source if isinstance(source, dict) else dict.fromkeys(users, source)
    sh = shift if isinstance(shift, dict) else dict.fromkeys(users, shift)
    parts = []
    for user in users:
        d = data.docs.filter((pl.col("adapter") == src[user]) & (pl.col("eval") == user))
        bump = sh[user] + rng.normal(0.0, sd, d.height)
        parts.append(d.with_columns(pl.lit(name).alias("adapter"),
                                    (pl.col("nll_sum") + pl.Series(bump) * pl.col("n_tokens")).alias("nll_sum")))
    docs = pl.concat(parts).with_columns((pl.col("nll_sum") / pl.col("n_tokens")).alias("logppl"))
    docs = docs.with_columns(pl.col("logppl").exp().alias("ppl"),
                             (pl.col("nll_sum") / pl.col("n_bytes") / np.log(2)).alias("bpb"))
    cells = (docs.group_by(["seed", "adapter", "eval"], maintain_order=True)
             .agg(pl.col("nll_sum").sum(), pl.col("n_tokens").sum(), pl.col("n_bytes").sum())
             .with_columns((pl.col("nll_sum") / pl.col("n_tokens")).alias("logppl")))
    cells = cells.with_columns(pl.col("logppl").exp().alias("ppl"),
                               (pl.col("nll_sum") / pl.col("n_bytes") / np.log(2)).alias("bpb"),
                               pl.lit("ok").alias("status")).select(data.cells.columns)
    return cells, docs.select(data.docs.columns)


def with_rows(data: StudyData, rows: dict[str, tuple], *, seed: int = 7, sd: float = 0.01,
              storage: dict | None = STORAGE) -> StudyData:
    """`data` plus the planted `rows` {name: (source, shift)}; `storage` goes into the manifest's
    `routing.storage` record, as the grid writes it with the rows (None: no record)."""
    rng = np.random.default_rng(seed)
    cells, docs = [data.cells], [data.docs]
    for name, (source, shift) in rows.items():
        c, d = planted_row(data, name, source, shift, rng=rng, sd=sd)
        cells.append(c)
        docs.append(d)
    manifest = data.manifest
    if storage is not None and manifest is not None:
        manifest = dataclasses.replace(manifest, routing={"storage": dict(storage)})
    return dataclasses.replace(data, cells=pl.concat(cells), docs=pl.concat(docs), manifest=manifest)


def default_rows(data: StudyData, sigmas=(0.01, 0.1, 0.3), *, ens_source: str = "pooled",
                 noise_shift: float = 0.0) -> dict[str, tuple]:
    """The rows of `runners.grid --routing` for every user, planted so that every criterion can
    PASS: each `ens:<u>` a copy of `ens_source`'s rows; each average worse than either contributor's
    own adapter (its two contributors' own rows + 0.2 nats on their columns, `pooled` elsewhere);
    each noisy adapter its own rows + `noise_shift` on its user's column (the others' rows on theirs)."""
    users = data.users
    rows: dict[str, tuple] = {ens_name(u): (ens_source, 0.0) for u in users}
    for i, a in enumerate(users):
        for b in users[i + 1:]:
            src = {u: (u if u in (a, b) else "pooled") for u in users}
            rows[avg_name(a, b)] = (src, {u: (0.2 if u in (a, b) else 0.0) for u in users})
    for u in users:
        for s in sigmas:
            rows[noise_name(u, s)] = ({v: u for v in users}, {v: (noise_shift if v == u else 0.0) for v in users})
    return rows
