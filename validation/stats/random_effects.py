"""Random-effects models of the population statistics (docs/methods.md, section 13), with users as a
random factor: the random-slope model `y ~ seed:adapter + eval + diag + (0 + diag | eval)` by profiled
REML (`fit_random_slope`), and random-intercept models of per-(seed, user) log-ratios against the
leave-one-out control (`fit_random_intercept`, `loo_log_ratios`). Each gives a `PopulationEffect`:
the population-average effect with a t interval on J - 1 df and the prediction interval for a new user
(t on J - 2 df, variance se^2 + tau^2). Pure: no file I/O, no randomness."""

from __future__ import annotations

import math
import warnings as _warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from validation.inputs.arrays import StudyArrays
from validation.stats.mixed_model import fit_best, long_table
from validation.stats.reml import single_thread_blas
from validation.stats.types import Interval, _interval, _num

MIN_USERS_MODEL = 3      # the prediction interval needs J - 2 >= 1 degrees of freedom
SINGULAR_RATIO = 1e-8


@dataclass(frozen=True)
class PopulationEffect:
    """A population-average effect (log-ratio of perplexity, negative = lower perplexity) with
    users as a random factor, and the prediction interval for a new user's effect."""

    key: str               # "personalization" | "own_vs_loo" | "new_user"
    formula: str           # the lme4 equivalent
    effect: float
    se: float
    ci: Interval           # t on df = J - 1
    df: int
    user_sd: float         # tau: sd of the users' effects around the population average
    residual_sd: float
    prediction: Interval   # for a new user's effect: t on J - 2, variance se^2 + tau^2
    n_users: int
    optimizer: str
    singular: bool         # tau^2 / residual variance < 1e-8: no detectable between-user variation
    user_effects: tuple[tuple[str, float], ...]   # population effect + each user's BLUP
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"formula": self.formula, "effect": _num(self.effect), "ratio": _num(math.exp(self.effect)),
                "se": _num(self.se), "ci": _interval(self.ci), "df": self.df,
                "user_sd": _num(self.user_sd), "residual_sd": _num(self.residual_sd),
                "prediction": _interval(self.prediction), "n_users": self.n_users,
                "optimizer": self.optimizer, "singular": self.singular,
                "user_effects": {u: _num(e) for u, e in self.user_effects}, "warnings": list(self.warnings)}


def _effect(key: str, formula: str, res, term: str, method: str, n_users: int, level: float,
            users: tuple[str, ...], msgs: tuple[str, ...]) -> PopulationEffect:
    beta, se = float(res.fe_params[term]), float(res.bse_fe[term])
    tau2 = max(0.0, float(np.asarray(res.cov_re)[0, 0]))
    scale = float(res.scale)
    df = n_users - 1
    q = float(stats.t.ppf(1 - (1 - level) / 2, df))
    qp = float(stats.t.ppf(1 - (1 - level) / 2, n_users - 2))
    half = qp * math.sqrt(se ** 2 + tau2)
    re = res.random_effects
    blups = tuple((u, beta + float(np.asarray(re[u])[0])) for u in users if u in re)
    return PopulationEffect(key, formula, beta, se, Interval(beta - q * se, beta + q * se), df,
                            math.sqrt(tau2), math.sqrt(scale), Interval(beta - half, beta + half),
                            n_users, method, bool(tau2 / scale < SINGULAR_RATIO), blups, msgs)


def random_slope_table(arrays: StudyArrays) -> pd.DataFrame:
    """The long table of `validation.stats.mixed_model.long_table` plus `sa` = seed:adapter."""
    df = long_table(arrays)
    df["sa"] = df["seed"] + ":" + df["adapter"]
    return df


@dataclass(frozen=True)
class SlopeFit:
    """The REML fit of `fit_random_slope`: diag coefficient, its se, tau, sigma, BLUPs."""

    beta: float
    se: float
    tau2: float
    sigma2: float
    blups: np.ndarray        # (J,) u_j, NaN for a user without a diagonal cell
    reml: float              # the maximized REML log-likelihood (up to a constant)


