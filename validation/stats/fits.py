"""What the statistics return beyond the primitive types of `validation.stats.types`: the mixed-model
fit (`ModelFit`, with one `UserEffect` per user) and where the margins' variance comes from
(`Regime`). Part of `verdict.json` (`Verdict.to_json`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from validation.stats.types import Interval, ModelKind, _interval, _num


@dataclass(frozen=True)
class UserEffect:
    """Per-user personalization effect from the `diag:C(eval)` model, as a log-ratio of ppl."""

    user: str
    effect: float          # negative = own adapter lowers log ppl
    ci: Interval
    se: float


@dataclass(frozen=True)
class ModelFit:
    """The mixed-effects (or OLS) fit of docs/methods.md (section 7) with its diagnostics."""

    kind: ModelKind
    diagonal_effect: float             # coefficient of `diag`, a log-ratio of perplexity
    diagonal_ci: Interval              # Wald interval at the pre-registered level
    diagonal_se: float
    user_effects: tuple[UserEffect, ...]
    converged: bool
    singular_components: tuple[str, ...]   # variance / residual scale < 1e-8
    variance_components: tuple[tuple[str, float], ...]  # (name, variance), plus ("residual", s2)
    fallback: str | None               # e.g. "ols: one seed", "lbfgs after nm failed"
    summary: str                       # text summary (validation.stats.reml's table; statsmodels' on MixedLM)
    warnings: tuple[str, ...]
    optimizer: str = ""                # the optimizer whose fit was kept, or "ols"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "diagonal_effect": _num(self.diagonal_effect),
            "diagonal_ci": _interval(self.diagonal_ci),
            "diagonal_se": _num(self.diagonal_se),
            "diagonal_ratio": _num(math.exp(self.diagonal_effect)),
            "user_effects": [
                {"user": e.user, "effect": _num(e.effect), "ci": _interval(e.ci), "se": _num(e.se)}
                for e in self.user_effects
            ],
            "converged": self.converged,
            "singular_components": list(self.singular_components),
            "variance_components": {k: _num(v) for k, v in self.variance_components},
            "fallback": self.fallback,
            "optimizer": self.optimizer,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Regime:
    """Where the margins' sampling variance comes from (`validation.stats.intervals.study_regime`).

    `seed_share`: mean over users of seed / (seed + document) variance of the margin estimate;
    `label`: "seed-dominated" (share >= 2/3), "document-dominated" (<= 1/3), else "mixed";
    "unknown" when no variance could be estimated.
    """

    seed_share: float
    label: str

    def to_json(self) -> dict[str, Any]:
        return {"seed_share": _num(self.seed_share), "label": self.label}
