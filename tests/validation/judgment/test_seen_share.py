"""Issue 23, item 3: the share of pooled's gain that came from having seen the user is shown only
where it is defined (pooled's gain over base clearly above zero: its Fieller set bounded), with an
interval from the same draws that is valid among the shown shares (Fieller's where pooled's gain is
large, unbounded on a side and labelled descriptive near the showing rule's threshold); otherwise
undefined, with the reason."""

from __future__ import annotations

import math

import numpy as np
import pytest

from validation.judgment.decomposition import describe, seen_share_reading, share_fig
from validation.judgment.user_results import GainStep
from validation.stats.intervals import bootstrap_interval
from validation.stats.types import Interval


def _step(key, frm, to, gain, ci, rng, sd, seed_sd=None):
    """A step whose draws have sd `sd`; its 3 seeds spread by `seed_sd` (default sd / 20: the
    documents carry the variance, read on their 19 df)."""
    draws = gain + rng.normal(0, sd, size=2000)
    seeds = gain + rng.normal(0, sd / 20 if seed_sd is None else seed_sd, size=3)
    return GainStep(key, frm, to, gain, Interval(*ci), draws, seeds)


def _iv(draws, point, seed_values, j):
    return bootstrap_interval(draws, point, 0.95, method="share-blend", n_seeds=3, seed_values=seed_values, n_docs=20)


def _by(pooled, seen):
    return {"base_to_pooled": pooled, "seen_user": seen}


def test_the_issue_examples_no_longer_print_a_share():
    rng = np.random.default_rng(0)
    pooled = _step("base_to_pooled", "base", "pooled", 0.002, (-0.004, 0.008), rng, 0.003)
    seen = _step("seen_user", "loo:a", "pooled", 0.006, (0.001, 0.011), rng, 0.0025)
    r = seen_share_reading(pooled, seen, _iv, 0)
    assert r.share is None and r.ci is None and round(r.point, 2) == 3.01   # the bare ratio that read "301%"
    assert "too close to zero" in r.note
    words = describe("a", _by(pooled, seen), r.share, r)
    assert "301%" not in words and "is undefined" in words
    pooled = _step("base_to_pooled", "base", "pooled", 0.05, (0.03, 0.07), rng, 0.01)
    seen = _step("seen_user", "loo:a", "pooled", -0.01, (-0.03, 0.01), rng, 0.01)
    r = seen_share_reading(pooled, seen, _iv, 0)
    # a negative share is shown only with its interval (the issue's "-19%" had none), and said as a loss
    assert round(r.share, 2) == -0.19 and r.ci is not None and r.ci.low < r.share < r.ci.high
    words = describe("a", _by(pooled, seen), r.share, r)
    assert "lowered pooled's gain" in words and share_fig(r.share, r.ci, r.note) in words


def test_a_defined_share_has_a_fieller_interval_from_the_same_draws():
    rng = np.random.default_rng(1)
    pooled = _step("base_to_pooled", "base", "pooled", 0.05, (0.03, 0.07), rng, 0.005)
    seen = _step("seen_user", "loo:a", "pooled", 0.02, (0.0, 0.04), rng, 0.005)
    r = seen_share_reading(pooled, seen, _iv, 0)
    assert r.share is not None and r.ci is not None and r.ci.low < r.share < r.ci.high and r.note == ""
    # the ends solve (N - r D)^2 = c^2 var(N_b - r D_b), c the method's critical value (from its
    # interval on the delta-method draws)
    N_b, D_b = -np.log1p(-seen.draws), -np.log1p(-pooled.draws)
    d0 = -np.log1p(-0.05)
    lin = r.share + (N_b - r.share * D_b) / d0
    per_seed = r.share + (-np.log1p(-seen.seed_gains) - r.share * -np.log1p(-pooled.seed_gains)) / d0
    lin_ci = _iv(lin, r.share, per_seed, 0)
    c = (lin_ci.high - lin_ci.low) / 2 / np.std(lin, ddof=1)
    N = r.share * d0
    for end in r.ci:
        assert (N - end * d0) ** 2 == pytest.approx(c ** 2 * np.var(N_b - end * D_b, ddof=1), rel=1e-6)
    words = describe("a", _by(pooled, seen), r.share, r)
    assert f"{r.share:.0%} [{r.ci.low:.0%}, {r.ci.high:.0%}] came from having seen a's text" in words


def test_a_weak_denominator_widens_labels_or_hides_the_share():
    rng = np.random.default_rng(2)
    seen = _step("seen_user", "loo:a", "pooled", 0.02, (0.0, 0.04), rng, 0.004)
    strong = seen_share_reading(_step("base_to_pooled", "base", "pooled", 0.05, (0.04, 0.06), rng, 0.004),
                                seen, _iv, 0)
    # pooled's gain just above the showing rule's threshold: the interval valid among the shown
    # shares is unbounded on a side, reported so, and the share labelled descriptive
    weak = seen_share_reading(_step("base_to_pooled", "base", "pooled", 0.05, (0.01, 0.09), rng, 0.021),
                              seen, _iv, 0)
    assert strong.note == "" and math.isfinite(strong.ci.low) and math.isfinite(strong.ci.high)
    assert weak.share is not None and weak.note.startswith("descriptive only")
    assert not (math.isfinite(weak.ci.low) and math.isfinite(weak.ci.high))
    assert "unbounded" in share_fig(weak.share, weak.ci, weak.note)
    assert "(descriptive)" in share_fig(weak.share, weak.ci, weak.note)
    gone = seen_share_reading(_step("base_to_pooled", "base", "pooled", 0.05, (0.001, 0.099), rng, 0.03),
                              seen, _iv, 0)
    assert gone.share is None and "too close to zero" in gone.note


def test_a_share_in_a_study_where_seeds_carry_the_variance_is_labelled_descriptive():
    """Where seeds carry a third or more of the study's variance, estimated on few seeds, the share
    shown is selected on the variance's estimate too: labelled even where its interval is bounded."""
    from validation.judgment.study import seeds_regime
    from validation.stats.fits import Regime

    rng = np.random.default_rng(4)
    pooled = _step("base_to_pooled", "base", "pooled", 0.05, (0.04, 0.06), rng, 0.004)
    seen = _step("seen_user", "loo:a", "pooled", 0.02, (0.0, 0.04), rng, 0.004)
    plain = seen_share_reading(pooled, seen, _iv, 0)
    words = seeds_regime(Regime(0.45, "mixed"))
    assert words == "mixed, estimated seed share 0.45" and seeds_regime(Regime(0.09, "document-dominated")) == ""
    assert seeds_regime(Regime(0.2, "document-dominated")) == "document-dominated, estimated seed share 0.20"
    r = seen_share_reading(pooled, seen, _iv, 0, seeds_regime=words)
    assert plain.note == "" and r.ci == plain.ci and math.isfinite(r.ci.low) and math.isfinite(r.ci.high)
    assert r.note.startswith("descriptive only") and "mixed, estimated seed share 0.45" in r.note
