"""Population statistics (docs/methods.md, section 13): from "did these users' adapters
personalize?" to "what share of a population of users would, and what does a new user get?".

Three figures, alongside the per-user ones:

- **share** of users whose margin clears a bar (the pre-registered lenient and strict margins and
  `[population] share_margin`), with an interval that carries both sources of uncertainty: each
  user's own estimation error (a user counts towards the lower bound only if their margin interval
  lies above the bar, towards the upper bound if it reaches it) and the sampling of users from the
  population (Clopper-Pearson on those counts, corrected for the probability, up to
  (1 - level) / 2, that a user on the wrong side of the bar is counted: `share_bounds`). The same
  against the leave-one-out adapter (`loo:<user>` -> own), what a user without their own adapter would lose.
- **random-slope model**: `y ~ seed:adapter + eval + diag + (0 + diag | eval)` (REML): the
  personalization effect varies by user; its fixed part is the population-average effect, with a
  t interval on J - 1 degrees of freedom and a prediction interval for a new user's effect
  (Higgins, Thompson & Spiegelhalter 2009: t on J - 2 df, variance se^2 + tau^2). Two
  random-intercept models of per-(seed, user) log-ratios give the same for own vs `loo:<user>`
  and for base -> `loo:<user>` (what a new user receives from the generic adapter).
- two three-valued **criteria**, `population_share` and `population_effect`, each "not applicable"
  below the number of users it needs (`min_users_share`, `MIN_USERS_EFFECT`).

Pure: no file I/O, no randomness of its own (the bootstrap draws come from `validation.judge`).
"""

from __future__ import annotations

import math
import warnings as _warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from validation.contract.prereg import MIN_USERS_EFFECT, min_users_share
from validation.contract.status import Status
from validation.inputs.arrays import StudyArrays
from validation.judgment.results import CriterionResult
from validation.judgment.user_results import Decomposition, UserResult
from validation.stats.mixed_model import fit_best, long_table
from validation.stats.reml import single_thread_blas
from validation.stats.types import Interval, _interval, _num, signed_pct, threshold_pct

MIN_USERS_MODEL = 3      # the prediction interval needs J - 2 >= 1 degrees of freedom
SINGULAR_RATIO = 1e-8


# ---- the share of users clearing a bar ------------------------------------------------------------

def clopper_pearson(k: int, n: int, level: float) -> Interval:
    """Exact two-sided binomial interval for k successes of n at `level` (each tail (1-level)/2)."""
    a = (1 - level) / 2
    low = 0.0 if k <= 0 else float(stats.beta.ppf(a, k, n - k + 1))
    high = 1.0 if k >= n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return Interval(low, high)


def share_bounds(n_sure: int, n_possible: int, n: int, level: float) -> Interval:
    """The interval of the population share p clearing a bar from `n_sure` of `n` users whose
    interval lies above it and `n_possible` whose interval reaches it (docs/methods.md, section 13).

    A user below the bar is counted sure with probability at most a = (1 - level) / 2 (the
    one-sided error of their interval), one above it is counted possible with probability at least
    1 - a, so the probability of "sure" is at most p + a (1 - p) and that of "possible" at least
    p (1 - a) (Rogan & Gladen's prevalence under misclassification, with the worst-case rates).
    Solving the Clopper-Pearson bounds of those probabilities for p:
    [(CP_low(n_sure) - a) / (1 - a), CP_high(n_possible) / (1 - a)], clipped to [0, 1]. Each end
    keeps its error at or below (1 - level) / 2 at ANY number of users, where the bare
    Clopper-Pearson bounds drift (false PASS 0.058 at 1,000 users, 0.094 at 3,000, towards 1)."""
    a = (1 - level) / 2
    low = (clopper_pearson(n_sure, n, level).low - a) / (1 - a)
    high = clopper_pearson(n_possible, n, level).high / (1 - a)
    return Interval(float(min(1.0, max(0.0, low))), float(min(1.0, max(0.0, high))))


@dataclass(frozen=True)
class ShareResult:
    """The share of users whose gain (`against`) clears `bar`, with its interval."""

    against: str           # "best_other" / "worst_other" (the margin) or "loo" (loo:<user> -> own)
    bar: float
    n_users: int
    n_point: int           # point estimate >= bar
    n_sure: int            # interval low >= bar: counted towards the lower bound
    n_possible: int        # interval high >= bar: counted towards the upper bound
    ci: Interval           # `share_bounds(n_sure, n_possible)` at the pre-registered level
    users_below: tuple[str, ...]   # point estimate below the bar

    @property
    def share(self) -> float:
        return self.n_point / self.n_users if self.n_users else math.nan  # no user with a finite gain

    def to_json(self) -> dict[str, Any]:
        return {"against": self.against, "bar": self.bar, "n_users": self.n_users,
                "share": _num(self.share), "ci": _interval(self.ci), "n_point": self.n_point,
                "n_sure": self.n_sure, "n_possible": self.n_possible, "users_below": list(self.users_below),
                "bound": SHARE_BOUND}


