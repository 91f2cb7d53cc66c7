"""Simulated training-step sweeps with a known truth: the experiment of `validation.simulation.simulate`
evaluated at every step count, with a planted interaction (linear in log2 steps) and seed-shared trends."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from validation.inputs.study import StudyData
from validation.simulation.simulate import SimParams, _simulate_columns, expected_cells, study_tables, true_margins


@dataclass(frozen=True, eq=False)
class StepsTruth:
    """The known answer of one simulated step sweep."""

    steps: tuple[int, ...]        # K step counts, ascending
    expected: np.ndarray          # (K, A, J) expected cell log ppl per count
    margins: np.ndarray           # (K, J) true margins per count
    slopes: np.ndarray            # (J,) true margin slope per doubling of the steps (fraction)


@dataclass(frozen=True, eq=False)
class SimulatedSteps:
    data: StudyData               # cells and docs with a `steps` column (one block per count)
    truth: StepsTruth


def steps_margins(margins, slopes, steps) -> np.ndarray:
    """(K, J) true margins m_j + slope_j x (log2 steps_k - mean_k log2 steps_k): the margin is
    linear in log2(steps) with slope `slope_j` per doubling, and `margins` at the (geometric)
    centre of the sweep."""
    x = np.log2(np.asarray(steps, dtype=float))
    x = x - x.mean()
    return np.asarray(margins, dtype=float)[None, :] + np.outer(x, np.asarray(slopes, dtype=float))


def simulate_steps(params: SimParams, margins, steps, n_seeds: int, rng: np.random.Generator, *,
                   slopes=0.0, seeds: tuple[int, ...] | None = None) -> SimulatedSteps:
    """One step sweep: the experiment of `simulate_experiment` evaluated at every count in `steps`.

    The true margin of user j at count k is `steps_margins(margins, slopes, steps)` (a planted
    step interaction: linear in log2 steps, `slopes` per user, scalar or (J,)); every other
    expected cell is the same at every count. Seed, adapter-instance, cell, document and
    document x adapter terms are shared by every count (snapshots of the same training runs,
    evaluated on the same documents), so differences between counts are paired as in a real
    sweep; the per-document noise is drawn afresh per count. Seed-shared count trends, x_k the
    centred log2(steps_k): `doc_trend_sd` per (adapter, document), noise (the truth is unchanged);
    `trend_sd` per (adapter, eval user), added to the expected cells, so `truth.slopes` are then
    the true margins' least-squares slopes (the planted one plus what the trends make of it).
    Deterministic given `rng`.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"`rng` must be a numpy.random.Generator; got {type(rng).__name__}.")
    if not isinstance(n_seeds, (int, np.integer)) or n_seeds < 1:
        raise ValueError(f"`n_seeds` must be a positive integer; got {n_seeds!r}.")
    steps = tuple(int(k) for k in steps)
    if not steps or any(k < 1 for k in steps) or list(steps) != sorted(set(steps)):
        raise ValueError(f"`steps` must be distinct positive integers in ascending order; got {list(steps)}.")
    p, S, J = params, int(n_seeds), len(params.users)
    seeds = tuple(range(S)) if seeds is None else tuple(seeds)
    margins = np.broadcast_to(np.asarray(margins, dtype=float), (J,))
    slopes = np.broadcast_to(np.asarray(slopes, dtype=float), (J,)).copy()
    M = steps_margins(margins, slopes, steps)                                    # (K, J)
    if np.any(M >= 1):
        raise ValueError(f"the planted margins reach 1 at some step count ({M.max():.3f}); lower "
                         "`margins` or `slopes`.")
    E0 = expected_cells(p, margins, rng)
    x = np.log2(np.asarray(steps, dtype=float))
    x = x - x.mean()
    others = E0[:J].copy()
    others[np.arange(J), np.arange(J)] = np.inf
    best_other = others.min(axis=0)
    Es = []
    for m in M:
        E = E0.copy()
        E[np.arange(J), np.arange(J)] = best_other + np.log1p(-m)
        Es.append(E)
    if p.trend_sd > 0:
        Es = _with_trends(Es, x, p, rng)
    parts = []
    for k, (nll_cols, tok_cols) in zip(steps, _simulate_columns(p, Es, S, rng, xs=x), strict=True):
        d = study_tables(nll_cols, tok_cols, p.adapters, p.users, seeds, p.bytes_per_token)
        parts.append((k, d))
    cells = pl.concat([d.cells.with_columns(pl.lit(k, dtype=pl.Int64).alias("steps")) for k, d in parts])
    docs = pl.concat([d.docs.with_columns(pl.lit(k, dtype=pl.Int64).alias("steps")) for k, d in parts])
    margins_k = true_margins(np.stack(Es))
    if p.trend_sd > 0:   # the planted slope plus what the adapter x user trends make of it
        slopes = log2_slope_of(margins_k, x)
    return SimulatedSteps(StudyData(cells=cells, docs=docs),
                          StepsTruth(steps, np.stack(Es), margins_k, slopes))


def _with_trends(Es: list[np.ndarray], x: np.ndarray, p: SimParams, rng: np.random.Generator) -> list[np.ndarray]:
    """The expected cells of every count plus a seed-shared trend t[i, j] * x_k per trained adapter
    i and eval user j (`trend_sd`): E_k + t x_k (drawn only when `trend_sd` > 0, so a sweep without
    it is the same draw as before)."""
    trained = np.array([a != "base" for a in p.adapters], dtype=float)
    t = rng.normal(0, p.trend_sd, size=Es[0].shape) * trained[:, None]
    return [E + t * xk for E, xk in zip(Es, x, strict=True)]


def log2_slope_of(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(K, J) values at centred log2 step counts `x` -> (J,) least-squares slope per doubling."""
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    return w @ values
