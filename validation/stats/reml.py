"""Exact profiled REML for two nested random intercepts (seed, seed:adapter), closed form per seed.

The model of `validation.stats.mixed_model`: y = X b + u_seed + u_seed:adapter + e, u_seed ~ N(0, s2 t1),
u_seed:adapter ~ N(0, s2 t2), e ~ N(0, s2). Seeds are independent, so V = s2 H with H block
diagonal; within seed s, whose cells fall into adapter blocks a of m_a cells (unequal when cells
are missing),

    H_s = B_s + t1 1 1',   B_s = I + t2 blockdiag(1_a 1_a'),
    B_s^-1 = I - sum_a c_a 1_a 1_a',      c_a = t2 / (1 + t2 m_a),
    H_s^-1 = B_s^-1 - d_s w w',           w = B_s^-1 1 (= 1 / (1 + t2 m_a) on block a),
                                          d_s = t1 / (1 + t1 q_s), q_s = sum_a m_a / (1 + t2 m_a),
    log|H_s| = sum_a log(1 + t2 m_a) + log(1 + t1 q_s)

(Woodbury and the determinant lemma twice). X'H^-1 X, X'H^-1 y and y'H^-1 y therefore need only
X'X, X'y, y'y and the per-block sums of the rows of X and y, formed once; each evaluation of the
criterion is p x p algebra. The profiled REML criterion (sigma^2 profiled out, as lme4)

    -1/2 [log|H| + log|X'H^-1 X| + (n - p) log(r'H^-1 r)],  r = y - X b_GLS(t)

is maximized over theta = (sqrt t1, sqrt t2) >= 0 (lme4's parameters; 0 is a legal, common
boundary: singular fits) from a grid, by L-BFGS-B, then polished by Nelder-Mead and checked
against the two one-parameter boundary fits (bounded Brent). Then b = GLS, cov(b) = s2
(X'H^-1 X)^-1, s2 = r'H^-1 r / (n - p) (REML). Equal to statsmodels MixedLM and to lme4 (tests).
"""

from __future__ import annotations

import ctypes
import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

LOG_2PI = math.log(2 * math.pi)


_BLAS_THREADS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                 ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                 ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                 ("openblas_get_num_threads", "openblas_set_num_threads"))


def _openblas_thread_controls() -> list[tuple]:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (Linux; [] where
    /proc/self/maps or the symbols are absent)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and ".so" in ln})
    except OSError:
        return []
    out = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get, set_ in _BLAS_THREADS:
            if hasattr(lib, get) and hasattr(lib, set_):
                out.append((getattr(lib, get), getattr(lib, set_)))
                break
    return out


@contextmanager
def single_thread_blas() -> Iterator[None]:
    """OpenBLAS on one thread for the block, restored after (what threadpoolctl does).

    Every criterion evaluation is a few p x p operations (p ~ 150 at 50 users): multi-threaded
    OpenBLAS spends more time waking its threads than computing, and on a loaded machine a
    150 x 150 Cholesky went from 0.06 ms (one thread) to 70 ms (two threads, load ~4 on 2 CPUs).
    A no-op where no OpenBLAS is found."""
    controls = _openblas_thread_controls()
    saved = [get() for get, _ in controls]
    try:
        for _, set_ in controls:
            set_(1)
        yield
    finally:
        for (_, set_), n in zip(controls, saved, strict=True):
            set_(n)


@dataclass(frozen=True)
class NestedFit:
    """The REML fit. `variances` (outermost level first, e.g. seed, seed:adapter) and `sigma2` are
    variances (not ratios); `theta` their square-root ratios to `sigma2`, as lme4's."""

    beta: np.ndarray          # (p,)
    cov: np.ndarray           # (p, p), s2 (X'H^-1 X)^-1
    variances: tuple[float, ...]
    sigma2: float             # residual variance (REML)
    reml_llf: float           # REML log-likelihood, statsmodels' MixedLM `llf` convention
    theta: tuple[float, ...]
    n_evals: int

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))

    @property
    def seed_var(self) -> float:
        """The outermost level's variance (s2 t1)."""
        return self.variances[0]

    @property
    def block_var(self) -> float:
        """The second level's variance (s2 t2)."""
        return self.variances[1]


@dataclass(frozen=True)
class _Sums:
    """What every criterion evaluation needs, formed once from (X, y, nested group codes)."""

    XtX: np.ndarray
    Xty: np.ndarray
    yty: float
    Xb: np.ndarray            # (nb, p) per-innermost-group sums of X rows
    yb: np.ndarray            # (nb,)
    m: np.ndarray             # (nb,) rows per innermost group
    parents: tuple[np.ndarray, ...]  # parents[l - 1]: the level-(l - 1) group of each level-l group
    sizes: tuple[int, ...]    # groups per level, outermost first
    n: int
    p: int

    @property
    def n_seeds(self) -> int:
        return self.sizes[0]


