"""The pre-registered criteria and the gate (docs/methods.md, sections 8 and 9).

Each criterion is read twice: from the intervals (its status, what the gate uses) and from the
point estimates alone (the reading earlier reports used, shown beside it). Inputs are arrays of
shape (J,) over users: `low`, `high` interval bounds, `point` estimates.
"""

from __future__ import annotations

import math

import numpy as np

from validation.contract.prereg import Prereg
from validation.contract.status import PreregStatus, Status
from validation.inputs.arrays import CellProblems
from validation.judgment.results import CriterionResult, Gate
from validation.judgment.user_results import UserResult
from validation.stats.intervals import bootstrap_interval

NAMES_SHOWN = 8   # an explanation names at most this many users, then "and N more"


def _names(users, mask) -> str:
    picked = [u for u, m in zip(users, mask, strict=True) if m]
    if len(picked) > NAMES_SHOWN:
        return ", ".join(picked[:NAMES_SHOWN]) + f" and {len(picked) - NAMES_SHOWN} more"
    return ", ".join(picked) if picked else "none"


def strict(users, point, low, high, bar: float) -> CriterionResult:
    """PASS: every CI low >= bar; FAIL: some CI high < bar; else INCONCLUSIVE."""
    low, high, point = map(np.asarray, (low, high, point))
    if np.all(low >= bar):
        status, why = Status.PASS, f"every user's CI low >= {bar:.0%}"
    elif np.any(high < bar):
        status, why = Status.FAIL, f"CI entirely below {bar:.0%} for: {_names(users, high < bar)}"
    else:
        unknown = ~np.isfinite(low) | ~np.isfinite(high)
        status, why = Status.INCONCLUSIVE, (f"CI straddles {bar:.0%} for: {_names(users, (low < bar) & (high >= bar))}"
                                            + (f"; no interval for: {_names(users, unknown)}" if unknown.any() else ""))
    point_status = Status.PASS if np.all(point >= bar) else Status.FAIL
    return CriterionResult("strict", status, point_status, bar, why)


def lenient(users, point, low, high, bar: float, required: int, level: float | None = None) -> CriterionResult:
    """PASS: >= `required` users with CI low >= bar; FAIL: fewer than `required` with CI high >= bar.

    `low`, `high` are read at `level` (Prereg.lenient_level: Bonferroni-adjusted by default);
    `level` only enters the explanation.
    """
    low, high, point = map(np.asarray, (low, high, point))
    sure, possible = int(np.sum(low >= bar)), int(np.sum(~(high < bar)))   # no interval (NaN): possible
    status = Status.read(sure >= required, possible < required)
    unknown = ~np.isfinite(low) | ~np.isfinite(high)
    why = (f"{sure} of {len(users)} users with CI low >= {bar:.0%} ({_names(users, low >= bar)}), "
           f"{possible} with CI high >= {bar:.0%}"
           + (f" or no interval ({_names(users, unknown)})" if unknown.any() else "") + f"; {required} required"
           + (f" (per-user intervals at {level:.2%}, multiplicity-adjusted)" if level is not None else ""))
    point_status = Status.PASS if np.sum(point >= bar) >= required else Status.FAIL
    return CriterionResult("lenient", status, point_status, bar, why)


def catastrophic(users, point, low, high, eq_low, eq_high, delta: float) -> CriterionResult:
    """TRIGGERED: every user's equivalence CI inside (-delta, +delta) (TOST);
    NOT_TRIGGERED: some user's CI low >= delta; else INCONCLUSIVE."""
    low, point, eq_low, eq_high = map(np.asarray, (low, point, eq_low, eq_high))
    inside = (eq_low > -delta) & (eq_high < delta)
    if np.all(inside):
        status, why = Status.TRIGGERED, (f"every user's equivalence CI inside (-{delta:.0%}, +{delta:.0%}): "
                                         "off-diagonal adapters are as good")
    elif np.any(low >= delta):
        status, why = Status.NOT_TRIGGERED, f"CI low >= {delta:.0%} for: {_names(users, low >= delta)}"
    else:
        status, why = Status.INCONCLUSIVE, ("neither equivalent nor clearly apart; "
                                            f"not equivalent: {_names(users, ~inside)}")
    point_status = Status.TRIGGERED if np.all(np.abs(point) < delta) else Status.NOT_TRIGGERED
    return CriterionResult("catastrophic", status, point_status, delta, why)


