"""Users drawn from a known population (the population calibration): `UserPopulation`, a study whose
users' margins are drawn from it, and the cheap many-user path that simulates per-user margins without
the perplexity matrix (issue 23)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from validation.simulation.simulate import SimParams, SimulatedStudy, simulate_experiment


@dataclass(frozen=True)
class UserPopulation:
    """A population of users to draw the users of a study from (population calibration).

    Each user's personalization effect is d = log(1 - m), m the user's true margin (with every
    other adapter equally good, `adapter_sd = offdiag_sd = 0`, d is also the user's `diag`
    effect). Either normal, d ~ N(mean_effect, sd_effect), or, with `above_share` set, a
    two-point mixture: margin `high_margin` with probability `above_share`, else `low_margin`.
    """

    mean_effect: float = 0.0
    sd_effect: float = 0.0
    above_share: float | None = None
    high_margin: float = 0.30
    low_margin: float = 0.05

    def draw(self, n_users: int, rng: np.random.Generator) -> np.ndarray:
        """(n_users,) true margins, independent draws."""
        if self.above_share is not None:
            above = rng.random(n_users) < self.above_share
            return np.where(above, self.high_margin, self.low_margin)
        return -np.expm1(rng.normal(self.mean_effect, self.sd_effect, size=n_users))


def simulate_population(params: SimParams, population: UserPopulation, n_seeds: int,
                        rng: np.random.Generator) -> SimulatedStudy:
    """`simulate_experiment` with the users' margins drawn from `population` (the truth records
    the drawn margins; the population's own parameters are the population-level truth)."""
    margins = population.draw(len(params.users), rng)
    return simulate_experiment(params, margins, n_seeds, rng)


@dataclass(frozen=True, eq=False)
class SimulatedMargins:
    """Per-user margins of a many-user study, simulated without the perplexity matrix."""

    margins: np.ndarray           # (J,) true margins drawn from the population
    per_seed: np.ndarray          # (S, J) per-seed margin estimates
    point: np.ndarray             # (J,) estimates (mean over seeds)
    low: np.ndarray               # (J,) interval bounds at `level`
    high: np.ndarray


def simulate_user_margins(population: UserPopulation, n_users: int, n_seeds: int, se: float, level: float,
                          rng: np.random.Generator) -> SimulatedMargins:
    """The cheap many-user path of the population calibration: each user's true margin from
    `population`, `n_seeds` per-seed estimates m_j + N(0, se sqrt(S)) (so their mean has sd `se`),
    and the Student-t interval on S - 1 df at `level` (exact under this model: every user's
    interval holds its level, so what a calibration measures is the population figure built on
    top). A (J,) study of 1,000 users costs microseconds where the full matrix (J x J cells,
    documents, the bootstrap) costs minutes; deterministic given `rng`."""
    from scipy import stats
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"`rng` must be a numpy.random.Generator; got {type(rng).__name__}.")
    if not isinstance(n_seeds, (int, np.integer)) or n_seeds < 2:
        raise ValueError(f"`n_seeds` must be an integer >= 2 (a t interval needs 2 seeds); got {n_seeds!r}.")
    if not isinstance(n_users, (int, np.integer)) or n_users < 1:
        raise ValueError(f"`n_users` must be a positive integer; got {n_users!r}.")
    if not (np.isfinite(se) and se > 0) or not 0 < level < 1:
        raise ValueError(f"`se` must be > 0 and `level` in (0, 1); got {se!r}, {level!r}.")
    m = population.draw(int(n_users), rng)
    per_seed = m[None, :] + rng.normal(0, se * np.sqrt(n_seeds), size=(int(n_seeds), int(n_users)))
    point = per_seed.mean(axis=0)
    half = stats.t.ppf(1 - (1 - level) / 2, n_seeds - 1) * per_seed.std(axis=0, ddof=1) / np.sqrt(n_seeds)
    return SimulatedMargins(m, per_seed, point, point - half, point + half)