def _sums(X: np.ndarray, y: np.ndarray, *levels: np.ndarray) -> _Sums:
    """`levels`: integer codes per row, outermost first (seed, then adapter, ...); a group of level
    l is a distinct tuple of the first l + 1 codes, so the same adapter under two seeds is two
    groups (nested random intercepts)."""
    n, p = X.shape
    if len(levels) < 1:
        raise ValueError("at least one grouping level is needed")
    if y.shape != (n,) or any(c.shape != (n,) for c in levels):
        raise ValueError(f"X has {n} rows; y and every level's codes must be ({n},), got "
                         f"{y.shape}, {[c.shape for c in levels]}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite")
    if n <= p:
        raise ValueError(f"{n} observations for {p} fixed effects: no residual degrees of freedom")
    keys = np.stack(levels, 1)
    inverse, sizes, parents = [], [], []
    for depth in range(1, len(levels) + 1):
        pairs, inv = np.unique(keys[:, :depth], axis=0, return_inverse=True)
        inverse.append(inv.ravel())
        sizes.append(len(pairs))
    for depth in range(1, len(levels)):   # each group's parent, read from any of its rows
        par = np.zeros(sizes[depth], dtype=np.int64)
        par[inverse[depth]] = inverse[depth - 1]
        parents.append(par)
    b, nb = inverse[-1], sizes[-1]
    onehot = np.zeros((nb, n))
    onehot[b, np.arange(n)] = 1.0
    return _Sums(X.T @ X, X.T @ y, float(y @ y), onehot @ X, onehot @ y, onehot.sum(1),
                 tuple(parents), tuple(sizes), n, p)


def _system(S: _Sums, *t: float):
    """(X'H^-1X, X'H^-1y, y'H^-1y, log|H|) at variance ratios `t` (outermost level first).

    From the innermost level out: with H_l^-1 known through the vectors v_g = H_l^-1 1_g of its
    groups (X'v_g, y'v_g, q_g = 1_g'v_g), adding t 1_g 1_g' per group gives
    H^-1 = H_l^-1 - sum_g d_g v_g v_g', d_g = t / (1 + t q_g), |H| = |H_l| prod_g (1 + t q_g), and the
    parent group h's vector H^-1 1_h = sum_{g in h} v_g / (1 + t q_g)."""
    Xs, ys, q = S.Xb, S.yb, S.m
    A, b, yhy, logdet = S.XtX, S.Xty, S.yty, 0.0
    for level in range(len(t) - 1, -1, -1):
        tl = t[level]
        d = tl / (1 + tl * q)
        A = A - (Xs.T * d) @ Xs
        b = b - Xs.T @ (d * ys)
        yhy = yhy - float(np.sum(d * ys ** 2))
        logdet = logdet + float(np.sum(np.log1p(tl * q)))
        if level == 0:
            break
        w = 1 / (1 + tl * q)
        par, size = S.parents[level - 1], S.sizes[level - 1]
        Xw = np.zeros((size, S.p))
        np.add.at(Xw, par, Xs * w[:, None])
        Xs, ys, q = Xw, np.bincount(par, ys * w, size), np.bincount(par, q * w, size)
    return A, b, yhy, logdet


