"""Typed, frozen result objects passed from `validation` to `reports` and the calibration code.

Everything `validation.judge` returns lives here. Intervals unpack as `low, high`; raw bootstrap
distributions are kept as numpy arrays (one value per resample) so that a caller can recompute an
interval with another method or plot the distribution without re-running the bootstrap.
`Verdict.to_json()` gives the judged keys of the `verdict.json` document of docs/formats.md
(`validation.study_verdict.StudyVerdict.to_json` builds the whole document).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from validation.contract.prereg import Prereg
from validation.contract.status import PreregStatus, Status
from validation.judgment.population import PopulationResult
from validation.judgment.routing_results import RoutingResult
from validation.judgment.user_results import CriterionResult, Decomposition, GainStep, UserResult
from validation.stats.fits import ModelFit, Regime
from validation.stats.types import BootstrapMode, Interval, _at, _interval, _num


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
class Verdict:
    """What `validation.judge` returns; `validation.study_verdict.StudyVerdict` adds the exploratory
    analyses and the calibration, and builds `verdict.json` from both."""

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
    # base -> loo:j -> pooled -> own j per user; empty without the leave-one-out controls
    decomposition: tuple[Decomposition, ...] = ()
    # population statistics; None when not computed
    population: PopulationResult | None = None
    # the step counts: which one gated, the exploratory others (`validation.judgment.steps.judge_counts`);
    # None when not computed
    steps: StepsResult | None = None
    # ROUTING / AVERAGING / NOISE and the storage bill (docs/routing.md); None when not computed
    routing: RoutingResult | None = None

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
            "population": None if self.population is None else self.population.to_json(),
            "steps": None if self.steps is None else self.steps.to_json(),
            "routing": None if self.routing is None else self.routing.to_json(),
        }


EXPLORATORY_NOTE = ("exploratory: judged with the same statistics, but the criteria and the gate are "
                    "pre-registered at the primary step count only")


@dataclass(frozen=True, eq=False)
class ExploratoryCount:
    """The per-user statistics at one non-primary step count."""

    steps: int
    verdict: Verdict  # judge()'s full result at this count; its criteria and gate decide nothing

    def to_json(self) -> dict[str, Any]:
        return {"label": "exploratory", **self.verdict.statistics_json()}


@dataclass(frozen=True, eq=False)
class StepsResult:
    """verdict.json `steps`: which count gated, the counts, and the exploratory ones."""

    primary: int | None                       # the count judged; None: the input has no `steps` column
    counts: tuple[int, ...]                   # every count of the study (() without a `steps` column)
    preregistered_primary: int                # `[steps] primary`
    exploratory: tuple[ExploratoryCount, ...]  # the other counts, ascending

    def line(self) -> str:
        """The terminal's line about the step counts."""
        if self.primary is None:
            return (f"step counts: no `steps` column (a one-count study); pre-registered primary "
                    f"{self.preregistered_primary}")
        others = [str(e.steps) for e in self.exploratory]
        if not others:
            return f"step count: {self.primary} (the criteria and the gate are judged there)"
        return (f"step counts: primary {self.primary} (the criteria and the gate); {', '.join(others)} exploratory "
                "(verdict.json `steps.exploratory`, same statistics, no gate)")

    def to_json(self) -> dict[str, Any]:
        return {"primary": self.primary, "counts": list(self.counts),
                "preregistered_primary": self.preregistered_primary, "note": EXPLORATORY_NOTE,
                "exploratory": {str(e.steps): e.to_json() for e in self.exploratory}}


__all__ = [
    "BootstrapInfo", "BootstrapMode", "CriterionResult", "Decomposition", "ExploratoryCount", "GainStep", "Gate",
    "Interval",
    "ModelFit", "PreregStatus", "Regime", "Status", "StepsResult", "UserResult", "Verdict", "_at", "_interval",
    "_num",
]
