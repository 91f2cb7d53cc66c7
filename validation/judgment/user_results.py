"""Per-user results of a verdict: the diagonal margin with its interval and draws, the gains, and
the base -> loo -> pooled -> own decomposition, and one criterion's result (`CriterionResult`: here,
so that the population and routing results, which `Verdict` carries, need not import
`validation.judgment.results`). Re-exported by `validation.judgment.results`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from validation.contract.status import Status
from validation.stats.types import Interval, _at, _interval, _num


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


class OptionalCriterion:
    """A criterion that may not apply (the population and routing criteria): its `result`, or None
    with a `reason`. Mixed into their dataclasses, which hold those two fields."""

    result: CriterionResult | None
    reason: str

    @property
    def applicable(self) -> bool:
        return self.result is not None

    @property
    def status_text(self) -> str:
        return "NOT_APPLICABLE" if self.result is None else self.result.status.value

    def not_applicable_json(self) -> dict[str, Any]:
        """The JSON of a criterion that does not apply: status, no point or threshold, the reason."""
        return {"status": "NOT_APPLICABLE", "point": None, "threshold": None, "explanation": self.reason}


@dataclass(frozen=True, eq=False)
class UserResult:
    """Everything computed for one evaluation user j (one column of the matrix).

    Margins and gains are fractions (0.10 = 10% lower perplexity). Gains are NaN and their
    intervals None when the needed control row (`pooled`, `base`) is absent.
    `draws_*` are the bootstrap distributions, shape (n_resamples,); empty when mode is NONE.
    `seed_margins` has shape (n_seeds,), aligned with `seeds`.
    """

    user: str
    margin: float                      # 1 - ppl[j,j] / min_{i in U, i != j} ppl[i,j]
    ci: Interval                       # at the pre-registered confidence level
    best_other: str                    # the adapter achieving the min above
    worst_other: str
    worst_other_margin: float          # anti-conservative: against the max; for comparison only
    inverted: bool | None              # ci.high < 0; None (unknown) without an interval
    personalization_gain: float        # 1 - ppl[j,j] / ppl[pooled,j]
    regularization_gain: float         # 1 - ppl[pooled,j] / ppl[base,j]
    total_gain: float                  # 1 - ppl[j,j] / ppl[base,j]
    personalization_ci: Interval | None
    regularization_ci: Interval | None
    total_ci: Interval | None
    equivalence_ci: Interval           # (1 - 2 alpha_equiv) interval, 90% by default, for TOST
    seeds: tuple[int, ...]
    seed_margins: np.ndarray           # (n_seeds,) margin computed within each seed
    seed_best_other: tuple[str, ...]   # (n_seeds,) best other adapter within each seed
    diagonal_ppl: float                # geometric mean over seeds of ppl[j,j]
    best_other_ppl: float
    draws_margin: np.ndarray           # (n_resamples,)
    draws_worst_other_margin: np.ndarray
    draws_personalization: np.ndarray  # (n_resamples,) or (0,) without `pooled`
    draws_regularization: np.ndarray   # (n_resamples,) or (0,) without `pooled` and `base`
    draws_total: np.ndarray            # (n_resamples,) or (0,) without `base`
    # Per seed, aligned with `seeds` (NaN where a control is absent or a cell is missing):
    seed_worst_other_margins: np.ndarray = field(default_factory=lambda: np.empty(0))
    seed_personalization: np.ndarray = field(default_factory=lambda: np.empty(0))
    seed_regularization: np.ndarray = field(default_factory=lambda: np.empty(0))
    seed_total: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def inverted_point(self) -> bool | None:
        """The point reading beside `inverted`: own adapter worse than the best other on the point
        margin (margin < 0); None when the margin itself is not finite."""
        return bool(self.margin < 0) if np.isfinite(self.margin) else None

    @property
    def n_seeds_finite(self) -> int:
        """Seeds with a finite margin for this user: what its intervals are computed on (a diverged
        or missing cell removes a seed from this user's figures only)."""
        return int(np.sum(np.isfinite(self.seed_margins)))

    @property
    def ci_low(self) -> float:
        return self.ci.low

    @property
    def ci_high(self) -> float:
        return self.ci.high

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "margin": _num(self.margin),
            "ci_low": _num(self.ci.low),
            "ci_high": _num(self.ci.high),
            "best_other": self.best_other,
            "worst_other": self.worst_other,
            "worst_other_margin": _num(self.worst_other_margin),
            "worst_other_margin_note": "anti-conservative; for comparison with earlier reports",
            "inverted": self.inverted,
            "inverted_point": self.inverted_point,
            "n_seeds_finite": self.n_seeds_finite,
            "personalization_gain": _num(self.personalization_gain),
            "personalization_ci": _interval(self.personalization_ci),
            "regularization_gain": _num(self.regularization_gain),
            "regularization_ci": _interval(self.regularization_ci),
            "total_gain": _num(self.total_gain),
            "total_ci": _interval(self.total_ci),
            "equivalence_ci": _interval(self.equivalence_ci),
            "diagonal_ppl": _num(self.diagonal_ppl),
            "best_other_ppl": _num(self.best_other_ppl),
            "per_seed": [
                {"seed": int(s), "margin": _num(m), "best_other": b,
                 "worst_other_margin": _num(_at(self.seed_worst_other_margins, k)),
                 "personalization_gain": _num(_at(self.seed_personalization, k)),
                 "regularization_gain": _num(_at(self.seed_regularization, k)),
                 "total_gain": _num(_at(self.seed_total, k))}
                for k, (s, m, b) in enumerate(zip(self.seeds, self.seed_margins, self.seed_best_other, strict=True))
            ],
        }