def _criterion(S: _Sums, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Profiled REML criterion (to maximize), beta, X'H^-1X, r'H^-1r at theta."""
    A, b, yhy, logdet_h = _system(S, *(float(x) ** 2 for x in theta))
    chol = np.linalg.cholesky(A)
    beta = np.linalg.solve(A, b)
    rhr = yhy - float(beta @ b)
    if not rhr > 0:
        raise FloatingPointError(f"residual quadratic form {rhr} <= 0 at theta {theta}")
    logdet_a = 2 * float(np.sum(np.log(np.diag(chol))))
    crit = -0.5 * (logdet_h + logdet_a + (S.n - S.p) * math.log(rhr))
    return crit, beta, A, rhr


def reml_nested(X: np.ndarray, y: np.ndarray, seed: np.ndarray, block: np.ndarray) -> NestedFit:
    """REML fit of y = X b + (1 | seed) + (1 | seed:block) (module doc). `seed` and `block` are
    integer codes per row; X must have full column rank. Raises LinAlgError / FloatingPointError /
    ValueError on a numerical failure (the caller falls back). BLAS runs on one thread meanwhile
    (`single_thread_blas`)."""
    return reml_levels(X, y, (seed, block))


def reml_levels(X: np.ndarray, y: np.ndarray, levels) -> NestedFit:
    """REML fit of y = X b + one random intercept per level of nested groups: `levels` holds the
    integer codes per row, outermost first, e.g. (seed, adapter, steps) for (1 | seed) +
    (1 | seed:adapter) + (1 | seed:adapter:steps). Same errors and BLAS handling as `reml_nested`."""
    with single_thread_blas():
        return _reml_levels(np.asarray(X, float), np.asarray(y, float),
                            tuple(np.asarray(c, np.int64) for c in levels))


def _reml_levels(X: np.ndarray, y: np.ndarray, levels: tuple[np.ndarray, ...]) -> NestedFit:
    from scipy.optimize import minimize, minimize_scalar

    S = _sums(X, y, *levels)
    L = len(levels)
    n_evals = 0

    def f(th) -> float:
        nonlocal n_evals
        n_evals += 1
        th = np.abs(np.asarray(th, float))            # Nelder-Mead may step below 0: mirror
        try:
            return -_criterion(S, th)[0]
        except (np.linalg.LinAlgError, FloatingPointError):
            return math.inf

    if L == 2:
        cands = _optimize_two(f, minimize, minimize_scalar)
    else:
        cands = _optimize_many(f, L, minimize, minimize_scalar)
    fun, theta = min(cands, key=lambda c: c[0])
    if not math.isfinite(fun):
        raise FloatingPointError("profiled REML criterion not finite anywhere it was evaluated")
    crit, beta, A, rhr = _criterion(S, theta)
    sigma2 = rhr / (S.n - S.p)
    cov = sigma2 * np.linalg.inv(A)
    # statsmodels' REML llf: the profiled criterion at s2 plus its constants
    llf = crit - 0.5 * (S.n - S.p) * (1 + LOG_2PI - math.log(S.n - S.p))
    return NestedFit(beta, cov, tuple(float(x) ** 2 * sigma2 for x in theta), sigma2, llf,
                     tuple(float(x) for x in theta), n_evals)


def _optimize_two(f, minimize, minimize_scalar) -> list[tuple[float, np.ndarray]]:
    """Candidates (criterion to minimize, theta) for two levels: the best of a 10 x 10 grid, then
    L-BFGS-B, a Nelder-Mead polish, and every boundary (one ratio at 0: bounded Brent; both)."""
    grid = np.r_[0.0, np.geomspace(1e-2, 1e2, 9)]
    _, *start = min((f(th), *th) for th in itertools.product(grid, repeat=2))
    cands: list[tuple[float, np.ndarray]] = []
    opt = minimize(f, np.array(start), method="L-BFGS-B", bounds=[(0, None)] * 2,
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 500})
    cands.append((float(opt.fun), np.asarray(opt.x, float)))
    nm = minimize(f, np.maximum(opt.x, 1e-4), method="Nelder-Mead",
                  options={"xatol": 1e-9, "fatol": 1e-10, "maxiter": 600})
    cands.append((float(nm.fun), np.abs(np.asarray(nm.x, float))))
    best_t = cands[int(np.argmin([c[0] for c in cands]))][1]
    hi = max(10.0, 4 * float(np.max(best_t)))
    for k in (0, 1):   # the two boundaries (one variance at 0), where singular fits live
        def g(t, k=k):
            th = np.zeros(2)
            th[1 - k] = t
            return f(th)
        o = minimize_scalar(g, bounds=(0.0, hi), method="bounded", options={"xatol": 1e-12})
        th = np.zeros(2)
        th[1 - k] = float(o.x)
        cands.append((float(o.fun), th))
        cands.append((g(0.0), np.zeros(2)))
    return cands


def _optimize_many(f, L: int, minimize, minimize_scalar) -> list[tuple[float, np.ndarray]]:
    """Candidates for three or more levels: the best of a 7^L grid, then Powell within bounds
    (derivative-free: it reaches boundary optima that L-BFGS-B's finite differences stop short of;
    about 600 evaluations at three levels against about 900 for L-BFGS-B plus 5,600 for a full
    Nelder-Mead polish), a short Nelder-Mead polish, and the boundary faces of the ratios that the
    optimum puts near 0 (each subset of them at exactly 0, the others re-optimized)."""
    grid = np.r_[0.0, np.geomspace(1e-2, 1e2, 6)]
    _, *start = min((f(th), *th) for th in itertools.product(grid, repeat=L))
    hi = 1e3
    cands: list[tuple[float, np.ndarray]] = []
    opt = minimize(f, np.array(start), method="Powell", bounds=[(0, hi)] * L,
                   options={"xtol": 1e-8, "ftol": 1e-13, "maxfev": 200 * L * L})
    cands.append((float(opt.fun), np.asarray(opt.x, float)))
    nm = minimize(f, np.maximum(opt.x, 1e-6), method="Nelder-Mead",
                  options={"xatol": 1e-9, "fatol": 1e-10, "maxfev": 150 * L})
    cands.append((float(nm.fun), np.abs(np.asarray(nm.x, float))))
    best_t = cands[int(np.argmin([c[0] for c in cands]))][1]
    small = [k for k in range(L) if best_t[k] < 1e-2]
    for n_zero in range(1, len(small) + 1):
        for zero in itertools.combinations(small, n_zero):
            free = [k for k in range(L) if k not in zero]

            def g(v, free=free):
                th = np.zeros(L)
                th[free] = v
                return f(th)
            th = np.zeros(L)
            if not free:
                cands.append((f(th), th))
                continue
            if len(free) == 1:
                o = minimize_scalar(g, bounds=(0.0, max(10.0, 4 * float(best_t[free[0]]))), method="bounded",
                                    options={"xatol": 1e-12})
            else:
                o = minimize(g, best_t[free], method="Powell", bounds=[(0, hi)] * len(free),
                             options={"xtol": 1e-8, "ftol": 1e-13, "maxfev": 200 * L * L})
            th[free] = np.asarray(o.x, float)
            cands.append((float(o.fun), th))
    cands.append((f(np.zeros(L)), np.zeros(L)))
    return cands
