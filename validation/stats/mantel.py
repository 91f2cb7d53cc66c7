"""The Mantel permutation test of two distance matrices (docs/methods.md, section 11): do users
with distant adapters also transfer badly? Exact over all J! relabelings for J <= 8 users, else
seeded random relabelings, p = (1 + #{r_perm >= r}) / (1 + n)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from validation.stats.types import _num

EXACT_MANTEL_MAX_USERS = 8
N_PERMUTATIONS = 9999


@dataclass(frozen=True)
class MantelTest:
    """Correlation of adapter distance with transfer distance and its permutation p-value."""

    statistic: float           # Pearson r over the J(J-1)/2 user pairs
    p_value: float             # one-sided, alternative: r > 0
    n_permutations: int        # permutations the p-value is computed over (identity included when exact)
    exact: bool                # all J! relabelings (J <= 8) or seeded random ones
    min_p_value: float         # the smallest p-value this design can give (1/J! when exact)
    level: float               # the pre-registered confidence; significant = p <= 1 - level
    significant: bool

    def to_json(self) -> dict[str, Any]:
        return {"statistic": _num(self.statistic), "p_value": _num(self.p_value),
                "n_permutations": self.n_permutations, "exact": self.exact,
                "min_p_value": _num(self.min_p_value), "alternative": "greater",
                "level": self.level, "significant": self.significant}


def mantel(a: np.ndarray, b: np.ndarray, *, rng: np.random.Generator | None = None,
           n_permutations: int = N_PERMUTATIONS, exact_max: int = EXACT_MANTEL_MAX_USERS,
           level: float = 0.95) -> MantelTest:
    """One-sided Mantel test of a positive Pearson correlation between two (J, J) distance
    matrices: relabel the users of `a` (rows and columns together) and count relabelings with a
    correlation at least the observed one. Exact over all J! relabelings (identity included)
    when J <= `exact_max`, else `n_permutations` random ones from `rng` (required then)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    J = a.shape[0]
    if a.shape != (J, J) or b.shape != (J, J):
        raise ValueError(f"distance matrices must both be square and equal; got {a.shape}, {b.shape}.")
    if J < 3:
        raise ValueError(f"a Mantel test needs at least 3 users (a correlation of >= 3 pairs); got {J}.")
    iu = np.triu_indices(J, 1)
    y = b[iu]
    if not (np.isfinite(a[iu]).all() and np.isfinite(y).all()):
        raise ValueError("a Mantel test needs every pairwise distance; some are missing (NaN).")
    if J <= exact_max:
        perms = np.array(list(itertools.permutations(range(J))))
        exact = True
    else:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"more than {exact_max} users: the Mantel test needs a seeded `rng`.")
        perms = np.array([rng.permutation(J) for _ in range(int(n_permutations))])
        exact = False
    x_perm = a[perms[:, iu[0]], perms[:, iu[1]]]               # (P, pairs)
    r = _pearson(a[iu][None], y)[0]
    r_perm = _pearson(x_perm, y)
    ge = int(np.sum(r_perm >= r - 1e-12)) if np.isfinite(r) else len(perms)
    if exact:
        p, n, pmin = ge / len(perms), len(perms), 1.0 / len(perms)
    else:
        p, n, pmin = (1 + ge) / (1 + len(perms)), len(perms), 1.0 / (1 + len(perms))
    return MantelTest(float(r), float(p), n, exact, float(pmin), level, bool(p <= 1 - level + 1e-12))


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(P, n) rows against (n,) -> (P,) Pearson r; NaN where a row or y is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    den = np.sqrt((xc ** 2).sum(axis=1) * (yc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc @ yc) / np.where(den > 0, den, 1.0), np.nan)
