"""The verdict in one sentence a reader can quote, in the study's words.

`summary_sentence(verdict)` is a pure function of a `Verdict`: the terminal prints it first and
the report shows it on its first screen. It says what the criteria found (personalization,
regularization, inverted, undecided), against which bar, for how many users, what the generic
(`pooled`) control adds to that reading, and which parts of the input were missing (no documents,
no controls, one seed), so the sentence never claims more than the input allows.
"""

from __future__ import annotations

import math

from validation.contract.prereg import MIN_USERS_EFFECT
from validation.contract.status import Status
from validation.judgment.results import Verdict
from validation.stats.types import BootstrapMode, threshold_pct

__all__ = ["summary_sentence"]


_bar = threshold_pct


def _signed(x: float) -> str:
    return f"{x:+.1%}"


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _margin_range(v: Verdict) -> str:
    ms = sorted(u.margin for u in v.users if math.isfinite(u.margin))
    if not ms:
        return "margins not computable"
    if len(ms) == 1 or ms[0] == ms[-1]:
        return f"margin {_signed(ms[0])}"
    return f"margins {_signed(ms[0])} to {_signed(ms[-1])}"


def _claim(v: Verdict) -> tuple[str, bool]:
    """The finding, and whether it is a positive (personalization) finding."""
    n = len(v.users)
    required = v.settings.lenient_required(n)
    strict, lenient, cata = (v.criterion(c) for c in ("strict", "lenient", "catastrophic"))
    every = "for every user" if n > 2 else "for both users"
    rng = _margin_range(v)
    inverted = [u.user for u in v.users if u.inverted]
    if cata.status is Status.TRIGGERED:
        reg = [u.regularization_gain for u in v.users if math.isfinite(u.regularization_gain)]
        what = ("regularization, not personalization" if reg and min(reg) > 0 else
                "no personalization")
        return (f"Own adapters do no better than other users' adapters: every user's margin is "
                f"within {_bar(cata.threshold)} either way ({rng}): {what}"), False
    if strict.status is Status.PASS:
        return (f"Own adapters beat the best other user's adapter by more than "
                f"{_bar(strict.threshold)} {every} ({rng})"), True
    if lenient.status is Status.PASS:
        return (f"Own adapters beat the best other user's adapter by more than "
                f"{_bar(lenient.threshold)} for at least {required} of {n} users ({rng}), though "
                f"not by {_bar(strict.threshold)} for every user"), True
    if inverted:
        return (f"Not personalization: for {_names(inverted)}, another user's adapter beats the "
                f"user's own ({rng})"), False
    if lenient.status is Status.FAIL:
        return (f"Own adapters do not beat the best other user's adapter by "
                f"{_bar(lenient.threshold)} for {required} of {n} users ({rng}): too little "
                f"personalization to pass the pre-registered bar"), False
    bare = [u.user for u in v.users if not u.ci.known]
    if bare:
        who = "any user" if len(bare) == n else _names(bare)
        return (f"Undecided: nothing could be resampled for {who}, so there is no interval to tell whether "
                f"own adapters beat the best other user's adapter by {_bar(lenient.threshold)} for "
                f"{required} of {n} users ({rng}, point estimates only); more seeds or held-out documents "
                "would decide"), False
    return (f"Undecided: the intervals are too wide to tell whether own adapters beat the best "
            f"other user's adapter by {_bar(lenient.threshold)} for {required} of {n} users "
            f"({rng}); more seeds or held-out documents would decide"), False


def _control_clause(v: Verdict, positive: bool) -> str:
    """What the generic (`pooled`) control says about a positive finding."""
    if not positive:
        return ""
    gains = [(u.user, u.personalization_gain) for u in v.users]
    if not any(math.isfinite(g) for _, g in gains):
        return ("; with no pooled control in this input, personalization cannot be told apart "
                "from what any adapter buys")
    inverted = {u.user for u in v.users if u.inverted}   # said separately, more strongly
    behind = [name for name, g in gains if math.isfinite(g) and g <= 0 and name not in inverted]
    if not behind:
        return ": personalization, beyond what the generic adapter buys"
    return (f": personalization against other users' adapters, though for {_names(behind)} the "
            f"generic (pooled) adapter does as well")


def _caveats(v: Verdict) -> str:
    notes = []
    if v.bootstrap.n_seeds < 2:
        notes.append("one seed, so run-to-run variation is unknown")
    if v.bootstrap.mode in (BootstrapMode.SEEDS_ONLY, BootstrapMode.NONE) and v.bootstrap.n_seeds >= 2:
        notes.append("no per-document data, so the intervals come from the seeds alone")
    elif v.bootstrap.mode is BootstrapMode.NONE:
        notes.append("no per-document data either, so there are no intervals")
    bare = [u.user for u in v.users if not u.ci.known]
    if bare and v.bootstrap.mode is not BootstrapMode.NONE:
        notes.append(f"no interval for {_names(bare)}: nothing to resample, so the gate cannot pass")
    return f" ({'; '.join(notes)})" if notes else ""


# from this many users the sentence also reads the users as a population: the number the population-average
# effect needs (one threshold, `validation.contract.prereg.MIN_USERS_EFFECT`)
POPULATION_USERS = MIN_USERS_EFFECT


def _population(v: Verdict) -> str:
    """`; as a population: ...` from `POPULATION_USERS` users on, when the figures were computed."""
    p = v.population
    if p is None or p.n_users < POPULATION_USERS:
        return ""
    from validation.judgment.population import population_sentence
    text = population_sentence(p)
    return f"; as a population: {text}" if text else ""


def summary_sentence(v: Verdict) -> str:
    """One quotable sentence: what the study found, in words, generated from the verdict.

    E.g. "Own adapters beat the best other user's adapter by more than 10% for every user
    (margins +12.3% to +24.2%): personalization, beyond what the generic adapter buys."
    Covers PASS, FAIL, INCONCLUSIVE, TRIGGERED and inverted readings, and says so when the
    input lacks documents, controls or a second seed; prefixed when not pre-registered.
    """
    claim, positive = _claim(v)
    extra = [u.user for u in v.users if u.inverted]
    inverted_note = ""
    if positive and extra:
        inverted_note = (f"; yet for {_names(extra)} another user's adapter beats the user's own "
                         f"(inverted)")
    text = claim + _control_clause(v, positive) + inverted_note + _caveats(v) + _population(v) + "."
    if not v.prereg.locked:
        text = "Exploratory (not pre-registered): " + text[0].lower() + text[1:]
    return text
