"""Exact profiled REML for two nested random intercepts (seed, seed:adapter), closed form per seed.

The model of `validation.model`: y = X b + u_seed + u_seed:adapter + e, u_seed ~ N(0, s2 t1),
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
    """The REML fit. `seed_var`, `block_var`, `sigma2` are variances (not ratios)."""

    beta: np.ndarray          # (p,)
    cov: np.ndarray           # (p, p), s2 (X'H^-1 X)^-1
    seed_var: float           # s2 t1
    block_var: float          # s2 t2
    sigma2: float             # residual variance (REML)
    reml_llf: float           # REML log-likelihood, statsmodels' MixedLM `llf` convention
    theta: tuple[float, float]
    n_evals: int

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))


@dataclass(frozen=True)
class _Sums:
    """What every criterion evaluation needs, formed once from (X, y, seed, block)."""

    XtX: np.ndarray
    Xty: np.ndarray
    yty: float
    Xb: np.ndarray            # (nb, p) per-block sums of X rows
    yb: np.ndarray            # (nb,)
    m: np.ndarray             # (nb,) cells per block
    seed_of: np.ndarray       # (nb,) seed index of each block
    n_seeds: int
    n: int
    p: int


def _sums(X: np.ndarray, y: np.ndarray, seed: np.ndarray, block: np.ndarray) -> _Sums:
    n, p = X.shape
    if y.shape != (n,) or seed.shape != (n,) or block.shape != (n,):
        raise ValueError(f"X has {n} rows; y, seed and block must be ({n},), got "
                         f"{y.shape}, {seed.shape}, {block.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite")
    if n <= p:
        raise ValueError(f"{n} observations for {p} fixed effects: no residual degrees of freedom")
    # blocks are (seed, block) pairs: the same adapter under two seeds is two blocks
    pairs, b = np.unique(np.stack([seed, block], 1), axis=0, return_inverse=True)
    b = b.ravel()
    nb = len(pairs)
    _, seed_of = np.unique(pairs[:, 0], return_inverse=True)
    onehot = np.zeros((nb, n))
    onehot[b, np.arange(n)] = 1.0
    return _Sums(X.T @ X, X.T @ y, float(y @ y), onehot @ X, onehot @ y, onehot.sum(1),
                 seed_of.ravel(), int(seed_of.max()) + 1, n, p)


def _system(S: _Sums, t1: float, t2: float):
    """(X'H^-1X, X'H^-1y, y'H^-1y, log|H|) at variance ratios (t1, t2)."""
    c = t2 / (1 + t2 * S.m)                           # B^-1 = I - sum_a c_a 1_a 1_a'
    w = 1 / (1 + t2 * S.m)                            # B^-1 1 on block a
    q = np.bincount(S.seed_of, S.m * w, S.n_seeds)    # 1'B^-1 1 per seed
    d = t1 / (1 + t1 * q)
    Xw = np.zeros((S.n_seeds, S.p))                   # X' B^-1 1 per seed
    np.add.at(Xw, S.seed_of, S.Xb * w[:, None])
    yw = np.bincount(S.seed_of, S.yb * w, S.n_seeds)
    A = S.XtX - (S.Xb.T * c) @ S.Xb - (Xw.T * d) @ Xw
    b = S.Xty - S.Xb.T @ (c * S.yb) - Xw.T @ (d * yw)
    yhy = S.yty - float(np.sum(c * S.yb ** 2)) - float(np.sum(d * yw ** 2))
    logdet = float(np.sum(np.log1p(t2 * S.m))) + float(np.sum(np.log1p(t1 * q)))
    return A, b, yhy, logdet


def _criterion(S: _Sums, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Profiled REML criterion (to maximize), beta, X'H^-1X, r'H^-1r at theta."""
    A, b, yhy, logdet_h = _system(S, float(theta[0]) ** 2, float(theta[1]) ** 2)
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
    with single_thread_blas():
        return _reml_nested(X, y, seed, block)


def _reml_nested(X: np.ndarray, y: np.ndarray, seed: np.ndarray, block: np.ndarray) -> NestedFit:
    from scipy.optimize import minimize, minimize_scalar

    S = _sums(np.asarray(X, float), np.asarray(y, float), np.asarray(seed, np.int64),
              np.asarray(block, np.int64))
    n_evals = 0

    def f(th) -> float:
        nonlocal n_evals
        n_evals += 1
        th = np.abs(np.asarray(th, float))            # Nelder-Mead may step below 0: mirror
        try:
            return -_criterion(S, th)[0]
        except (np.linalg.LinAlgError, FloatingPointError):
            return math.inf

    grid = np.r_[0.0, np.geomspace(1e-2, 1e2, 9)]
    vals = [(f((a, b)), a, b) for a in grid for b in grid]
    _, a0, b0 = min(vals)
    cands: list[tuple[float, np.ndarray]] = []
    opt = minimize(f, np.array([a0, b0]), method="L-BFGS-B", bounds=[(0, None), (0, None)],
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 500})
    cands.append((float(opt.fun), np.asarray(opt.x, float)))
    nm = minimize(f, np.maximum(opt.x, 1e-4), method="Nelder-Mead",
                  options={"xatol": 1e-9, "fatol": 1e-10, "maxiter": 600})
    cands.append((float(nm.fun), np.abs(np.asarray(nm.x, float))))
    # the two boundaries (one variance at 0), where singular fits live
    best_t = cands[int(np.argmin([c[0] for c in cands]))][1]
    hi = max(10.0, 4 * float(np.max(best_t)))
    for k in (0, 1):
        def g(t, k=k):
            th = np.zeros(2)
            th[1 - k] = t
            return f(th)
        o = minimize_scalar(g, bounds=(0.0, hi), method="bounded", options={"xatol": 1e-12})
        th = np.zeros(2)
        th[1 - k] = float(o.x)
        cands.append((float(o.fun), th))
        cands.append((g(0.0), np.zeros(2)))
    fun, theta = min(cands, key=lambda c: c[0])
    if not math.isfinite(fun):
        raise FloatingPointError("profiled REML criterion not finite anywhere it was evaluated")
    crit, beta, A, rhr = _criterion(S, theta)
    sigma2 = rhr / (S.n - S.p)
    cov = sigma2 * np.linalg.inv(A)
    # statsmodels' REML llf: the profiled criterion at s2 plus its constants
    llf = crit - 0.5 * (S.n - S.p) * (1 + LOG_2PI - math.log(S.n - S.p))
    t1, t2 = float(theta[0]) ** 2, float(theta[1]) ** 2
    return NestedFit(beta, cov, t1 * sigma2, t2 * sigma2, sigma2, llf,
                     (float(theta[0]), float(theta[1])), n_evals)
