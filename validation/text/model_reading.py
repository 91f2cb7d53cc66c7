"""The mixed model's result and diagnostics, translated into what they mean for the study.

The raw material (optimizer names, statsmodels' warnings, variance components) stays in
`verdict.json` (`model`, `warnings`) and the report; the terminal prints these readings instead.
Pure functions of a `ModelFit`.
"""

from __future__ import annotations

import math

from validation.stats.fits import ModelFit
from validation.stats.types import ModelKind

__all__ = ["diagnostic_readings", "effect_line", "is_raw_model_warning"]

# statsmodels' and our own raw diagnostics that `diagnostic_readings` translates
_BOUNDARY = "MLE may be on the boundary"
_HESSIAN = "Hessian matrix"
_SINGULAR = "boundary (singular) fit"
_TRANSLATED = (_BOUNDARY, _HESSIAN, _SINGULAR, "one seed: random effects",
               "mixed model failed with every optimizer")


def _pct(x: float) -> str:
    return f"{abs(x):.1%}"


def effect_line(model: ModelFit, level: float) -> str:
    """The diagonal effect as a change in perplexity, in percent like the margins.

    `diag` is a log-ratio: exp(effect) - 1 is the own adapter's perplexity change on its own
    user's text beyond what the adapter's overall quality and the text's difficulty predict.
    """
    change = math.expm1(model.diagonal_effect)
    lo, hi = sorted((math.expm1(model.diagonal_ci.low), math.expm1(model.diagonal_ci.high)))
    how = "mixed model" if model.kind is ModelKind.MIXEDLM else "plain regression (OLS)"
    if not all(math.isfinite(x) for x in (change, lo, hi)):
        return f"personalization effect ({how}): not estimable"
    word = "lower" if change < 0 else "higher"
    if hi < 0 or lo > 0:   # the interval on one side: in the same words as the estimate
        ci = f"{_pct(min(lo, hi, key=abs))} to {_pct(max(lo, hi, key=abs))} {word}"
    else:
        ci = f"{lo:+.1%} to {hi:+.1%}, i.e. no clear effect"
    return (f"personalization effect ({how}): on its own user's text an adapter's perplexity is "
            f"{_pct(change)} {word} than its overall quality and the text's difficulty predict "
            f"({level:.0%} CI {ci})")


def diagnostic_readings(model: ModelFit) -> tuple[str, ...]:
    """What the model's diagnostics mean for the study, one plain sentence each."""
    out: list[str] = []
    fallback = model.fallback or ""
    if fallback == "ols: one seed":
        out.append("one seed: seed-to-seed variation cannot be estimated, so the effect comes "
                   "from a plain regression whose interval leaves that variation out")
    elif fallback.startswith("ols"):
        out.append("the mixed model could not be fitted, so the effect comes from a plain "
                   "regression that ignores seed-to-seed variation: its interval is too narrow")
    if not model.converged:
        out.append("the model did not converge: disregard its effect (the criteria do not use it)")
    singular = set(model.singular_components)
    if {"seed", "seed:adapter"} <= singular:
        out.append("the seed-level variance is estimated at zero: seeds barely change the "
                   "adapters, the held-out documents carry the uncertainty")
    elif "seed" in singular:
        out.append("the variance shared by all adapters of a seed is estimated at zero: a seed "
                   "shifts every adapter alike by too little to measure")
    elif "seed:adapter" in singular:
        out.append("the adapter-by-seed variance is estimated at zero: retraining an adapter "
                   "with another seed barely changes it")
    if model.kind is ModelKind.MIXEDLM and fallback:
        out.append("the default optimizer stopped short of the best fit and another one reached "
                   "it; the estimate stands" + (" (usual for a variance at zero)" if singular else ""))
    hessian = any(_HESSIAN in w for w in model.warnings)
    if hessian and not singular:
        out.append("the fit's curvature check failed (not at a variance boundary): read the "
                   "model's interval with caution; the criteria do not use it")
    out += [w for w in model.warnings if not is_raw_model_warning(w)]
    return tuple(dict.fromkeys(out))


def is_raw_model_warning(message: str) -> bool:
    """True for a model diagnostic that `diagnostic_readings` translates (with or without the
    verdict's `model: ` prefix): kept in verdict.json and the report, not printed raw."""
    text = message.removeprefix("model: ")
    return any(t in text for t in _TRANSLATED)
