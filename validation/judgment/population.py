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
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from validation.contract.prereg import MIN_USERS_EFFECT, min_users_share
from validation.contract.status import Status
from validation.inputs.arrays import StudyArrays
from validation.judgment.user_results import CriterionResult, Decomposition, OptionalCriterion, UserResult
from validation.stats.random_effects import PopulationEffect, fit_random_intercept, fit_random_slope, loo_log_ratios
from validation.stats.types import Interval, _interval, _num, signed_pct, threshold_pct

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


NO_USER_MEASURED = ("no user could be measured (every user's margin is missing: its adapters diverged or its cells "
                    "are absent), so no share is given")


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


DESCRIPTIONS = {
    "personalization": "own adapter vs other users' adapters (diag)",
    "own_vs_loo": "own adapter vs loo:<user> (what a user without an adapter would lose)",
    "new_user": "loo:<user> vs base (what a new user gets from the generic adapter)",
}


# ---- criteria ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PopulationCriterion(OptionalCriterion):
    """A population criterion: its CriterionResult, or "not applicable" with the reason."""

    name: str                       # "population_share" | "population_effect"
    min_users: int
    result: CriterionResult | None  # None = not applicable (too few users, or no model)
    reason: str = ""

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
