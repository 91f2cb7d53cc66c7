"""Reading an interval off a bootstrap distribution: the one place to add a method.

`bootstrap_interval` is selected by `interval_method` in prereg.toml. To add a method (e.g. a
small-sample correction that widens the interval when there are few seeds), add a branch here and
its name to `validation.prereg.INTERVAL_METHODS`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from validation.results import Interval


METHODS = ("percentile", "student-t")


def _bootstrap_interval_iv(draws: np.ndarray, level: float, method: str, n_seeds) -> np.ndarray:
    draws = np.asarray(draws, dtype=float)
    if draws.ndim != 1:
        raise ValueError(f"`draws` must be one-dimensional; got shape {draws.shape}.")
    if not (0 < level < 1):
        raise ValueError(f"`level` must be in (0, 1); got {level!r}.")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}; got {method!r}.")
    if method != "percentile" and (not isinstance(n_seeds, (int, np.integer)) or n_seeds < 1):
        raise ValueError(f"`n_seeds` must be a positive integer for method {method!r}; got {n_seeds!r}.")
    return draws


def bootstrap_interval(
    draws: np.ndarray,
    point: float,
    level: float,
    *,
    method: str = "percentile",
    n_seeds: int | None = None,
) -> Interval:
    """Two-sided interval at `level` from bootstrap draws of shape (n_resamples,).

    `point` is the estimate on the original data; with no draws (no resampling possible) the
    interval is degenerate at it. NaN draws (a resample where a statistic is undefined, e.g. every
    drawn seed lacks a cell) are dropped. `n_seeds` is for small-sample-corrected methods; the
    percentile method (Efron & Tibshirani 1993, ch. 13) ignores it. `student-t` is the
    bootstrap-SE interval of Efron & Tibshirani (1993, eq. 13.1) with the Student-t quantile on
    n_seeds - 1 degrees of freedom (the seeds are the scarce level); with one seed it falls
    back to the percentile interval.
    """
    draws = _bootstrap_interval_iv(draws, level, method, n_seeds)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return Interval(float(point), float(point))
    alpha = 1.0 - level
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    if method == "percentile" or n_seeds < 2 or draws.size < 2:
        return Interval(float(low), float(high))
    # student-t: point +- t_{S-1, 1-alpha/2} x bootstrap SD. With S seeds the seed variance is
    # estimated on S-1 degrees of freedom, which the normal-theory percentile interval ignores;
    # at 3-5 seeds it under-covers (measured by `python -m validation.calibrate`).
    half = stats.t.ppf(1 - alpha / 2, n_seeds - 1) * float(np.std(draws, ddof=1))
    return Interval(float(point - half), float(point + half))
