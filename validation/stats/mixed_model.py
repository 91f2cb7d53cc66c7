"""The mixed-effects model of docs/methods.md (section 7), fitted with statsmodels, diagnostics surfaced.

Response y = log ppl per (seed, adapter i, eval j), user adapters only:
    y ~ C(adapter) + C(eval) + diag,  diag = 1[i == j]
with a random intercept per seed and a variance component per seed:adapter (REML). The lme4
equivalent is `lmer(y ~ adapter + eval + diag + (1 | seed) + (1 | seed:adapter), REML = TRUE)`.
The per-user variant replaces `diag` by one indicator per evaluation user (`diag:C(eval)`).
With one seed the random effects cannot be estimated: the fixed part is fitted by OLS.

Fitted by exact profiled REML (`validation.stats.reml.reml_nested`, closed-form per seed: seconds at 50
users where statsmodels' MixedLM took minutes); statsmodels' MixedLM (`engine="mixedlm"`) stays as
the fallback when that fit fails and as the cross-check of the tests.
"""

from __future__ import annotations

import math
import warnings as _warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import patsy
import statsmodels.formula.api as smf
from scipy import stats

from validation.inputs.arrays import StudyArrays
from validation.stats.fits import ModelFit, UserEffect
from validation.stats.reml import NestedFit, reml_levels, single_thread_blas
from validation.stats.types import Interval, ModelKind

SINGULAR_RATIO = 1e-8       # variance / residual scale below this = boundary (singular) fit
METHODS = ("lbfgs", "powell", "bfgs", "cg", "nm")
PROFILED = "profiled-reml"
ENGINES = (PROFILED, "mixedlm")


def long_table(arrays: StudyArrays) -> pd.DataFrame:
    """(S, A, J) user rows -> one row per finite cell: seed, adapter, eval, diag, diag_<k>, y."""
    S, _, J = arrays.logppl.shape
    s, i, j = np.meshgrid(np.arange(S), np.arange(J), np.arange(J), indexing="ij")
    y = arrays.logppl[:, :J, :]
    keep = np.isfinite(y)
    df = pd.DataFrame({
        "seed": np.asarray(arrays.seeds)[s[keep]].astype(str),
        "adapter": np.asarray(arrays.users)[i[keep]],
        "eval": np.asarray(arrays.users)[j[keep]],
        "diag": (i[keep] == j[keep]).astype(float),
        "y": y[keep],
    })
    diag = pd.DataFrame({f"diag_{k}": ((i[keep] == k) & (j[keep] == k)).astype(float) for k in range(J)})
    return pd.concat([df, diag], axis=1)


def _formulas(J: int) -> tuple[str, str]:
    fixed = "y ~ C(adapter) + C(eval)"
    return fixed + " + diag", fixed + "".join(f" + diag_{k}" for k in range(J))


def _fit_mixed(formula: str, df: pd.DataFrame, vc_formula: dict[str, str] | None = None):
    """The model of the module doc (random intercept per seed, variance components within a
    seed; `vc_formula`, default seed:adapter), fitted by `fit_best`. Returns (result, method,
    warnings, errors)."""
    model = smf.mixedlm(formula, df, groups="seed", re_formula="1",
                        vc_formula=vc_formula or {"adapter": "0 + C(adapter)"})
    return fit_best(model)


