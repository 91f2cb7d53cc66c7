"""Tiny metric functions on a matrix of mean log perplexities (docs/methods.md, section 3).

Every function takes `logppl` of shape (..., A, J): leading batch dimensions (seeds, bootstrap
resamples), A adapter rows whose first J are the user adapters in the order of the J evaluation
columns (so the diagonal is `logppl[..., j, j]`), then the controls (`base`, `pooled`, and the
leave-one-out controls `loo:<user>`, whose row for column j is given as an index vector `loo`).
Across seeds a cell's value is the geometric mean of its perplexities, i.e. the mean of log ppl: pass that mean here.
Results are fractions: 0.10 = the numerator's perplexity is 10% lower.
"""

from __future__ import annotations

import numpy as np


def diagonal(logppl: np.ndarray) -> np.ndarray:
    """(..., A, J) -> (..., J): log ppl of each user's own adapter on its own text."""
    J = logppl.shape[-1]
    return np.diagonal(logppl[..., :J, :], axis1=-2, axis2=-1)


def other_users(logppl: np.ndarray) -> np.ndarray:
    """(..., A, J) -> (..., J, J) user rows with the diagonal set to NaN (controls dropped)."""
    J = logppl.shape[-1]
    users = np.array(logppl[..., :J, :], dtype=float, copy=True)
    users[..., np.arange(J), np.arange(J)] = np.nan
    return users


def ratio_gain(log_num: np.ndarray, log_den: np.ndarray) -> np.ndarray:
    """1 - ppl_num / ppl_den from log perplexities; same shapes in and out."""
    return -np.expm1(log_num - log_den)


def diagonal_margin(logppl: np.ndarray) -> np.ndarray:
    """(..., A, J) -> (..., J): 1 - ppl[j,j] / min_{i in U, i != j} ppl[i,j] (the best other)."""
    return ratio_gain(diagonal(logppl), np.nanmin(other_users(logppl), axis=-2))


def worst_other_margin(logppl: np.ndarray) -> np.ndarray:
    """(..., A, J) -> (..., J): the same against the max; anti-conservative, for comparison only."""
    return ratio_gain(diagonal(logppl), np.nanmax(other_users(logppl), axis=-2))


def best_other_index(logppl: np.ndarray) -> np.ndarray:
    """(..., A, J) -> (..., J) int: row index of the best (lowest ppl) other user adapter."""
    others = other_users(logppl)
    return np.nanargmin(np.where(np.isnan(others), np.inf, others), axis=-2)


def worst_other_index(logppl: np.ndarray) -> np.ndarray:
    """(..., A, J) -> (..., J) int: row index of the worst (highest ppl) other user adapter."""
    others = other_users(logppl)
    return np.argmax(np.where(np.isnan(others), -np.inf, others), axis=-2)


def personalization_gain(logppl: np.ndarray, pooled: int) -> np.ndarray:
    """(..., A, J) -> (..., J): 1 - ppl[j,j] / ppl[pooled,j]; `pooled` is a row index."""
    return ratio_gain(diagonal(logppl), logppl[..., pooled, :])


def regularization_gain(logppl: np.ndarray, pooled: int, base: int) -> np.ndarray:
    """(..., A, J) -> (..., J): 1 - ppl[pooled,j] / ppl[base,j]."""
    return ratio_gain(logppl[..., pooled, :], logppl[..., base, :])


def total_gain(logppl: np.ndarray, base: int) -> np.ndarray:
    """(..., A, J) -> (..., J): 1 - ppl[j,j] / ppl[base,j]; log(1-total) = log(1-reg) + log(1-pers)."""
    return ratio_gain(diagonal(logppl), logppl[..., base, :])


def per_column(logppl: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(..., A, J), rows (J,) -> (..., J): column j read at row rows[j] (e.g. `loo:<user j>`)."""
    J = logppl.shape[-1]
    return logppl[..., rows, np.arange(J)]


def loo_gain(logppl: np.ndarray, loo: np.ndarray, base: int) -> np.ndarray:
    """(..., A, J) -> (..., J): 1 - ppl[loo:j, j] / ppl[base, j]: what a generic adapter that never
    saw user j's text buys j (the gain a new user gets)."""
    return ratio_gain(per_column(logppl, loo), logppl[..., base, :])


def seen_user_gain(logppl: np.ndarray, loo: np.ndarray, pooled: int) -> np.ndarray:
    """(..., A, J) -> (..., J): 1 - ppl[pooled, j] / ppl[loo:j, j]: what `pooled` gains on j from
    having seen j's text."""
    return ratio_gain(logppl[..., pooled, :], per_column(logppl, loo))


def loo_personalization_gain(logppl: np.ndarray, loo: np.ndarray) -> np.ndarray:
    """(..., A, J) -> (..., J): 1 - ppl[j, j] / ppl[loo:j, j]: the own adapter against the generic
    adapter user j would get without one. log(1 - this) = log(1 - seen_user) + log(1 - personalization)."""
    return ratio_gain(diagonal(logppl), per_column(logppl, loo))


def transfer_distance(logppl: np.ndarray) -> np.ndarray:
    """(..., A, J) mean log ppl (first J rows = the users' adapters) -> (..., J, J) symmetric
    transfer distance d(i,j) = ((L[i,j] - L[j,j]) + (L[j,i] - L[i,i])) / 2, zero diagonal."""
    logppl = np.asarray(logppl, dtype=float)
    J = logppl.shape[-1]
    if logppl.ndim < 2 or logppl.shape[-2] < J:
        raise ValueError(f"`logppl` must have shape (..., A, J) with A >= J; got {logppl.shape}.")
    U = logppl[..., :J, :]
    diag = np.diagonal(U, axis1=-2, axis2=-1)              # (..., J)
    penalty = U - diag[..., None, :]                       # P[i,j] = L[i,j] - L[j,j]
    d = (penalty + np.swapaxes(penalty, -1, -2)) / 2
    d[..., np.arange(J), np.arange(J)] = 0.0
    return d
