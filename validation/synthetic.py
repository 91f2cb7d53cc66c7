"""A small seeded generator of studies with known effects, for tests, benchmarks and calibration.

Per document d of evaluation user j, seed s and adapter row i, the per-token log loss is
    mu_j + doc[j, d] + effect[i, j] + seed[s] + instance[s, i] + noise[s, i, j, d]
with effect[base, j] = 0, effect[pooled, j] = -regularization and, for user adapters,
effect[i, j] = -regularization - personalization * 1[i == j]. All log-ratios of perplexity.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from validation.data import normalize_cells
from validation.results import StudyData


def simulate_study(
    rng: np.random.Generator,
    *,
    n_seeds: int = 5,
    users: tuple[str, ...] = ("alice", "bob", "carol"),
    n_docs: int = 50,
    personalization: float | np.ndarray = 0.15,
    regularization: float = 0.10,
    controls: tuple[str, ...] = ("base", "pooled"),
    seed_sd: float = 0.02,
    instance_sd: float = 0.02,
    doc_sd: float = 0.3,
    noise_sd: float = 0.05,
    with_docs: bool = True,
) -> StudyData:
    """Cells (and per-document rows) of S seeds x (J users + controls) x J users x n_docs."""
    J = len(users)
    adapters = tuple(users) + tuple(controls)
    A, S = len(adapters), n_seeds
    pers = np.broadcast_to(np.asarray(personalization, dtype=float), (J,))
    effect = np.zeros((A, J))
    effect[:J, :] = -regularization - np.diag(pers)
    if "pooled" in controls:
        effect[adapters.index("pooled"), :] = -regularization
    mu = rng.uniform(2.5, 3.5, size=J)
    doc = rng.normal(0, doc_sd, size=(J, n_docs))
    tokens = rng.integers(80, 400, size=(J, n_docs))
    seed = rng.normal(0, seed_sd, size=S)
    inst = rng.normal(0, instance_sd, size=(S, A))
    inst[:, [adapters.index(c) for c in controls if c == "base"]] = 0.0   # base is not trained
    loss = (mu[None, None, :, None] + doc[None, None] + effect[None, :, :, None]
            + seed[:, None, None, None] + inst[:, :, None, None]
            + rng.normal(0, noise_sd, size=(S, A, J, n_docs)))            # (S, A, J, D)
    nll = loss * tokens[None, None]
    s, a, j, d = np.meshgrid(np.arange(S), np.arange(A), np.arange(J), np.arange(n_docs), indexing="ij")
    docs = pl.DataFrame({
        "seed": s.ravel(), "adapter": np.asarray(adapters)[a.ravel()],
        "eval": np.asarray(users)[j.ravel()], "doc_id": [f"d{k:03d}" for k in d.ravel()],
        "nll_sum": nll.ravel(), "n_tokens": np.broadcast_to(tokens[None, None], nll.shape).ravel(),
        "n_bytes": np.broadcast_to(4 * tokens[None, None], nll.shape).ravel(),
    })
    cells = (docs.group_by(["seed", "adapter", "eval"], maintain_order=True)
             .agg(pl.col("nll_sum").sum(), pl.col("n_tokens").sum(), pl.col("n_bytes").sum())
             .with_columns((pl.col("nll_sum") / pl.col("n_tokens")).exp().alias("ppl"),
                           pl.lit("ok").alias("status")))
    return StudyData(cells=normalize_cells(cells, "<simulated cells>"),
                     docs=normalize_cells(docs, "<simulated docs>", per_doc=True) if with_docs else None)


def cells_from_matrix(ppl: np.ndarray, adapters: tuple[str, ...], users: tuple[str, ...]) -> StudyData:
    """(S, A, J) or (A, J) perplexities -> StudyData without documents (hand-computed tests)."""
    ppl = np.asarray(ppl, dtype=float)
    if ppl.ndim == 2:
        ppl = ppl[None]
    S, A, J = ppl.shape
    s, a, j = np.meshgrid(np.arange(S), np.arange(A), np.arange(J), indexing="ij")
    df = pl.DataFrame({"seed": s.ravel(), "adapter": np.asarray(adapters)[a.ravel()],
                       "eval": np.asarray(users)[j.ravel()], "ppl": ppl.ravel()})
    return StudyData(cells=normalize_cells(df, "<matrix>"))
