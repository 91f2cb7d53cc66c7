"""Typed, frozen result objects passed from `validation` to `reports` and the calibration code.

Everything `validation.judge` returns lives here. Intervals unpack as `low, high`; raw bootstrap
distributions are kept as numpy arrays (one value per resample) so that a caller can recompute an
interval with another method or plot the distribution without re-running the bootstrap.
`Verdict.to_json()` gives the `verdict.json` document of docs/formats.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl

from validation.contract.prereg import Prereg
from validation.contract.status import PreregStatus, Status
from validation.judgment.user_results import Decomposition, GainStep, UserResult
from validation.stats.fits import ModelFit, Regime
from validation.stats.types import BootstrapMode, Interval, _at, _interval, _num


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


class VerdictPart(Protocol):
    """A part of the verdict made by a stage that this module cannot import without an import
    running back up the stages (the population statistics, the step counts, the exploratory
    analyses): whatever its class, it serializes itself into its key of verdict.json."""

    def to_json(self) -> dict[str, Any]: ...


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
    # Domain-similarity structure (`validation.exploratory.similarity.Similarity`), added by the CLI after
    # judging (`similarity_for_verdict`); None when not computed.
    similarity: VerdictPart | None = None
    # base -> loo:j -> pooled -> own j per user; empty without the leave-one-out controls
    decomposition: tuple[Decomposition, ...] = ()
    # The training-step interaction (`validation.exploratory.steps.StepsAnalysis`), added by the CLI after
    # judging (`analyze_steps`); None with one step count.
    steps_analysis: VerdictPart | None = None
    # population statistics (`validation.judgment.population.PopulationResult`); None when not computed
    population: VerdictPart | None = None
    # the step counts (`validation.judgment.steps.StepsResult`): which one gated, the exploratory
    # others; added by the CLI after judging; None when not computed
    steps: VerdictPart | None = None
    # ROUTING / AVERAGING / NOISE and the storage bill (`validation.judgment.routing.RoutingResult`,
    # docs/routing.md); None when not computed
    routing: VerdictPart | None = None

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

    def statistics_json(self) -> dict[str, Any]:
        """The per-user statistics of verdict.json, the same at every step count: `users`,
        `decomposition`, `model`, `bootstrap`, `warnings` (`ExploratoryCount` writes these too)."""
        return {"users": [u.to_json() for u in self.users],
                "decomposition": [d.to_json() for d in self.decomposition] or None,
                "model": None if self.model is None else self.model.to_json(),
                "bootstrap": self.bootstrap.to_json(), "warnings": list(self.warnings)}

    def to_json(self) -> dict[str, Any]:
        stats = self.statistics_json()
        return {
            "schema": "normadapt-verdict/1",
            "preregistration": self.prereg.to_json(),
            "gate": self.gate.to_json(),
            "criteria": {c.name: c.to_json() for c in self.criteria},
            "users": stats["users"],
            "comparator": self.comparator,
            "model": stats["model"],
            "bootstrap": stats["bootstrap"],
            "seeds": list(self.seeds),
            "settings": self.settings.to_json(),
            "warnings": stats["warnings"],
            "decomposition": stats["decomposition"],
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
    "ModelFit", "PreregStatus", "Regime", "Status", "UserResult", "Verdict", "_at", "_interval", "_num",
]