SHARE_BOUND = ("Clopper-Pearson on the sure / possible counts, corrected for a user on the wrong side of the bar "
               "being counted with probability up to (1 - level) / 2")


def share_clearing(users: tuple[str, ...], point: np.ndarray, low: np.ndarray, high: np.ndarray,
                   bar: float, level: float, against: str) -> ShareResult:
    """(J,) point estimates and interval bounds -> the share clearing `bar` (module doc)."""
    point, low, high = (np.asarray(x, dtype=float) for x in (point, low, high))
    ok = np.isfinite(point)
    n = len(point)  # every user: one without a finite margin counts as not sure but possible (conservative)
    if not ok.any():
        return ShareResult(against, bar, 0, 0, 0, 0, Interval(math.nan, math.nan), ())
    sure = int(np.sum(ok & np.isfinite(low) & (low >= bar)))
    possible = int(np.sum(~ok | ~np.isfinite(high) | (high >= bar)))
    ci = share_bounds(sure, possible, n, level)
    below = tuple(u for u, p, f in zip(users, point, ok, strict=True) if f and p < bar)
    return ShareResult(against, bar, n, int(np.sum(point[ok] >= bar)), sure, possible, ci, below)


# ---- random-effects models ---------------------------------------------------------------------

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


DESCRIPTIONS = {
    "personalization": "own adapter vs other users' adapters (diag)",
    "own_vs_loo": "own adapter vs loo:<user> (what a user without an adapter would lose)",
    "new_user": "loo:<user> vs base (what a new user gets from the generic adapter)",
}


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


# ---- criteria ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PopulationCriterion:
    """A population criterion: its CriterionResult, or "not applicable" with the reason."""

    name: str                       # "population_share" | "population_effect"
    min_users: int
    result: CriterionResult | None  # None = not applicable (too few users, or no model)
    reason: str = ""

    @property
    def applicable(self) -> bool:
        return self.result is not None

    @property
    def status_text(self) -> str:
        return "NOT_APPLICABLE" if self.result is None else self.result.status.value

    def to_json(self) -> dict[str, Any]:
        if self.result is None:
            return {"status": "NOT_APPLICABLE", "point": None, "threshold": None,
                    "min_users": self.min_users, "explanation": self.reason}
        return self.result.to_json() | {"min_users": self.min_users}


def share_criterion(share: ShareResult, min_share: float, min_users: int) -> PopulationCriterion:
    """PASS: share CI low >= min_share; FAIL: CI high < min_share; else INCONCLUSIVE."""
    bar, need = threshold_pct(share.bar), f"{min_share:.0%}"
    if share.n_users < min_users:
        return PopulationCriterion("population_share", min_users, None,
                                   f"{share.n_users} users; a share of {need} can be shown only with "
                                   f"{min_users} or more (not applicable)")
    lo, hi = share.ci
    status = Status.read(lo >= min_share, hi < min_share)
    why = (f"share of users with margin >= {bar}: {share.share:.0%} ({share.n_point} of {share.n_users}), "
           f"interval [{lo:.0%}, {hi:.0%}] ({share.n_sure} with interval low >= {bar}, "
           f"{share.n_possible} with high >= {bar}; Clopper-Pearson corrected for miscounted users); "
           f"{need} required")
    point = Status.PASS if share.share >= min_share else Status.FAIL
    return PopulationCriterion("population_share", min_users,
                               CriterionResult("population_share", status, point, share.bar, why))


def effect_criterion(effect: PopulationEffect | None, n_users: int, max_effect: float,
                     note: str = "") -> PopulationCriterion:
    """PASS: the population-average effect's CI high < max_effect; FAIL: CI low >= max_effect."""
    if n_users < MIN_USERS_EFFECT or effect is None:
        reason = (f"{n_users} users; the population-average effect needs {MIN_USERS_EFFECT} or more "
                  "(not applicable)" if n_users < MIN_USERS_EFFECT else f"no model: {note or 'not fitted'}")
        return PopulationCriterion("population_effect", MIN_USERS_EFFECT, None, reason)
    lo, hi = effect.ci
    status = Status.read(hi < max_effect, lo >= max_effect)
    why = (f"population-average personalization effect {effect.effect:+.3f} log-ratio, interval "
           f"[{lo:+.3f}, {hi:+.3f}] (t, {effect.df} df); must lie below {max_effect:+g}")
    point = Status.PASS if effect.effect < max_effect else Status.FAIL
    return PopulationCriterion("population_effect", MIN_USERS_EFFECT,
                               CriterionResult("population_effect", status, point, max_effect, why))


# ---- everything together -----------------------------------------------------------------------