def margin_intervals(users: tuple[UserResult, ...], prereg: Prereg, level: float, *, method: str,
                     n_seeds: int, n_docs: tuple[int, ...] | None = None,
                     doc_df: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (J,): the users' margin intervals (the pre-registered comparator's) at
    `level`, read by `method` (`validation.stats.intervals.bootstrap_interval`). `n_docs` per user,
    None without per-document data; `doc_df` per user (`validation.stats.intervals.document_df`)."""
    worst = prereg.comparator == "worst_other"
    cis = [bootstrap_interval(u.draws_worst_other_margin if worst else u.draws_margin,
                              u.worst_other_margin if worst else u.margin, level, method=method,
                              n_seeds=n_seeds, n_docs=None if n_docs is None else n_docs[k],
                              doc_df=None if doc_df is None else doc_df[k],
                              seed_values=u.seed_worst_other_margins if worst else u.seed_margins)
           for k, u in enumerate(users)]
    return np.array([c.low for c in cis]), np.array([c.high for c in cis])


def read_criteria(users: tuple[UserResult, ...], prereg: Prereg, *, method: str, n_seeds: int,
                  n_docs: tuple[int, ...] | None = None, doc_df: tuple[float, ...] | None = None,
                  ) -> tuple[CriterionResult, CriterionResult, CriterionResult]:
    """STRICT, LENIENT, CATASTROPHIC from the users' bootstrap draws, intervals read by `method`.

    The margin compared is the pre-registered comparator's (best-other, or worst-other). STRICT
    reads intervals at `confidence`, LENIENT at `Prereg.lenient_level` (multiplicity-adjusted),
    CATASTROPHIC's equivalence at `equivalence_level` (TOST). The one place the criteria are read,
    for `judge` and for the calibration's alternative interval methods alike.
    """
    worst = prereg.comparator == "worst_other"
    names = [u.user for u in users]
    point = np.array([u.worst_other_margin if worst else u.margin for u in users])  # (J,)

    def bounds(level: float) -> tuple[np.ndarray, np.ndarray]:
        return margin_intervals(users, prereg, level, method=method, n_seeds=n_seeds, n_docs=n_docs,
                                doc_df=doc_df)

    low, high = bounds(prereg.confidence)
    len_level = prereg.lenient_level(len(names))
    len_low, len_high = (low, high) if len_level == prereg.confidence else bounds(len_level)
    eq_low, eq_high = bounds(prereg.equivalence_level)
    return (
        strict(names, point, low, high, prereg.strict_margin),
        lenient(names, point, len_low, len_high, prereg.lenient_margin,
                prereg.lenient_required(len(names)),
                level=None if len_level == prereg.confidence else len_level),
        catastrophic(names, point, low, high, eq_low, eq_high, prereg.delta),
    )


def gate(prereg: Prereg, criteria: tuple[CriterionResult, ...], users: tuple[UserResult, ...],
         problems: CellProblems, population=None, routing=None) -> Gate:
    """Apply the pre-registered gate; every failed condition is one reason. `population`
    (`validation.judgment.population.PopulationResult`) and `routing`
    (`validation.judgment.routing_results.RoutingResult`) add their applicable criteria; a gated one
    that is not applicable fails the gate (`validation.contract.prereg.check_users` and
    `validation.judgment.routing_checks.check_routing` refuse that case up front)."""
    reasons: list[str] = []
    if problems.diverged and users and not any(math.isfinite(u.margin) for u in users):
        reasons.append(f"every user's margin is undefined: {len(problems.diverged)} cell(s) diverged (a "
                       "non-finite loss or adapter), leaving no user adapter to judge; for a grid run, lower the "
                       "adapter learning rate `--lr` (docs/lr_sweep.md) and train again")
    bare = [u.user for u in users if not u.ci.known]
    if bare:   # whatever the gate lists accept: a status read without an interval is not evidence
        reasons.append(f"no interval for {bare}: nothing could be resampled (one seed, or cells missing in the "
                       "others, and fewer than 2 held-out documents) or every draw was the same number, so their "
                       "margins are point estimates only; the gate does not pass on point estimates")
    extra = (() if population is None else population.criteria) + (() if routing is None else routing.criteria)
    for pc in extra:
        if pc.result is not None:
            criteria = (*criteria, pc.result)
        elif prereg.gates_population(pc.name):
            reasons.append(f"{pc.name.upper()} is NOT_APPLICABLE (gate requires "
                           f"{'/'.join(prereg.gate_requires(pc.name))}): {pc.reason}")
    for c in criteria:
        if not prereg.gate_allows(c.name, c.status):
            allowed = "/".join(prereg.gate_requires(c.name))
            reasons.append(f"{c.name.upper()} is {c.status.value} (gate requires {allowed}): {c.explanation}")
    if prereg.fail_on_inverted:
        for u in users:
            if u.inverted:
                reasons.append(f"user {u.user!r} is inverted: own adapter worse than {u.best_other!r} "
                               f"(margin {u.margin:+.1%}, CI high {u.ci_high:+.1%} < 0)")
            elif u.user in bare and u.margin < 0:
                reasons.append(f"user {u.user!r} has no interval and its point margin is {u.margin:+.1%}: own "
                               f"adapter worse than {u.best_other!r} on the point estimate")

    def cells(kind: str, triples) -> None:
        if triples:
            shown = "; ".join(f"seed={s} adapter={a!r} eval={e!r}" for s, a, e in triples[:5])
            more = f" and {len(triples) - 5} more" if len(triples) > 5 else ""
            reasons.append(f"{len(triples)} {kind} cell(s): {shown}{more}")

    if prereg.fail_on_bad_cells:
        cells("missing", problems.missing)
        cells("diverged", problems.diverged)
    if prereg.fail_on_worse_than_base:
        cells("worse-than-base", problems.worse_than_base)
    return Gate(not reasons, tuple(reasons))


ACCEPT_FLAG = "--accept-not-preregistered"


def preregistration_gate(g: Gate, status: PreregStatus) -> Gate:
    """The rule of docs/gate.md: a NOT PRE-REGISTERED verdict never passes the gate, unless the
    user accepted it explicitly (`PreregStatus.accepted`, the flag `--accept-not-preregistered`)."""
    if status.locked or status.accepted:
        return g
    reason = (f"the verdict is NOT PRE-REGISTERED ({status.note}); a verdict that is not "
              "pre-registered does not pass the gate: judge with the pre-registered settings "
              f"(no override), or pass `{ACCEPT_FLAG}` to accept it knowingly")
    return Gate(False, g.reasons + (reason,))
