"""The mixed-effects model of docs/methods.md (section 7), fitted with statsmodels, diagnostics surfaced.

Response y = log ppl per (seed, adapter i, eval j), user adapters only:
    y ~ C(adapter) + C(eval) + diag,  diag = 1[i == j]
with a random intercept per seed and a variance component per seed:adapter (REML). The lme4
equivalent is `lmer(y ~ adapter + eval + diag + (1 | seed) + (1 | seed:adapter), REML = TRUE)`.
The per-user variant replaces `diag` by one indicator per evaluation user (`diag:C(eval)`).
With one seed the random effects cannot be estimated: the fixed part is fitted by OLS.
"""

from __future__ import annotations

import warnings as _warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from validation.arrays import StudyArrays
from validation.results import Interval, ModelFit, ModelKind, UserEffect

SINGULAR_RATIO = 1e-8       # variance / residual scale below this = boundary (singular) fit
METHODS = ("lbfgs", "powell", "bfgs", "cg", "nm")


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
    for k in range(J):
        df[f"diag_{k}"] = ((i[keep] == k) & (j[keep] == k)).astype(float)
    return df


def _formulas(J: int) -> tuple[str, str]:
    fixed = "y ~ C(adapter) + C(eval)"
    return fixed + " + diag", fixed + "".join(f" + diag_{k}" for k in range(J))


def _fit_mixed(formula: str, df: pd.DataFrame):
    """Fit with several optimizers; keep the converged fit of highest REML likelihood.

    L-BFGS alone can stop short of a boundary optimum (a variance component at 0) that lme4
    reaches; Powell, derivative-free, does reach it. Returns (result, method, warnings, errors).
    """
    model = smf.mixedlm(formula, df, groups="seed", re_formula="1",
                        vc_formula={"adapter": "0 + C(adapter)"})
    errors: list[str] = []
    best = None
    for k, method in enumerate(METHODS):
        if best is not None and k >= 2:
            break   # the first two optimizers are always tried; the rest only as fallbacks
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            try:
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


def fit_model(arrays: StudyArrays, level: float = 0.95) -> ModelFit:
    """Fit the overall and per-user models; never raises for a numerical failure (reports it)."""
    df = long_table(arrays)
    J = len(arrays.users)
    overall, per_user = _formulas(J)
    diag_names = [f"diag_{k}" for k in range(J)]
    notes: list[str] = []
    # adapter + eval + one diag per user: 1 + 2(J-1) + J mean parameters for J*J cells, so the
    # per-user effects are identifiable only from 3 users on
    per_user_ok = J >= 3
    if not per_user_ok:
        notes.append(f"per-user diag effects not identifiable with {J} users (need 3 or more): not fitted")
    n_seeds = df["seed"].nunique()
    if n_seeds > 1:
        res, method, msgs, errors = _fit_mixed(overall, df)
        if res is not None:
            res_u, method_u, msgs_u, errors_u = (_fit_mixed(per_user, df) if per_user_ok
                                                 else (None, None, (), []))
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