@dataclass(frozen=True)
class PopulationResult:
    """verdict.json `population`."""

    n_users: int
    level: float
    shares: tuple[ShareResult, ...]
    effects: tuple[PopulationEffect, ...]
    criteria: tuple[PopulationCriterion, ...]
    notes: tuple[str, ...] = ()

    def share(self, against: str, bar: float) -> ShareResult | None:
        return next((s for s in self.shares if s.against == against and math.isclose(s.bar, bar)), None)

    def effect(self, key: str) -> PopulationEffect | None:
        return next((e for e in self.effects if e.key == key), None)

    def criterion(self, name: str) -> PopulationCriterion:
        return next(c for c in self.criteria if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return {"n_users": self.n_users, "level": self.level,
                "shares": [s.to_json() for s in self.shares],
                "effects": {e.key: e.to_json() for e in self.effects},
                "criteria": {c.name: c.to_json() for c in self.criteria}, "notes": list(self.notes),
                "effects_descriptive_only": bool(self.effects) and self.n_users < MIN_USERS_EFFECT}


def population_stats(arrays: StudyArrays, users: tuple[UserResult, ...], decomposition: tuple[Decomposition, ...],
                     prereg, margin_bounds: tuple[np.ndarray, np.ndarray], *, fit: bool = True) -> PopulationResult:
    """The population figures of one study. `margin_bounds` = (low, high), (J,), the users'
    margin intervals at `prereg.confidence` (the pre-registered comparator's, as the criteria read
    them); `fit=False` skips the models (the effect criterion is then not applicable)."""
    level = prereg.confidence
    names = tuple(u.user for u in users)
    J = len(names)
    worst = prereg.comparator == "worst_other"
    point = np.array([u.worst_other_margin if worst else u.margin for u in users])
    bars = tuple(sorted({prereg.lenient_margin, prereg.strict_margin, prereg.share_margin}))
    low, high = margin_bounds
    shares = [share_clearing(names, point, low, high, b, level, prereg.comparator) for b in bars]
    if decomposition:
        steps = [d.step("loo_to_own") for d in decomposition]
        lp = np.array([s.gain if s else math.nan for s in steps])
        ll = np.array([s.ci.low if s and s.ci else (s.gain if s else math.nan) for s in steps])
        lh = np.array([s.ci.high if s and s.ci else (s.gain if s else math.nan) for s in steps])
        shares += [share_clearing(names, lp, ll, lh, b, level, "loo") for b in bars]
    notes: list[str] = []
    effects: list[PopulationEffect] = []
    slope_note = ""
    if fit:
        eff, n = fit_random_slope(arrays, level)
        notes += n
        slope_note = "; ".join(n)
        if eff is not None:
            effects.append(eff)
        for key, values in loo_log_ratios(arrays).items():
            e, n = fit_random_intercept(values, arrays.users, key, level)
            notes += n
            if e is not None:
                effects.append(e)
    else:
        slope_note = "models not fitted"
    main = next(s for s in shares if s.against == prereg.comparator and math.isclose(s.bar, prereg.share_margin))
    criteria = (share_criterion(main, prereg.min_share, min_users_share(prereg.min_share, level)),
                effect_criterion(next((e for e in effects if e.key == "personalization"), None), J,
                                 prereg.max_effect, slope_note))
    return PopulationResult(J, level, tuple(shares), tuple(effects), criteria, tuple(notes))


# ---- words -------------------------------------------------------------------------------------

def descriptive_note(p: PopulationResult) -> str | None:
    """With fewer than MIN_USERS_EFFECT users the population averages and a new user's range are
    descriptive only (n - 1 and n - 2 df); the one wording the terminal, the report and the summary
    sentence give them. None when they are inferential or absent."""
    if not p.effects or p.n_users >= MIN_USERS_EFFECT:
        return None
    return (f"with {p.n_users} users these averages rest on {p.n_users - 1} df and a new user's range on "
            f"{p.n_users - 2}: descriptive only (POPULATION_EFFECT needs {MIN_USERS_EFFECT} users)")


def population_sentence(p: PopulationResult) -> str:
    """One clause for the summary sentence: the share at the share bar and the average effect."""
    parts = []
    c = p.criterion("population_share")
    main = p.share(p.shares[0].against, c.result.threshold) if c.result else None
    if main is None:
        main = next((s for s in p.shares if s.against != "loo"), None)
    if main is not None and main.n_users:
        parts.append(f"{main.share:.0%} of {main.n_users} users clear {threshold_pct(main.bar)} "
                     f"(population share {main.ci.low:.0%} to {main.ci.high:.0%})")
    e = p.effect("personalization")
    if e is not None:
        few = ", descriptive only" if descriptive_note(p) else ""
        parts.append(f"population-average effect {signed_pct(-math.expm1(e.effect))} perplexity "
                     f"reduction (a new user: {signed_pct(-math.expm1(e.prediction.high))} to "
                     f"{signed_pct(-math.expm1(e.prediction.low))}{few})")
    return "; ".join(parts)
