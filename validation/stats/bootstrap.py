"""The hierarchical bootstrap of docs/methods.md (section 5), vectorized over resamples.

One resample: draw S seeds with replacement; then, independently for each evaluation column j,
draw that column's n_j documents with replacement and apply the *same* document indices to every
adapter row and every drawn seed of column j (paired within a column). Cell sums are recomputed,
then log ppl = NLL / tokens, then the mean of log ppl over the drawn seeds (the geometric mean of
perplexities), from which every statistic is recomputed by `validation.stats.metrics`.

Random draws happen in a fixed order (seed indices, then columns in user order), so one
`numpy.random.Generator` state gives one result. Davison & Hinkley (1997), section 3.8 for
resampling at several levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from validation.inputs.arrays import StudyArrays
from validation.stats.types import BootstrapMode

Weights = tuple[np.ndarray, tuple[np.ndarray, ...] | None] | None   # `draw_weights`' result


@dataclass(frozen=True, eq=False)
class Resampled:
    """One study's arrays with its bootstrap made once: `draws` = `apply_draws(arrays, weights)`,
    (B, A, J), empty in mode NONE. Several readers of one study (the verdict at each training-step
    count and the step analysis) share it instead of resampling again."""

    arrays: StudyArrays
    weights: Weights
    draws: np.ndarray

    @classmethod
    def of(cls, arrays: StudyArrays, weights: Weights) -> Resampled:
        return cls(arrays, weights, apply_draws(arrays, weights))


def bootstrap_mode(arrays: StudyArrays) -> BootstrapMode:
    many_seeds = len(arrays.seeds) > 1
    if arrays.doc_nll is not None:
        return BootstrapMode.HIERARCHICAL if many_seeds else BootstrapMode.DOCUMENTS_ONLY
    return BootstrapMode.SEEDS_ONLY if many_seeds else BootstrapMode.NONE


def multinomial_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) int: how often each of n items is drawn in n draws with replacement."""
    idx = rng.integers(n, size=(n_resamples, n))
    flat = idx + (np.arange(n_resamples) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)


def seed_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over seeds, ignoring NaN (missing or diverged) cells.

    values (B, S, ...), weights (B, S) -> (B, ...); NaN where every drawn seed lacks the cell.
    """
    w = weights.reshape(weights.shape + (1,) * (values.ndim - 2))
    finite = np.isfinite(values)
    num = np.sum(w * np.where(finite, values, 0.0), axis=1)
    den = np.sum(w * finite, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_bytes(n_seeds: int, n_adapters: int, n_users: int, max_docs: int | None,
                    n_resamples: int) -> int:
    """Peak bytes `resample_logppl` and the statistics after it hold, estimated from the shapes
    (float64): the (B, A, J) replicates and the per-user statistics, plus the larger of the
    seeds-only temporaries (B, S, A, J) or one column's document counts and sums."""
    B, S, A, J = n_resamples, n_seeds, n_adapters, n_users
    per_column = 4 * max_docs + 6 * S * A if max_docs else 3 * S * A * J
    return 8 * B * (4 * A * J + 12 * J + per_column)


def resample_logppl(arrays: StudyArrays, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, A, J) bootstrap replicates of the across-seed mean log ppl.

    Uses the mode of `bootstrap_mode`; NONE returns an empty (0, A, J) array.
    """
    return apply_draws(arrays, draw_weights(arrays, n_resamples, rng))


def draw_weights(arrays: StudyArrays, n_resamples: int, rng: np.random.Generator) -> Weights:
    """The random part of one bootstrap: (seed weights (B, S), per column j the document counts
    (B, n_j), or None without documents); None in mode NONE. Draws in the module's fixed order,
    so `apply_draws` of these weights is `resample_logppl`. Applying the same weights to studies
    of the same seeds and documents (e.g. every training-step count of a run,
    `validation.exploratory.steps`) pairs their replicates."""
    mode = bootstrap_mode(arrays)
    S, B = len(arrays.seeds), n_resamples
    if mode is BootstrapMode.NONE:
        return None
    seed_w = multinomial_counts(S, B, rng).astype(float) if S > 1 else np.ones((B, 1))  # (B, S)
    if mode is BootstrapMode.SEEDS_ONLY:
        return seed_w, None
    return seed_w, tuple(multinomial_counts(nll.shape[0], B, rng).astype(float)  # (B, n_j), shared by all S, A
                         for nll in arrays.doc_nll)


def apply_draws(arrays: StudyArrays,
                weights: tuple[np.ndarray, tuple[np.ndarray, ...] | None] | None) -> np.ndarray:
    """(B, A, J) replicates of the across-seed mean log ppl under `draw_weights`' weights."""
    S, A, J = arrays.logppl.shape
    if weights is None:
        return np.empty((0, A, J))
    seed_w, counts = weights
    B = seed_w.shape[0]
    if seed_w.shape[1] != S or (counts is not None and (arrays.doc_nll is None or len(counts) != J)):
        raise ValueError("`weights` were drawn for another design (seeds, users or documents differ).")
    if counts is None:
        return seed_mean(np.broadcast_to(arrays.logppl, (B, S, A, J)), seed_w)
    out = np.empty((B, A, J))
    for j in range(J):
        nll, tok = arrays.doc_nll[j], arrays.doc_tok[j]          # (n_j, S, A)
        n_j = nll.shape[0]
        if counts[j].shape != (B, n_j):
            raise ValueError(f"`weights` hold {counts[j].shape[1]} documents for column {j}; the study has {n_j}.")
        # einsum's own loop, not BLAS: for these small products a multithreaded BLAS is up to
        # 10x slower on a loaded machine (thread contention), and no faster on an idle one.
        nll_b = np.einsum("bn,nk->bk", counts[j], nll.reshape(n_j, S * A), optimize=False).reshape(B, S, A)
        tok_b = np.einsum("bn,nk->bk", counts[j], tok.reshape(n_j, S * A), optimize=False).reshape(B, S, A)
        out[:, :, j] = seed_mean(nll_b / tok_b, seed_w)          # (B, A)
    return out
