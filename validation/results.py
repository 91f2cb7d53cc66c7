"""Typed, frozen result objects passed from `validation` to `reports` and the calibration code.

Everything `validation.judge` returns lives here. Intervals unpack as `low, high`; raw bootstrap
distributions are kept as numpy arrays (one value per resample) so that a caller can recompute an
interval with another method or plot the distribution without re-running the bootstrap.
`Verdict.to_json()` gives the `verdict.json` document of docs/formats.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from common.contract import CONTROLS, LOO_PREFIX
from validation.manifest import Manifest
from validation.prereg import Prereg
from validation.result_types import BootstrapMode, Interval, ModelKind, _at, _interval, _num
from validation.statuses import PreregStatus, Status
from validation.user_results import Decomposition, GainStep, UserResult


@dataclass(frozen=True)
class CriterionResult:
    """One pre-registered criterion: interval-based status plus the point-estimate reading."""

    name: str              # "strict" | "lenient" | "catastrophic"
    status: Status         # from the intervals; this is what the gate uses
    point: Status          # the same rule applied to point estimates (what earlier reports did)
    threshold: float       # the margin bar (strict, lenient) or delta (catastrophic)
    explanation: str       # one sentence naming the users that decided it

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "point": self.point.value,
            "threshold": self.threshold,
            "explanation": self.explanation,
        }


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
    summary: str                       # text summary (validation.reml's table; statsmodels' on MixedLM)
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
    """Where the margins' sampling variance comes from (`validation.intervals.study_regime`).

    `seed_share`: mean over users of seed / (seed + document) variance of the margin estimate;
    `label`: "seed-dominated" (share >= 2/3), "document-dominated" (<= 1/3), else "mixed";
    "unknown" when no variance could be estimated.
    """

    seed_share: float
    label: str

    def to_json(self) -> dict[str, Any]:
        return {"seed_share": _num(self.seed_share), "label": self.label}


@dataclass(frozen=True)
class BootstrapInfo:
    mode: BootstrapMode
    n_resamples: int
    level: float             # confidence level of `UserResult.ci`
    rng_seed: int | None     # None when the caller passed a Generator of unknown provenance
    method: str              # interval method, e.g. "percentile"
    n_seeds: int
    n_docs: tuple[tuple[str, int], ...]  # (eval user, number of documents); empty without docs
    regime: Regime | None = None         # None when nothing was resampled

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "n_resamples": self.n_resamples,
            "level": self.level,
            "rng_seed": self.rng_seed,
            "interval_method": self.method,
            "n_seeds": self.n_seeds,
            "n_docs": dict(self.n_docs),
            "regime": None if self.regime is None else self.regime.to_json(),
        }


@dataclass(frozen=True)
class Gate:
    passed: bool
    reasons: tuple[str, ...]   # why it failed; empty when passed

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": list(self.reasons)}


@dataclass(frozen=True, eq=False)
class StudyData:
    """The validated input of `judge`; the report reads its tables from here.

    `cells`: one row per (seed, adapter, eval), columns `seed:i64, adapter:str, eval:str,
    nll_sum, n_tokens, n_bytes (may be null), ppl, bpb (may be null), status`.
    `docs`: the same per held-out document plus `doc_id`, or None.
    `train_log`: `seed, adapter, step, loss`, or None. `manifest`: the run's manifest.json.
    """

    cells: pl.DataFrame
    docs: pl.DataFrame | None = None
    train_log: pl.DataFrame | None = None
    manifest: Manifest | None = None
    source: Path | None = None

    @property
    def users(self) -> tuple[str, ...]:
        """Evaluation users, sorted; every one must also be an adapter row."""
        return tuple(sorted(self.cells["eval"].unique().to_list()))

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted(int(s) for s in self.cells["seed"].unique().to_list()))

    @property
    def controls(self) -> tuple[str, ...]:
        present = set(self.cells["adapter"].unique().to_list())
        loo = tuple(sorted(a for a in present if a.startswith(LOO_PREFIX)))
        return tuple(c for c in CONTROLS if c in present) + loo


@dataclass(frozen=True, eq=False)
class Verdict:
    """What `validation.judge` returns and `verdict.json` serializes."""

    users: tuple[UserResult, ...]
    criteria: tuple[CriterionResult, ...]  # strict, lenient, catastrophic, in that order
    model: ModelFit | None                  # None when the fit was skipped or impossible
    bootstrap: BootstrapInfo
    gate: Gate
    prereg: PreregStatus
    warnings: tuple[str, ...]
    comparator: str = "best_other"
    seeds: tuple[int, ...] = ()
    settings: Prereg = field(default_factory=Prereg)  # the pre-registered values used
    # The matrix the margins are computed from: one row per (adapter, eval), columns
    # `adapter, eval, ppl, log_ppl, n_seeds`; ppl = geometric mean over the seeds that have the cell.
    matrix: pl.DataFrame | None = None
    # Domain-similarity structure (`validation.similarity.Similarity`), added by the CLI after
    # judging (`similarity_for_verdict`); None when not computed.
    similarity: Any = None
    # base -> loo:j -> pooled -> own j per user; empty without the leave-one-out controls
    decomposition: tuple[Decomposition, ...] = ()
    # The training-step interaction (`validation.steps.StepsAnalysis`), added by the CLI after
    # judging (`analyze_steps`); None with one step count.
    steps_analysis: Any = None
    # population statistics (`validation.population.PopulationResult`); None when not computed
    population: Any = None
    # the step counts (`validation.steps_verdict.StepsResult`): which one gated, the exploratory
    # others; added by the CLI after judging; None when not computed
    steps: Any = None
    # ROUTING / AVERAGING / NOISE and the storage bill (`validation.routing.RoutingResult`,
    # docs/routing.md); None when not computed
    routing: Any = None

    def criterion(self, name: str) -> CriterionResult:
        for c in self.criteria:
            if c.name == name:
                return c
        raise KeyError(f"no criterion `{name}`; have {[c.name for c in self.criteria]}")

    def user(self, name: str) -> UserResult:
        for u in self.users:
            if u.user == name:
                return u
        raise KeyError(f"no user `{name}`; have {[u.user for u in self.users]}")

    @property
    def exit_code(self) -> int:
        return 0 if self.gate.passed else 1

    def users_table(self) -> pl.DataFrame:
        """The one tidy per-user summary (as arviz's `summary()`), read by the report, the terminal
        and anyone scripting on a Verdict: one row per evaluation user with the diagonal margin,
        its interval, what it was against, and the gains. Non-finite values are null."""
        schema = {"user": pl.String, "margin": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
                  "best_other": pl.String, "worst_other": pl.String, "worst_other_margin": pl.Float64,
                  "inverted": pl.Boolean, "diagonal_ppl": pl.Float64, "best_other_ppl": pl.Float64,
                  "personalization_gain": pl.Float64, "regularization_gain": pl.Float64,
                  "total_gain": pl.Float64}
        rows = [{"user": u.user, "margin": _num(u.margin), "ci_low": _num(u.ci.low), "ci_high": _num(u.ci.high),
                 "best_other": u.best_other, "worst_other": u.worst_other,
                 "worst_other_margin": _num(u.worst_other_margin), "inverted": u.inverted,
                 "diagonal_ppl": _num(u.diagonal_ppl), "best_other_ppl": _num(u.best_other_ppl),
                 "personalization_gain": _num(u.personalization_gain),
                 "regularization_gain": _num(u.regularization_gain), "total_gain": _num(u.total_gain)}
                for u in self.users]
        return pl.DataFrame(rows, schema=schema)

    def per_seed_table(self) -> pl.DataFrame:
        """One tidy row per (seed, user): seed, user, margin, best_other, worst_other_margin,
        personalization_gain, regularization_gain, total_gain (NaN where not computable)."""
        rows = []
        for u in self.users:
            for k, seed in enumerate(u.seeds):
                rows.append({"seed": int(seed), "user": u.user, "margin": _num(u.seed_margins[k]),
                             "best_other": u.seed_best_other[k],
                             "worst_other_margin": _at(u.seed_worst_other_margins, k),
                             "personalization_gain": _at(u.seed_personalization, k),
                             "regularization_gain": _at(u.seed_regularization, k),
                             "total_gain": _at(u.seed_total, k)})
        return pl.DataFrame(rows, schema={"seed": pl.Int64, "user": pl.String, "margin": pl.Float64,
                                          "best_other": pl.String, "worst_other_margin": pl.Float64,
                                          "personalization_gain": pl.Float64,
                                          "regularization_gain": pl.Float64, "total_gain": pl.Float64})

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "normadapt-verdict/1",
            "preregistration": self.prereg.to_json(),
            "gate": self.gate.to_json(),
            "criteria": {c.name: c.to_json() for c in self.criteria},
            "users": [u.to_json() for u in self.users],
            "comparator": self.comparator,
            "model": None if self.model is None else self.model.to_json(),
            "bootstrap": self.bootstrap.to_json(),
            "seeds": list(self.seeds),
            "settings": self.settings.to_json(),
            "warnings": list(self.warnings),
            "decomposition": [d.to_json() for d in self.decomposition] or None,
            "matrix": [] if self.matrix is None else [
                {"adapter": r["adapter"], "eval": r["eval"], "ppl": _num(r["ppl"]), "n_seeds": r["n_seeds"]}
                for r in self.matrix.iter_rows(named=True)],
            "similarity": None if self.similarity is None else self.similarity.to_json(),
            "steps_analysis": None if self.steps_analysis is None else self.steps_analysis.to_json(),
            "population": None if self.population is None else self.population.to_json(),
            "steps": None if self.steps is None else self.steps.to_json(),
            "routing": None if self.routing is None else self.routing.to_json(),
        }


__all__ = [
    "BootstrapInfo", "BootstrapMode", "CriterionResult", "Decomposition", "GainStep", "Gate", "Interval",
    "ModelFit", "ModelKind", "PreregStatus", "Regime", "Status", "StudyData", "UserEffect", "UserResult",
    "Verdict", "_at", "_interval", "_num",
]