def reml_random_slope(X: np.ndarray, y: np.ndarray, group: np.ndarray, n_groups: int, term: int) -> SlopeFit:
    """REML for y = X b + Z u + e, u_g ~ N(0, tau^2) hitting the rows of group g (group < 0: no
    random effect), e ~ N(0, sigma^2): V = sigma^2 H, H = I + gamma Z Z', gamma = tau^2/sigma^2,
    H^-1 = I - sum_g c_g 1_g 1_g', c_g = gamma / (1 + gamma n_g). The profiled REML criterion
    -1/2 [log|H| + log|X'H^-1 X| + (n - p) log(r'H^-1 r)] is maximized over theta = sqrt(gamma)
    (lme4's parameter) on a grid, then by bounded Brent around the best point, 0 included.
    Exact, dense in p only: X'X and X'1_g are formed once."""
    from scipy.optimize import minimize_scalar

    n, p = X.shape
    XtX, Xty, yty = X.T @ X, X.T @ y, float(y @ y)
    onehot = np.zeros((n_groups, n))
    rows = np.flatnonzero(group >= 0)
    onehot[group[rows], rows] = 1.0
    Xg, yg, ng = onehot @ X, onehot @ y, onehot.sum(1)
    # X'H^-1 X = P - Xg' C Xg, P = X'X: per theta only J x J algebra (Woodbury, determinant lemma)
    chol = np.linalg.cholesky(XtX)
    logdet_p = 2 * float(np.sum(np.log(np.diag(chol))))
    G = np.linalg.solve(XtX, Xg.T).T                 # Xg P^-1, (J, p)
    M, Gy, s0 = G @ Xg.T, G @ Xty, float(Xty @ np.linalg.solve(XtX, Xty))

    def crit_at(theta: float) -> float:
        g = theta * theta
        c = g / (1 + g * ng)
        cy = c * yg
        K = np.eye(n_groups) - M * c[None, :]        # I - M C
        _, logdet_k = np.linalg.slogdet(np.eye(n_groups) - c[:, None] * M)   # |I - C M|
        h = Gy - M @ cy
        bqb = s0 - 2 * float(cy @ Gy) + float(cy @ M @ cy)
        bab = bqb + float((c * h) @ np.linalg.solve(K, h))
        rhr = yty - float(np.sum(c * yg ** 2)) - bab
        return -0.5 * (float(np.sum(np.log1p(g * ng))) + logdet_p + logdet_k + (n - p) * math.log(rhr))

    def parts(theta: float):
        g = theta * theta
        c = g / (1 + g * ng)
        A = XtX - (Xg.T * c) @ Xg
        b = Xty - Xg.T @ (c * yg)
        beta = np.linalg.solve(A, b)
        rhr = yty - float(np.sum(c * yg ** 2)) - float(beta @ b)
        return crit_at(theta), beta, A, rhr, c

    grid = np.r_[0.0, np.geomspace(1e-3, 1e3, 37)]
    vals = [crit_at(t) for t in grid]
    k = int(np.argmax(vals))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    best_t, best_v = float(grid[k]), float(vals[k])   # Python floats: a grid optimum must serialize too
    if hi > lo:
        opt = minimize_scalar(lambda t: -crit_at(t), bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-10})
        if -opt.fun > best_v:
            best_t, best_v = float(opt.x), -float(opt.fun)
    crit, beta, A, rhr, c = parts(best_t)
    sigma2 = rhr / (n - p)
    cov = sigma2 * np.linalg.inv(A)
    r = y - X @ beta
    blups = np.where(ng > 0, c * (onehot @ r), np.nan)
    return SlopeFit(float(beta[term]), float(math.sqrt(cov[term, term])), best_t ** 2 * sigma2, sigma2,
                    blups, crit)


