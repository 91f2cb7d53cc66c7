"""Trends over training steps, pure pieces of the step analysis (`validation.exploratory.steps`): the
least-squares slope on log2(steps) per doubling, its direction and words, and the overall interaction
test (`InteractionTest`: the slope of each count's `diag` effect, read on the paired bootstrap and on
the users' cells). No file I/O, no randomness."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from validation.stats.types import Interval, _num


@dataclass(frozen=True, eq=False)
class InteractionTest:
    """verdict.json `steps_analysis.interaction`: the change of the `diag` effect (log ratio of
    perplexity, own adapter vs the average other; negative = the own adapter's advantage grows)
    per doubling of the steps, over every user, with its interval from the paired hierarchical
    bootstrap (seeds, and documents kept whole across counts) by the pre-registered method."""

    estimate: float
    ci: Interval                  # NaN bounds: no interval (nothing resampled, or not identifiable)
    direction: str                # `grows`, `shrinks`, `flat` or `unknown`
    per_seed: np.ndarray          # (S,) the same slope within each seed
    draws: np.ndarray             # (B,) its bootstrap replicates
    words: str
    ci_resampled: Interval = Interval(math.nan, math.nan)   # seeds and documents (paired bootstrap)
    ci_cells: Interval = Interval(math.nan, math.nan)       # the users' cells as replicates (t)
    cells_df: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"statistic": "slope on log2(steps) of the OLS diag effect (y ~ adapter + eval + diag) of each "
                             "count's seed-mean user block; log ratio per doubling",
                "unit": "seeds and held-out documents (one paired bootstrap for every count), and the users' "
                        "cells (t on their slopes); `ci` spans both, the direction is named only when both "
                        "exclude 0",
                "estimate": _num(self.estimate), "ci": [_num(self.ci.low), _num(self.ci.high)],
                "direction": self.direction, "per_seed": [_num(v) for v in self.per_seed],
                "words": self.words,
                "ci_resampled": [_num(self.ci_resampled.low), _num(self.ci_resampled.high)],
                "ci_cells": [_num(self.ci_cells.low), _num(self.ci_cells.high)], "cells_df": self.cells_df}


def log2_slope(values: np.ndarray, steps) -> np.ndarray:
    """(..., K, J) values at K step counts -> (..., J) least-squares slope on log2(steps), per
    doubling. NaN where any count's value is NaN."""
    x = np.log2(np.asarray(steps, dtype=float))
    values = np.asarray(values, dtype=float)
    if values.shape[-2] != x.size or x.size < 2:
        raise ValueError(f"`values` must have K = {x.size} >= 2 counts on axis -2; got {values.shape}.")
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    return np.einsum("k,...kj->...j", w, values)


TOLERANCE = 1e-12   # |bound| below this is 0: rounding of identical counts, not a trend


def direction(ci: Interval) -> str:
    """`rises` when the interval is above 0, `falls` when below, else `flat`."""
    if ci.low > TOLERANCE:
        return "rises"
    if ci.high < -TOLERANCE:
        return "falls"
    return "flat"


def trend_words(user: str, slope: float, ci: Interval, level: float) -> str:
    """E.g. `programmer: the margin falls with training (slope -2.1 pp per doubling, 95% CI
    [-3.0, -1.2])`; `flat` says that no trend is detected at this precision."""
    d = direction(ci)
    what = {"rises": "the margin rises with training",
            "falls": "the margin falls with training",
            "flat": "the margin is flat with training (no trend detected)"}[d]
    if not math.isfinite(slope):
        return f"{user}: the margin's trend with training cannot be computed (a count lacks it)"
    return (f"{user}: {what} (slope {slope * 100:+.1f} pp per doubling, {level:.0%} CI "
            f"[{ci.low * 100:+.1f}, {ci.high * 100:+.1f}])")


def diag_effect_weights(mask: np.ndarray) -> np.ndarray:
    """(J, J) finite cells of a user block -> (J, J) weights w with sum(w * Y) the OLS `diag`
    coefficient of Y[i, j] ~ adapter_i + eval_j + diag over the finite cells (0 off them; NaN
    everywhere when the coefficient is not identifiable, e.g. without a finite diagonal cell)."""
    mask = np.asarray(mask, dtype=bool)
    J = mask.shape[0]
    i, j = np.nonzero(mask)
    X = np.column_stack([np.ones(i.size)] + [(i == k).astype(float) for k in range(1, J)]
                        + [(j == k).astype(float) for k in range(1, J)] + [(i == j).astype(float)])
    w = np.zeros((J, J))
    if i.size < X.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]:
        return np.full((J, J), np.nan)
    w[i, j] = np.linalg.pinv(X)[-1]
    return w