@dataclass(frozen=True)
class ProfiledResult:
    """A `reml_nested` fit with the names and the few methods of a statsmodels MixedLM result
    that `fit_model` reads (params, bse, conf_int, scale, cov_re, vcomp, llf, summary)."""

    fit: NestedFit
    names: tuple[str, ...]
    formula: str
    n_obs: int
    n_seeds: int
    levels: tuple[str, ...] = ("seed", "seed:adapter")   # the random intercepts, outermost first

    @property
    def params(self) -> pd.Series:
        return pd.Series(self.fit.beta, index=list(self.names))

    @property
    def bse(self) -> pd.Series:
        return pd.Series(self.fit.se, index=list(self.names))

    @property
    def scale(self) -> float:
        return self.fit.sigma2

    @property
    def cov_re(self) -> np.ndarray:
        return np.array([[self.fit.seed_var]])

    @property
    def vcomp(self) -> np.ndarray:
        return np.array(self.fit.variances[1:])

    @property
    def llf(self) -> float:
        return self.fit.reml_llf

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald intervals with the normal quantile, as statsmodels' MixedLM."""
        q = float(stats.norm.ppf(1 - alpha / 2))
        lo, hi = self.fit.beta - q * self.fit.se, self.fit.beta + q * self.fit.se
        return pd.DataFrame({0: lo, 1: hi}, index=list(self.names))

    def summary(self) -> str:
        z = self.fit.beta / self.fit.se
        p = 2 * stats.norm.sf(np.abs(z))
        ci = self.conf_int()
        w = max(len(n) for n in self.names)
        lines = [f"Mixed linear model, profiled REML (validation.stats.reml): {self.formula}",
                 "  " + " + ".join(f"(1 | {g})" for g in self.levels) + f";  {self.n_obs} observations, "
                 f"{self.n_seeds} seeds, REML log-likelihood {self.llf:.4f}",
                 f"{'':{w}}  {'Coef.':>10} {'Std.Err.':>10} {'z':>8} {'P>|z|':>7} {'[0.025':>10} {'0.975]':>10}"]
        for k, n in enumerate(self.names):
            lines.append(f"{n:{w}}  {self.fit.beta[k]:10.4f} {self.fit.se[k]:10.4f} {z[k]:8.3f} "
                         f"{p[k]:7.3f} {ci.iloc[k, 0]:10.4f} {ci.iloc[k, 1]:10.4f}")
        lines.append("variance: " + ", ".join(f"{g} {v:.6g}" for g, v in zip(self.levels, self.fit.variances,
                                                                          strict=True))
                     + f", residual {self.fit.sigma2:.6g}")
        return "\n".join(lines)


def _fit_profiled(formula: str, df: pd.DataFrame, nesting: tuple[str, ...] = ("seed", "adapter")) -> ProfiledResult:
    """The model of the module doc by `reml_levels`; the design from the same formula (patsy) as
    the MixedLM path, so the coefficient names are the same. `nesting`: the columns whose nested
    combinations carry random intercepts, outermost first (("seed", "adapter", "steps") for the
    step model). Raises on a numerical failure."""
    y, X = patsy.dmatrices(formula, df, return_type="dataframe")
    codes = [pd.Categorical(df[c]).codes for c in nesting]
    fit = reml_levels(X.to_numpy(dtype=float), y.to_numpy(dtype=float).ravel(), codes)
    if not (np.all(np.isfinite(fit.beta)) and np.all(np.isfinite(fit.se))):
        raise FloatingPointError("non-finite coefficient or standard error")
    levels = tuple(":".join(nesting[:k + 1]) for k in range(len(nesting)))
    return ProfiledResult(fit, tuple(X.columns), formula, len(df), int(df["seed"].nunique()), levels)


def _fit_engine(formula: str, df: pd.DataFrame, engine: str):
    """(result, method, warnings, errors): profiled REML, falling back to MixedLM (`fit_best`)
    when it raises; `engine="mixedlm"` skips it."""
    if engine == PROFILED:
        try:
            return _fit_profiled(formula, df), PROFILED, (), []
        except (np.linalg.LinAlgError, FloatingPointError, ValueError, patsy.PatsyError) as e:
            res, method, msgs, errors = _fit_mixed(formula, df)
            return res, method, msgs, [f"{PROFILED}: {type(e).__name__}: {e}"] + errors
    return _fit_mixed(formula, df)


