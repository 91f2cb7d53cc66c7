"""An interval for a ratio of two estimates that is valid among the studies where it is shown
(issue 23: the seen-user share).

The seen-user share r = N / D (N what pooled gains from having seen the user, D pooled's gain over
base, both log gains) is shown only where its Fieller set is bounded, i.e. where the estimate of D
is clearly above zero: D_hat / sd(D) > c, c the verdict's critical value. Conditional on that
choice D_hat is too high as often as not where D is small (a winner's curse), and a Fieller
interval read among the shown studies alone covers less than its level (docs/calibration.md
measured 0.76-0.89 where pooled beats base by 2%). This interval conditions on the showing rule,
exactly in the normal model (Fithian, Sun & Taylor 2014, "Optimal inference after model selection";
Lee, Sun, Sun & Taylor 2016): write W = N_hat - beta D_hat, beta = cov(N, D) / var(D), independent
of D_hat. A candidate share r (rho = r - beta) says E[W] = rho D. Under it T = W - rho D_hat ~ N(0,
v_T) is independent of S = rho W / v_W + D_hat / v_D, the statistic that carries D (the nuisance);
given S, the rule D_hat > t is a bound on T alone, so T given S and the rule is a truncated normal
free of D. r is in the interval where the observed T is not in either alpha / 2 tail of it. Among
the studies where the share is shown the interval covers at level 1 - alpha at every true D; where
D is large the truncation vanishes and it is Fieller's. It can be unbounded on one side or both
(reported so, never dropped: the share is then descriptive only). Computed on a grid of candidate
shares, each end refined by bisection.

The verdict's interval methods are not normal at few seeds: `kappa` (their critical value over the
normal one at the same level) scales every normal quantile here. Pure: no I/O, no randomness.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import special, stats

from validation.stats.types import Interval

UNBOUNDED = Interval(-math.inf, math.inf)


class SelectiveRatio(NamedTuple):
    """The interval (an end at +-inf where the accepted set is unbounded that way) and how many of
    the candidate values of the grid it accepted."""

    ci: Interval
    accepted: int


def _accepts(rho: np.ndarray, w: float, d: float, v_w: float, v_d: float, t: float, alpha: float) -> np.ndarray:
    """Whether each candidate rho = r - beta passes the conditional test (module doc): T = W - rho D
    given S = rho W / v_w + D / v_d and the showing rule D > t is N(0, v_T) truncated to one side
    of u; accept where its distribution function at the observed T lies in [alpha/2, 1 - alpha/2]."""
    v_t = v_w + rho * rho * v_d
    sd = np.sqrt(v_t)
    t_obs = w - rho * d
    s_obs = rho * w / v_w + d / v_d
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        u = (s_obs * v_w * v_d - t * v_t) / (rho * v_d) / sd        # the truncation point, in sd of T
        z = t_obs / sd
        # P(T <= observed | truncation), in logs so that a far-tail truncation stays exact
        f = np.where(rho > 0, np.exp(special.log_ndtr(z) - special.log_ndtr(u)),
                     np.where(rho < 0, -np.expm1(special.log_ndtr(-z) - special.log_ndtr(-u)),
                              special.ndtr(z)))
    return (f >= alpha / 2) & (f <= 1 - alpha / 2)


GRID = 801            # candidate shares per interval (refined at each end by bisection)
SPAN = 60.0           # the grid reaches this many delta-method half-widths either side; beyond it, unbounded


def selective_ratio_interval(n: float, d: float, v_n: float, v_d: float, c_nd: float, *, level: float,
                             kappa: float = 1.0) -> SelectiveRatio:
    """The interval of r = N / D among the studies where it is shown, N and D estimated by `n` and
    `d` with (co)variances v_n, v_d, c_nd, shown only where d / sd(d) > kappa z(level) (module doc)."""
    if not (v_d > 0 and kappa > 0 and 0 < level < 1):
        raise ValueError("need var(D) > 0, kappa > 0 and a level in (0, 1)")
    alpha = 1 - level
    z = float(stats.norm.ppf(1 - alpha / 2))
    v_n, v_d, c_nd = (kappa * kappa * v for v in (v_n, v_d, c_nd))   # the method's tails as normal ones
    t = z * math.sqrt(v_d)
    if not d > t:
        return SelectiveRatio(Interval(-math.inf, math.inf), 0)
    beta = c_nd / v_d
    v_w = max(v_n - c_nd * c_nd / v_d, 1e-300)
    w = n - beta * d
    rho0 = w / d
    half = z * math.sqrt(v_w + rho0 * rho0 * v_d) / d                 # the delta method's half-width
    grid = rho0 + half * SPAN * np.sinh(np.linspace(-4, 4, GRID)) / math.sinh(4)
    ok = _accepts(grid, w, d, v_w, v_d, t, alpha)
    if not ok.any():
        return SelectiveRatio(Interval(math.nan, math.nan), 0)
    k = np.flatnonzero(ok)

    def edge(inside: float, outside: float) -> float:
        for _ in range(60):
            mid = (inside + outside) / 2
            if _accepts(np.array([mid]), w, d, v_w, v_d, t, alpha)[0]:
                inside = mid
            else:
                outside = mid
        return inside

    low = -math.inf if k[0] == 0 else edge(grid[k[0]], grid[k[0] - 1])
    high = math.inf if k[-1] == GRID - 1 else edge(grid[k[-1]], grid[k[-1] + 1])
    return SelectiveRatio(Interval(beta + low, beta + high), int(ok.sum()))