@dataclass(frozen=True, eq=False)
class GainStep:
    """One step of the decomposition of user j's gain: 1 - ppl[to, j] / ppl[from, j].

    `from_row` and `to_row` name the matrix rows the figure uses (e.g. `loo:novelist`, `pooled`),
    so every figure says which control it is measured against.
    """

    key: str                   # "new_user", "seen_user", "pooled_to_own", "loo_to_own", "base_to_pooled", "total"
    from_row: str
    to_row: str
    gain: float
    ci: Interval | None        # hierarchical-bootstrap interval; None when there is no resampling
    draws: np.ndarray          # (n_resamples,) or (0,)
    seed_gains: np.ndarray     # (n_seeds,), aligned with the verdict's seeds

    def to_json(self) -> dict[str, Any]:
        return {"from": self.from_row, "to": self.to_row, "gain": _num(self.gain), "ci": _interval(self.ci),
                "per_seed": [_num(x) for x in self.seed_gains]}


@dataclass(frozen=True, eq=False)
class Decomposition:
    """User j's gain over the base, in the steps base -> loo:j -> pooled -> own j (docs/methods.md).

    `steps` holds the chain (`new_user`, `seen_user`, `pooled_to_own`) and the two summaries
    (`loo_to_own`: the own adapter against what a new user gets; `base_to_pooled`, `total`); a step
    whose control is absent is left out. `seen_share` is the fraction of pooled's gain over base, in
    log perplexity, that came from having seen j's text; None unless it is defined (pooled's gain
    over base is clearly above zero: its Fieller set is bounded; validation.judgment.decomposition).
    """

    user: str
    steps: tuple[GainStep, ...]
    seen_share: float | None
    words: str
    # issue 23: the share with its interval, shown only where it is defined (else `seen_share` is
    # None, `seen_share_note` says why and `seen_share_point` keeps the bare ratio beside it)
    seen_share_ci: Interval | None = None
    seen_share_point: float | None = None
    seen_share_note: str = ""

    def step(self, key: str) -> GainStep | None:
        return next((s for s in self.steps if s.key == key), None)

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "steps": {s.key: s.to_json() for s in self.steps},
                "seen_share_of_pooled_gain": _num(self.seen_share), "seen_share_ci": _interval(self.seen_share_ci),
                "seen_share_point": _num(self.seen_share_point), "seen_share_note": self.seen_share_note or None,
                "words": self.words}