def fit_best(model):
    """Fit a statsmodels MixedLM with several optimizers; keep the converged fit of highest REML
    likelihood (also `validation.judgment.population`'s random-intercept models).

    L-BFGS alone can stop short of a boundary optimum (a variance component at 0) that lme4
    reaches; Powell, derivative-free, does reach it. Returns (result, method, warnings, errors).
    OpenBLAS runs on one thread meanwhile (`validation.stats.reml.single_thread_blas`): its threads cost
    far more than they gain on these small matrices (benchmarks/bench_model.py).
    """
    errors: list[str] = []
    best = None
    for k, method in enumerate(METHODS):
        if best is not None and k >= 2:
            break   # the first two optimizers are always tried; the rest only as fallbacks
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            try:
                with single_thread_blas():   # minutes -> seconds at 50 users (validation.stats.reml)
                    res = model.fit(reml=True, method=method)
            except Exception as e:  # statsmodels raises LinAlgError, ValueError, ...
                errors.append(f"{method}: {type(e).__name__}: {e}")
                continue
        msgs = tuple(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
        if res.converged and np.all(np.isfinite(res.bse_fe)):
            if best is None or res.llf > best[0].llf + 1e-9:
                best = (res, method, msgs)
        else:
            errors.append(f"{method}: not converged" + (f" ({msgs[0]})" if msgs else ""))
    if best is None:
        return None, None, (), errors
    return best[0], best[1], best[2], errors


def _effects(res, names: list[str], level: float) -> list[tuple[float, Interval, float]]:
    ci = res.conf_int(alpha=1 - level)
    out = []
    for n in names:
        out.append((float(res.params[n]), Interval(float(ci.loc[n, 0]), float(ci.loc[n, 1])),
                    float(res.bse[n])))
    return out


def fit_model(arrays: StudyArrays, level: float = 0.95, engine: str = PROFILED) -> ModelFit:
    """Fit the overall and per-user models; never raises for a numerical failure (reports it).
    `engine`: "profiled-reml" (default; MixedLM when it fails) or "mixedlm" (statsmodels only)."""
    if engine not in ENGINES:
        raise ValueError(f"fit_model engine {engine!r}: use one of {ENGINES}")
    df = long_table(arrays)
    J = len(arrays.users)
    overall, per_user = _formulas(J)
    diag_names = [f"diag_{k}" for k in range(J)]
    notes: list[str] = []
    unfit = _unfittable(df)
    if unfit is not None:
        return not_fitted(unfit)
    # adapter + eval + one diag per user: 1 + 2(J-1) + J mean parameters for J*J cells, so the
    # per-user effects are identifiable only from 3 users on
    per_user_ok = J >= 3
    if not per_user_ok:
        notes.append(f"per-user diag effects not identifiable with {J} users (need 3 or more): not fitted")
    n_seeds = df["seed"].nunique()
    if n_seeds > 1:
        res, method, msgs, errors = _fit_engine(overall, df, engine)
        if res is not None:
            res_u, method_u, msgs_u, errors_u = (_fit_engine(per_user, df, engine) if per_user_ok
                                                 else (None, None, (), []))
            if errors_u and res_u is not None:
                notes.append(f"per-user model: optimizer {method_u} (after {'; '.join(errors_u)})")
            scale = float(res.scale)
            comps = [("seed", float(np.asarray(res.cov_re)[0, 0]))]
            comps += [("seed:adapter", float(v)) for v in np.atleast_1d(res.vcomp)]
            singular = tuple(n for n, v in comps if v / scale < SINGULAR_RATIO)
            if singular:
                notes.append(f"boundary (singular) fit: variance of {', '.join(singular)} "
                             f"/ residual scale < {SINGULAR_RATIO:g}")
            if not singular:
                msgs = tuple(m + " (statsmodels' scale-dependent check; variance / scale >= "
                             f"{SINGULAR_RATIO:g} for every component)" if "boundary" in m else m
                             for m in msgs)
            fallback = (None if not errors else
                        f"optimizer {method} (after {'; '.join(errors)})")
            user_effects = ()
            if res_u is not None:
                user_effects = tuple(UserEffect(u, e, ci, se) for u, (e, ci, se)
                                     in zip(arrays.users, _effects(res_u, diag_names, level), strict=True))
            elif per_user_ok:
                notes.append("per-user mixed model did not converge: " + "; ".join(errors_u))
            (eff, ci, se), = _effects(res, ["diag"], level)
            return ModelFit(ModelKind.MIXEDLM, eff, ci, se, user_effects, True, singular,
                            tuple(comps) + (("residual", scale),), fallback,
                            str(res.summary()), tuple(dict.fromkeys(msgs + tuple(notes))),
                            optimizer=method)
        notes.append("mixed model failed with every optimizer (" + "; ".join(errors)
                     + "): fixed part fitted by OLS, seed variation ignored")
        fallback = "ols: mixedlm failed"
    else:
        notes.append("one seed: random effects cannot be estimated; fixed part fitted by OLS")
        fallback = "ols: one seed"
    return _fit_ols(df, overall, per_user if per_user_ok else None, diag_names, arrays.users,
                    level, fallback, notes)


def _unfittable(df: pd.DataFrame) -> str | None:
    """Why the model cannot be fitted to the finite user cells (`long_table`), or None: it needs two
    adapters, two evaluation users and both diagonal and off-diagonal cells (with every user adapter
    diverged, none is left)."""
    if df["adapter"].nunique() < 2 or df["eval"].nunique() < 2 or df["diag"].nunique() < 2:
        return (f"{len(df)} finite user-adapter cell(s) ({df['adapter'].nunique()} adapter(s), "
                f"{df['eval'].nunique()} evaluation user(s)): too few for the model (diverged or missing cells)")
    return None


def not_fitted(why: str) -> ModelFit:
    """The model's place when it cannot be fitted: no effect, no interval, the reason as its warning."""
    return ModelFit(ModelKind.OLS, math.nan, Interval(math.nan, math.nan), math.nan, (), False, (), (),
                    f"not fitted: {why}", "", (f"not fitted: {why}",), optimizer="")


def _fit_ols(df, overall, per_user, diag_names, users, level, fallback, notes) -> ModelFit:
    res = smf.ols(overall, df).fit()
    res_u = smf.ols(per_user, df).fit() if per_user is not None else None
    if res.df_resid < 1:
        notes.append("OLS has no residual degrees of freedom: no standard errors")
    with np.errstate(all="ignore"), _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        (eff, ci, se), = _effects(res, ["diag"], level)
        user_effects = () if res_u is None else tuple(
            UserEffect(u, e, c, s) for u, (e, c, s) in zip(users, _effects(res_u, diag_names, level), strict=True))
        summary = str(res.summary())
    return ModelFit(ModelKind.OLS, eff, ci, se, user_effects, True, (),
                    (("residual", float(res.scale)),), fallback, summary, tuple(notes),
                    optimizer="ols")


# --------------------------------------------------------------------------- training-step interaction
# docs/methods.md, section 12. Response y = log ppl per (seed, adapter i, eval j, steps k), user
# adapters only, x_k = log2(steps_k) - mean_k log2(steps_k):
#     y ~ C(adapter) * C(steps) + C(eval) * C(steps) + diag + diag_x
# (every count keeps its own adapter and eval effects; diag_x = diag * x_k is the interaction:
# the change of the diagonal effect per doubling of the steps), random intercepts per seed,
# seed:adapter (the training run) and seed:adapter:steps (its snapshot at one count), REML.
# lme4: lmer(y ~ adapter * steps + eval * steps + diag + diag_x + (1 | seed) + (1 | seed:adapter)
#            + (1 | seed:adapter:steps), REML = TRUE), steps a factor. The per-user variant
# replaces diag and diag_x by diag_<k> and diag_x_<k> per evaluation user.

STEPS_VC = {"adapter": "0 + C(adapter)", "snapshot": "0 + C(snapshot)"}


@dataclass(frozen=True)
class StepsModelFit:
    """The `diag x log2(steps)` test: interaction = change of the diag effect (log-ratio of ppl,
    negative = the own adapter is better) per doubling of the steps; negative = the diagonal
    advantage grows with training."""

    kind: ModelKind
    diagonal_effect: float                 # diag at the sweep's geometric centre
    interaction: float                     # coefficient of diag x log2(steps)
    interaction_ci: Interval               # Wald, at `level`
    interaction_se: float
    p_value: float                         # two-sided Wald p of the interaction
    user_interactions: tuple[UserEffect, ...]   # per user: diag_<k> x log2(steps)
    variance_components: tuple[tuple[str, float], ...]
    singular_components: tuple[str, ...]
    optimizer: str
    warnings: tuple[str, ...]

    def to_json(self) -> dict:
        from validation.stats.types import _num
        return {"kind": self.kind.value, "formula": STEPS_FORMULA_TEXT,
                "diagonal_effect": _num(self.diagonal_effect), "interaction": _num(self.interaction),
                "interaction_ci": [_num(self.interaction_ci.low), _num(self.interaction_ci.high)],
                "interaction_se": _num(self.interaction_se), "p_value": _num(self.p_value),
                "user_interactions": [{"user": e.user, "interaction": _num(e.effect),
                                       "ci": [_num(e.ci.low), _num(e.ci.high)], "se": _num(e.se)}
                                      for e in self.user_interactions],
                "variance_components": {k: _num(v) for k, v in self.variance_components},
                "singular_components": list(self.singular_components), "optimizer": self.optimizer,
                "warnings": list(self.warnings)}


STEPS_FORMULA_TEXT = ("y ~ C(adapter) * C(steps) + C(eval) * C(steps) + diag + diag:log2(steps) "
                      "+ (1 | seed) + (1 | seed:adapter) + (1 | seed:adapter:steps), REML")


def steps_long_table(per_count: list[tuple[int, StudyArrays]]) -> pd.DataFrame:
    """[(steps, arrays)] -> one row per finite user cell: `long_table` columns plus steps, x
    (centred log2 steps), snapshot (adapter@steps), diag_x and diag_x_<k>."""
    x = np.log2(np.array([k for k, _ in per_count], dtype=float))
    x = x - x.mean()
    parts = []
    for (k, arrays), xk in zip(per_count, x, strict=True):
        df = long_table(arrays)
        df["steps"] = str(k)
        df["x"] = float(xk)
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    J = len(per_count[0][1].users)
    extra = {"snapshot": df["adapter"] + "@" + df["steps"], "diag_x": df["diag"] * df["x"]}
    extra.update({f"diag_x_{j}": df[f"diag_{j}"] * df["x"] for j in range(J)})
    return pd.concat([df, pd.DataFrame(extra)], axis=1)   # one concat: no fragmented frame


STEPS_NESTING = ("seed", "adapter", "steps")   # (1 | seed) + (1 | seed:adapter) + (1 | seed:adapter:steps)


def _fit_steps_engine(formula: str, df: pd.DataFrame, engine: str):
    """(result, method, warnings, errors) of the step model: profiled REML over the three nested
    levels, statsmodels' MixedLM (variance components STEPS_VC within seeds) when that raises or
    with `engine="mixedlm"`."""
    if engine == PROFILED:
        try:
            return _fit_profiled(formula, df, STEPS_NESTING), PROFILED, (), []
        except (np.linalg.LinAlgError, FloatingPointError, ValueError, patsy.PatsyError) as e:
            res, method, msgs, errors = _fit_mixed(formula, df, STEPS_VC)
            return res, method, msgs, [f"{PROFILED}: {type(e).__name__}: {e}"] + errors
    return _fit_mixed(formula, df, STEPS_VC)


def fit_steps_model(per_count: list[tuple[int, StudyArrays]], level: float = 0.95,
                    engine: str = PROFILED) -> StepsModelFit | None:
    """Fit the interaction model (overall and per user, comment above); None with one count.
    Exact profiled REML (`validation.stats.reml.reml_levels`, seconds at 24 users where MixedLM took
    41 s); `engine="mixedlm"` fits statsmodels' MixedLM, also the fallback. Falls back to OLS (seed
    variation ignored, said in `warnings`) with one seed or when no optimizer converges; never
    raises for a numerical failure."""
    if engine not in ENGINES:
        raise ValueError(f"fit_steps_model engine {engine!r}: use one of {ENGINES}")
    from scipy import stats
    if len(per_count) < 2:
        return None
    users = per_count[0][1].users
    J = len(users)
    df = steps_long_table(per_count)
    fixed = "y ~ C(adapter) * C(steps) + C(eval) * C(steps)"
    overall = fixed + " + diag + diag_x"
    per_user = fixed + "".join(f" + diag_{j} + diag_x_{j}" for j in range(J))
    notes: list[str] = []
    per_user_ok = J >= 3
    if not per_user_ok:
        notes.append(f"per-user interactions not identifiable with {J} users (need 3 or more): not fitted")
    res = res_u = None
    if df["seed"].nunique() > 1:
        res, method, msgs, errors = _fit_steps_engine(overall, df, engine)
        notes += list(msgs)
        if res is not None and errors:   # a fallback is said, never silent
            notes.append(f"interaction model: optimizer {method} (after {'; '.join(errors)})")
        if res is not None and per_user_ok:
            res_u, method_u, _, errors_u = _fit_steps_engine(per_user, df, engine)
            if res_u is None:
                notes.append("per-user interaction model did not converge: " + "; ".join(errors_u))
            elif errors_u:
                notes.append(f"per-user interaction model: optimizer {method_u} (after {'; '.join(errors_u)})")
        if res is None:
            notes.append("mixed model failed with every optimizer (" + "; ".join(errors)
                         + "): fitted by OLS, seed variation ignored")
    else:
        notes.append("one seed: random effects cannot be estimated; fitted by OLS")
    if res is None:
        kind, method = ModelKind.OLS, "ols"
        with np.errstate(all="ignore"), _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            res = smf.ols(overall, df).fit()
            res_u = smf.ols(per_user, df).fit() if per_user_ok else None
        comps: list[tuple[str, float]] = []
        scale = float(res.scale)
    else:
        kind = ModelKind.MIXEDLM
        scale = float(res.scale)
        comps = [("seed", float(np.asarray(res.cov_re)[0, 0]))]
        names = {"adapter": "seed:adapter", "snapshot": "seed:adapter:steps"}
        vc_names = ([names[n] for n in res.model.exog_vc.names] if not isinstance(res, ProfiledResult)
                    else list(res.levels[1:]))
        comps += [(n, float(v)) for n, v in zip(vc_names, np.atleast_1d(res.vcomp), strict=True)]
    singular = tuple(n for n, v in comps if v / scale < SINGULAR_RATIO)
    (diag, _, _), (inter, ci, se) = _effects(res, ["diag", "diag_x"], level)
    p = float(2 * stats.norm.sf(abs(inter / se))) if kind is ModelKind.MIXEDLM and se > 0 else \
        float(res.pvalues["diag_x"])
    user = ()
    if res_u is not None:
        user = tuple(UserEffect(u, e, c, s) for u, (e, c, s)
                     in zip(users, _effects(res_u, [f"diag_x_{j}" for j in range(J)], level), strict=True))
    return StepsModelFit(kind, diag, inter, ci, se, p, user, tuple(comps) + (("residual", scale),),
                         singular, method, tuple(dict.fromkeys(notes)))
