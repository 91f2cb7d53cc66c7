"""The report's and the terminal's one-sentence answer, generated from real verdicts (simulated
studies judged by `validation.judge`) for every reading and every degraded input."""

from dataclasses import replace

import numpy as np
import pytest

from validation import Prereg, judge
from validation.contract.status import PreregStatus, Status
from validation.simulation.simulate import simulate_study
from validation.text.summary_sentence import summary_sentence

LOCKED = PreregStatus(True, "a" * 64, "a" * 64, "prereg.toml", "matches the run manifest")


def _verdict(seed: int = 1, status: PreregStatus = LOCKED, **kw):
    data = simulate_study(np.random.default_rng(seed), **kw)
    return judge(data, Prereg(), rng=np.random.default_rng(0), n_resamples=300, fit=False,
                 prereg_status=status)


def _statuses(v) -> tuple[str, str, str]:
    return tuple(v.criterion(c).status.value for c in ("strict", "lenient", "catastrophic"))


def test_strict_pass_names_the_bar_every_user_and_the_generic_control():
    v = _verdict(personalization=0.3)
    assert _statuses(v) == ("PASS", "PASS", "NOT_TRIGGERED")
    s = summary_sentence(v)
    lo, hi = min(u.margin for u in v.users), max(u.margin for u in v.users)
    assert s == ("Own adapters beat the best other user's adapter by more than 10% for every user "
                 f"(margins {lo:+.1%} to {hi:+.1%}): personalization, beyond what the generic "
                 "adapter buys.")


def test_lenient_pass_says_how_many_users_and_that_strict_did_not():
    v = _verdict(personalization=np.array([0.3, 0.3, 0.07]))
    assert _statuses(v)[1] == "PASS" and _statuses(v)[0] != "PASS"
    s = summary_sentence(v)
    assert "by more than 5% for at least 2 of 3 users" in s and "though not by 10% for every user" in s


def test_catastrophic_triggered_reads_as_regularization():
    v = _verdict(personalization=0.0, n_docs=100, n_seeds=5, seed_sd=0.002, instance_sd=0.002, doc_sd=0.05)
    assert _statuses(v)[2] == "TRIGGERED"
    s = summary_sentence(v)
    assert s.startswith("Own adapters do no better than other users' adapters")
    assert "within 2% either way" in s and s.endswith("regularization, not personalization.")


def test_fail_says_too_little_personalization():
    v = _verdict(personalization=0.0, n_docs=200, n_seeds=8, doc_sd=0.1)
    assert _statuses(v)[1] == "FAIL" and _statuses(v)[2] != "TRIGGERED"
    assert "do not beat the best other user's adapter by 5% for 2 of 3 users" in summary_sentence(v)


def test_inconclusive_says_undecided_and_what_would_decide():
    v = _verdict(personalization=0.06, n_docs=10, n_seeds=3)
    assert _statuses(v)[1] == "INCONCLUSIVE"
    s = summary_sentence(v)
    assert s.startswith("Undecided: the intervals are too wide") and "more seeds or held-out documents" in s


def test_inverted_users_are_named_whether_or_not_lenient_passes():
    alone = _verdict(personalization=np.array([0.3, -0.2, -0.2]))
    assert [u.user for u in alone.users if u.inverted] == ["bob", "carol"]
    assert summary_sentence(alone).startswith(
        "Not personalization: for bob and carol, another user's adapter beats the user's own")
    beside = _verdict(personalization=np.array([0.3, 0.3, -0.2]))
    assert _statuses(beside)[1] == "PASS"
    assert "; yet for carol another user's adapter beats the user's own (inverted)." in summary_sentence(beside)


@pytest.mark.parametrize("kw, note", [
    ({"with_docs": False}, "(no per-document data, so the intervals come from the seeds alone)."),
    ({"n_seeds": 1}, "(one seed, so run-to-run variation is unknown)."),
    ({"n_seeds": 1, "with_docs": False},
     "(one seed, so run-to-run variation is unknown; no per-document data either, so there are no intervals)."),
    ({"controls": ()}, ("; with no pooled control in this input, personalization cannot be told apart "
                        "from what any adapter buys.")),
])
def test_degraded_inputs_say_what_the_sentence_cannot_claim(kw, note):
    v = _verdict(personalization=0.3, **kw)
    s = summary_sentence(v)
    assert s.endswith(note), s
    if kw == {"n_seeds": 1, "with_docs": False}:   # nothing resampled: no interval, never a claim
        assert s.startswith("Undecided: nothing could be resampled for any user, so there is no interval")
        return
    assert ("beyond what the generic adapter buys" in s) == ("controls" not in kw)


def test_not_preregistered_is_said_first():
    v = _verdict(personalization=0.3)
    exploratory = replace(v, prereg=replace(LOCKED, locked=False, note="changed since the run"))
    assert summary_sentence(exploratory) == ("Exploratory (not pre-registered): own"
                                             + summary_sentence(v).removeprefix("Own"))


def test_thresholds_come_from_the_verdict_not_from_defaults():
    v = _verdict(personalization=0.3)
    higher = replace(v, criteria=tuple(replace(c, threshold=0.2) if c.name == "strict" else c
                                       for c in v.criteria))
    assert "by more than 20% for every user" in summary_sentence(higher)
    assert higher.criterion("strict").status is Status.PASS