def diag_effects(values: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(K, ..., A, J) log ppl per count and (K, J, J) finite user cells of each count's point
    estimate -> (K, ...) each count's OLS `diag` effect (`diag_effect_weights`); NaN where a cell
    it reads is NaN."""
    J = values.shape[-1]
    out = []
    for v, m in zip(values, masks, strict=True):
        w = diag_effect_weights(m)
        block = np.where(m, v[..., :J, :], 0.0)
        out.append(np.einsum("ij,...ij->...", w, block))
    return np.stack(out)


INTERACTION_WORDS = {"grows": "the own adapter's advantage grows with training",
                     "shrinks": "the own adapter's advantage shrinks with training",
                     "flat": "no change of the own adapter's advantage with training detected",
                     "unknown": "the change of the own adapter's advantage with training is unknown"}


def interaction_test(point: np.ndarray, draws: np.ndarray, per_seed: np.ndarray, steps, level: float,
                     interval: Any) -> InteractionTest:
    """The overall `diag x log2(steps)` interaction (`InteractionTest`) from the point (K, A, J),
    paired draws (K, B, A, J) and per-seed (K, S, A, J) log ppl; `interval(draws, point,
    seed_values)` returns its Interval (None when nothing is resampled)."""
    J = point.shape[-1]
    masks = np.isfinite(point[:, :J, :])
    est = float(log2_slope(diag_effects(point, masks)[:, None], steps)[0])
    slope_d = (log2_slope(diag_effects(draws, masks).T[:, :, None], steps)[:, 0] if draws.shape[1]
               else np.empty(0))                                                  # (B,)
    slope_s = log2_slope(diag_effects(per_seed, masks).T[:, :, None], steps)[:, 0]  # (S,)
    boot = interval(slope_d, est, slope_s) if math.isfinite(est) else None
    boot = boot if boot is not None and boot.known else Interval(math.nan, math.nan)
    cells, df = cell_slope_interval(point, steps, level)
    if not boot.known:
        ci, d = Interval(math.nan, math.nan), "unknown"
    else:   # named only when both units exclude 0 (an intersection-union test: valid if either unit is)
        ci = boot if not cells.known else Interval(min(boot.low, cells.low), max(boot.high, cells.high))
        d = {"falls": "grows", "rises": "shrinks", "flat": "flat"}[direction(ci)]
    words = f"diag x log2(steps), every user: {INTERACTION_WORDS[d]}"
    if math.isfinite(est):
        words += f" ({est:+.4f} log ppl per doubling"
        words += (f", {level:.0%} CI [{ci.low:+.4f}, {ci.high:+.4f}]; "
                  + ("seeds, documents and the users' cells as replicates)" if cells.known else
                     "seeds and documents resampled; too few users to replicate over cells)")
                  if ci.known else ", no interval)")
    return InteractionTest(est, ci, d, slope_s, slope_d, words, boot, cells, df)


def cell_slope_interval(point: np.ndarray, steps, level: float) -> tuple[Interval, int]:
    """The interaction's interval with the users' cells as replicates: each user-adapter cell's
    least-squares slope of its seed-mean log ppl on log2(steps), regressed on adapter + eval + diag
    (OLS); the `diag` coefficient (= the interaction estimate), +- t(n - 2J) x its OLS se, n the
    cells finite at every count. A trend the seeds and every document of a cell share (an adapter x
    user x count term) is in the residual here. (NaN interval, 0) below 3 users or without df."""
    J = point.shape[-1]
    block = point[:, :J, :]
    ok = np.all(np.isfinite(block), axis=0)
    w_all = diag_effect_weights(ok)
    if J < 3 or not np.isfinite(w_all).all():
        return Interval(math.nan, math.nan), 0
    b = log2_slope(np.where(ok, block, 0.0).reshape(block.shape[0], J * J), steps).reshape(J, J)
    i, j = np.nonzero(ok)
    X = np.column_stack([np.ones(i.size)] + [(i == k).astype(float) for k in range(1, J)]
                        + [(j == k).astype(float) for k in range(1, J)] + [(i == j).astype(float)])
    df = int(i.size - X.shape[1])
    if df < 1:
        return Interval(math.nan, math.nan), 0
    coef, *_ = np.linalg.lstsq(X, b[i, j], rcond=None)
    resid = b[i, j] - X @ coef
    se = math.sqrt(float(resid @ resid) / df * np.linalg.inv(X.T @ X)[-1, -1])
    half = float(stats.t.ppf(1 - (1 - level) / 2, df)) * se
    return Interval(float(coef[-1] - half), float(coef[-1] + half)), df