def slope_design(arrays: StudyArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The user cells as (X, y, group, diag column): X = one-hot seed:adapter, eval dummies (first
    user dropped), diag; group = the user of a diagonal cell, -1 off the diagonal."""
    df = random_slope_table(arrays)
    sa = pd.Categorical(df["sa"])
    ev = pd.Categorical(df["eval"], categories=list(arrays.users))
    X = np.hstack([np.eye(len(sa.categories))[sa.codes], np.eye(len(arrays.users))[ev.codes][:, 1:],
                   df["diag"].to_numpy()[:, None]])
    group = np.where(df["diag"].to_numpy() > 0, ev.codes, -1).astype(int)
    return X, df["y"].to_numpy(dtype=float), group, X.shape[1] - 1


def fit_random_slope(arrays: StudyArrays, level: float) -> tuple[PopulationEffect | None, tuple[str, ...]]:
    """`y ~ seed:adapter + eval + diag + (0 + diag | eval)`, REML, user rows only (the lme4
    formula of `PopulationEffect.formula`; `reml_random_slope`). The seed:adapter fixed effects
    absorb the seed and instance variation that `validation.stats.mixed_model` treats as random."""
    J = len(arrays.users)
    if J < MIN_USERS_MODEL:
        return None, (f"random-slope model needs at least {MIN_USERS_MODEL} users; the study has {J}",)
    X, y, group, term = slope_design(arrays)
    try:
        with single_thread_blas():  # small p x p algebra: multi-threaded BLAS only adds wake-ups
            f = reml_random_slope(X, y, group, J, term)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as e:
        return None, (f"random-slope model failed: {type(e).__name__}: {e}",)
    q = float(stats.t.ppf(1 - (1 - level) / 2, J - 1))
    qp = float(stats.t.ppf(1 - (1 - level) / 2, J - 2))
    half = qp * math.sqrt(f.se ** 2 + f.tau2)
    formula = "lmer(y ~ seed:adapter + eval + diag + (0 + diag | eval), REML = TRUE)"
    blups = tuple((u, f.beta + float(b)) for u, b in zip(arrays.users, f.blups, strict=True) if np.isfinite(b))
    return PopulationEffect("personalization", formula, f.beta, f.se, Interval(f.beta - q * f.se, f.beta + q * f.se),
                            J - 1, math.sqrt(f.tau2), math.sqrt(f.sigma2), Interval(f.beta - half, f.beta + half),
                            J, "profiled-reml", bool(f.tau2 / f.sigma2 < SINGULAR_RATIO), blups), ()


def fit_random_intercept(values: np.ndarray, users: tuple[str, ...], key: str, level: float
                         ) -> tuple[PopulationEffect | None, tuple[str, ...]]:
    """(S, J) per-seed log-ratios -> `d ~ 1 + (1 | user)`, REML. Needs 2 seeds and 3 users."""
    S, J = values.shape
    if J < MIN_USERS_MODEL or S < 2:
        return None, (f"{key}: the random-intercept model needs {MIN_USERS_MODEL} users and 2 seeds; "
                      f"the study has {J} and {S}",)
    s, j = np.meshgrid(np.arange(S), np.arange(J), indexing="ij")
    keep = np.isfinite(values)
    df = pd.DataFrame({"d": values[keep], "user": np.asarray(users)[j[keep]]})
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        model = smf.mixedlm("d ~ 1", df, groups="user", re_formula="1")
    res, method, msgs, errors = fit_best(model)
    if res is None:
        return None, (f"{key}: random-intercept model did not converge: " + "; ".join(errors),)
    return _effect(key, "lmer(d ~ 1 + (1 | user), REML = TRUE)", res, "Intercept", method, J, level,
                   users, msgs), ()


def loo_log_ratios(arrays: StudyArrays) -> dict[str, np.ndarray]:
    """(S, J) per-seed log-ratios against the leave-one-out control; {} without it:
    `own_vs_loo` = log ppl[own j] - log ppl[loo:j], `new_user` = log ppl[loo:j] - log ppl[base]."""
    loo = arrays.loo
    if loo is None:
        return {}
    J = len(arrays.users)
    cols = np.arange(J)
    x = arrays.logppl
    out = {"own_vs_loo": x[:, cols, cols] - x[:, loo, cols]}
    if arrays.base is not None:
        out["new_user"] = x[:, loo, cols] - x[:, arrays.base, cols]
    return out
