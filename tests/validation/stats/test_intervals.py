"""validation.stats.intervals: the interval methods, the variance shares and the study's regime."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from validation.calibration.plan import regime_params
from validation.contract.prereg import INTERVAL_METHODS, Prereg
from validation.judgment.study import judge
from validation.simulation.simulate import simulate_experiment
from validation.stats.intervals import METHODS, bootstrap_interval, document_df, regime_label, variance_shares
from validation.text.outputs import verdict_text


def test_every_method_is_selectable_in_the_preregistration():
    assert INTERVAL_METHODS == METHODS
    for m in METHODS:
        assert Prereg(interval_method=m).interval_method == m


def test_without_documents_cochran_cox_is_the_classical_t_interval_on_the_seeds():
    rng = np.random.default_rng(0)
    seed_values = np.array([0.08, 0.11, 0.13, 0.09, 0.12])
    # draws of the mean of resampled seeds: the seeds-only bootstrap
    draws = seed_values[rng.integers(5, size=(20000, 5))].mean(axis=1)
    point = seed_values.mean()
    iv = bootstrap_interval(draws, point, 0.95, method="cochran-cox", n_seeds=5, seed_values=seed_values)
    half = stats.t.ppf(0.975, 4) * seed_values.std(ddof=1) / np.sqrt(5)
    assert (iv.low, iv.high) == pytest.approx((point - half, point + half), rel=1e-9)
    sh = variance_shares(draws, seed_values, None)
    assert sh.document == 0 and sh.df == 4 and sh.seed_share == 1.0


def test_when_seeds_agree_the_documents_set_the_degrees_of_freedom():
    rng = np.random.default_rng(1)
    draws = rng.normal(0.1, 0.01, size=20000)
    sh = variance_shares(draws, np.full(5, 0.1), 40)
    assert sh.seed == 0 and sh.seed_share == 0 and sh.df == 39
    assert sh.document == pytest.approx(np.var(draws, ddof=1) * 40 / 39)
    for m in ("cochran-cox", "satterthwaite"):
        iv = bootstrap_interval(draws, 0.1, 0.95, method=m, n_seeds=5, seed_values=np.full(5, 0.1), n_docs=40)
        assert iv.high - 0.1 == pytest.approx(stats.t.ppf(0.975, 39) * np.sqrt(sh.document), rel=1e-9)
    # student-t (the earlier default) stays what it was: t on seeds - 1 df times the bootstrap SD
    t = bootstrap_interval(draws, 0.1, 0.95, method="student-t", n_seeds=5)
    assert t.high - 0.1 == pytest.approx(stats.t.ppf(0.975, 4) * np.std(draws, ddof=1))


def test_satterthwaite_df_lies_between_the_two_levels():
    rng = np.random.default_rng(2)
    seed_values = rng.normal(0.1, 0.02, size=8)
    draws = rng.normal(0.1, 0.015, size=20000)
    sh = variance_shares(draws, seed_values, 50)
    assert 0 < sh.seed_share < 1 and 7 <= sh.df <= 49 + 7
    assert sh.inflation >= 1.0


def test_methods_needing_seed_values_say_so():
    with pytest.raises(ValueError, match="seed_values"):
        bootstrap_interval(np.zeros(10), 0.0, 0.95, method="satterthwaite", n_seeds=3)
    with pytest.raises(ValueError, match="`n_seeds`"):
        bootstrap_interval(np.zeros(10), 0.0, 0.95, method="cochran-cox")


@pytest.mark.parametrize("share, label", [(0.9, "seed-dominated"), (0.5, "mixed"),
                                          (0.1, "document-dominated"), (float("nan"), "unknown")])
def test_regime_labels(share, label):
    assert regime_label(share) == label


@pytest.mark.parametrize("regime, label", [("seed-dominated", "seed-dominated"),
                                           ("document-dominated", "document-dominated")])
def test_the_verdict_names_the_regime_of_its_study(regime, label):
    st = simulate_experiment(regime_params(regime, n_docs=50), 0.1, 5, np.random.default_rng(3))
    v = judge(st.data, rng=np.random.default_rng(0), n_resamples=400, fit=False)
    assert v.bootstrap.regime.label == label
    assert v.bootstrap.to_json()["regime"]["label"] == label
    assert f"regime: {label}" in verdict_text(v)


def _two_level_example():
    """3 seeds with margins 0.1, 0.2, 0.3 (seed part var / S = 0.01 / 3) and two draws whose
    variance is what a hierarchical bootstrap over 20 documents holds when the document part is
    also 0.01 / 3: (S - 1) / S x 0.01 / 3 + (n - 1) / n x 0.01 / 3. Seed share 0.5."""
    v = 0.01 / 3
    a = np.sqrt(((2 / 3) * v + (19 / 20) * v) / 2)   # two draws +-a: var (ddof 1) = 2 a^2
    return np.array([0.2 - a, 0.2 + a]), np.array([0.1, 0.2, 0.3]), v


def test_the_three_critical_values_by_hand():
    draws, seed_values, v = _two_level_example()
    sh = variance_shares(draws, seed_values, 20)
    assert (sh.seed, sh.document, sh.seed_share) == pytest.approx((v, v, 0.5), rel=1e-12)
    nu = (2 * v) ** 2 / (v ** 2 / 2 + v ** 2 / 19)                  # Welch-Satterthwaite: 7.238
    assert sh.df == pytest.approx(nu, rel=1e-12) and nu == pytest.approx(7.2381, abs=1e-4)
    c_satt = stats.t.ppf(0.975, nu)                                  # 2.3489
    c_cc = 0.5 * stats.t.ppf(0.975, 2) + 0.5 * stats.t.ppf(0.975, 19)  # (4.3027 + 2.0930) / 2
    c_blend = 0.5 * c_cc + 0.5 * c_satt                               # the share is 0.5
    assert (c_satt, c_cc, c_blend) == pytest.approx((2.3489, 3.1978, 2.7734), abs=1e-4)
    se = np.sqrt(2 * v)                                               # corrected SD: 0.08165
    for method, crit, half in (("satterthwaite", c_satt, 0.19179), ("cochran-cox", c_cc, 0.26110),
                               ("share-blend", c_blend, 0.22645)):
        iv = bootstrap_interval(draws, 0.2, 0.95, method=method, n_seeds=3, seed_values=seed_values, n_docs=20)
        assert (iv.low, iv.high) == pytest.approx((0.2 - crit * se, 0.2 + crit * se), rel=1e-12)
        assert iv.high - 0.2 == pytest.approx(half, abs=1e-5)


def test_share_blend_is_each_parent_where_one_level_carries_everything():
    rng = np.random.default_rng(4)
    seed_values = np.array([0.08, 0.11, 0.13, 0.09, 0.12])
    seeds_only = seed_values[rng.integers(5, size=(20000, 5))].mean(axis=1)
    kw = dict(n_seeds=5, seed_values=seed_values)
    assert bootstrap_interval(seeds_only, 0.106, 0.95, method="share-blend", **kw) == \
        bootstrap_interval(seeds_only, 0.106, 0.95, method="cochran-cox", **kw)       # t(S - 1)
    docs_only = rng.normal(0.1, 0.01, size=20000)
    kw = dict(n_seeds=5, seed_values=np.full(5, 0.1), n_docs=40)
    blend = bootstrap_interval(docs_only, 0.1, 0.95, method="share-blend", **kw)
    assert blend == bootstrap_interval(docs_only, 0.1, 0.95, method="satterthwaite", **kw)  # t(n - 1)
    assert blend.high - 0.1 == pytest.approx(stats.t.ppf(0.975, 39) * np.std(docs_only, ddof=1)
                                             * np.sqrt(40 / 39), rel=1e-9)


def test_share_blend_lies_between_its_parents():
    rng = np.random.default_rng(5)
    for _ in range(20):
        seed_values = rng.normal(0.1, rng.uniform(0.001, 0.03), size=3)
        draws = rng.normal(0.1, rng.uniform(0.001, 0.02), size=500)
        w = {m: bootstrap_interval(draws, 0.1, 0.95, method=m, n_seeds=3, seed_values=seed_values,
                                   n_docs=50).high for m in ("satterthwaite", "share-blend", "cochran-cox")}
        lo, hi = sorted((w["satterthwaite"], w["cochran-cox"]))
        assert lo - 1e-12 <= w["share-blend"] <= hi + 1e-12


def test_document_df_by_hand():
    assert document_df([400, 400, 400, 400]) == pytest.approx(3.0)            # equal lengths: n - 1
    # lengths 1, 1, 2: (1 + 1 + 4)^2 / (1 + 1 + 16) - 1 = 36 / 18 - 1 = 1
    assert document_df([100, 100, 200]) == pytest.approx(1.0)
    assert document_df([5]) == 0.0 and document_df([np.nan, 3, 3]) == pytest.approx(1.0)


def test_share_blend_reads_the_documents_on_their_effective_df_and_the_older_methods_do_not():
    draws, seed_values, v = _two_level_example()
    kw = dict(n_seeds=3, seed_values=seed_values, n_docs=20)
    # doc_df 9.5 instead of 19: Satterthwaite df 4 v^2 / (v^2 / 2 + v^2 / 9.5), CC t(9.5) for documents
    nu = 4 / (1 / 2 + 1 / 9.5)
    c = 0.5 * (0.5 * stats.t.ppf(0.975, 2) + 0.5 * stats.t.ppf(0.975, 9.5)) + 0.5 * stats.t.ppf(0.975, nu)
    iv = bootstrap_interval(draws, 0.2, 0.95, method="share-blend", doc_df=9.5, **kw)
    assert iv.high - 0.2 == pytest.approx(c * np.sqrt(2 * v), rel=1e-12)
    assert iv.high > bootstrap_interval(draws, 0.2, 0.95, method="share-blend", **kw).high
    for m in ("cochran-cox", "satterthwaite", "expanded-percentile"):    # earlier pre-registrations
        assert bootstrap_interval(draws, 0.2, 0.95, method=m, doc_df=9.5, **kw) == \
            bootstrap_interval(draws, 0.2, 0.95, method=m, **kw)
    # kept within [1, n - 1]
    assert bootstrap_interval(draws, 0.2, 0.95, method="share-blend", doc_df=50.0, **kw) == \
        bootstrap_interval(draws, 0.2, 0.95, method="share-blend", **kw)


def test_judge_gives_share_blend_the_columns_document_df():
    from validation.inputs.arrays import build_arrays
    from validation.stats.design import _doc_df
    st = simulate_experiment(regime_params("document-dominated", n_docs=20), 0.1, 3, np.random.default_rng(6))
    arrays = build_arrays(st.data)
    tokens = [t[:, 0, 0] for t in arrays.doc_tok]
    assert _doc_df(arrays) == pytest.approx(tuple(document_df(t) for t in tokens))
    assert all(d < 19 for d in _doc_df(arrays))          # log-normal lengths: fewer than n - 1
    v = judge(st.data, Prereg(interval_method="share-blend"), rng=np.random.default_rng(0), n_resamples=300, fit=False)
    u = v.users[0]
    expect = bootstrap_interval(u.draws_margin, u.margin, 0.95, method="share-blend", n_seeds=3,
                                seed_values=u.seed_margins, n_docs=20, doc_df=_doc_df(arrays)[0])
    assert u.ci == expect


def test_the_interval_design_is_read_once_from_the_arrays_and_gives_bootstrap_intervals():
    from validation.inputs.arrays import build_arrays
    from validation.stats.design import IntervalDesign
    st = simulate_experiment(regime_params("document-dominated", n_docs=20), 0.1, 3, np.random.default_rng(6))
    arrays = build_arrays(st.data)
    design = IntervalDesign.of(arrays, "share-blend", 0.9)
    assert (design.n_seeds, design.n_docs) == (3, (20,) * len(arrays.users))
    assert design.doc_df == pytest.approx(tuple(document_df(t[:, 0, 0]) for t in arrays.doc_tok))
    draws, seeds = np.random.default_rng(1).normal(0.1, 0.02, 500), np.array([0.09, 0.1, 0.12])
    assert design.interval(draws, 0.1, 1, seeds) == bootstrap_interval(
        draws, 0.1, 0.9, method="share-blend", n_seeds=3, seed_values=seeds, n_docs=20, doc_df=design.doc_df[1])
    assert design.interval(draws, 0.1, 1, seeds, level=0.5) != design.interval(draws, 0.1, 1, seeds)
    assert design.pooled_interval(draws, 0.1, seeds) == bootstrap_interval(
        draws, 0.1, 0.9, method="share-blend", n_seeds=3, seed_values=seeds, n_docs=20, doc_df=min(design.doc_df))
    no_docs = IntervalDesign.of(build_arrays(replace(st.data, docs=None)), "percentile", 0.95)
    assert (no_docs.n_docs, no_docs.doc_df, no_docs.docs_of(0), no_docs.df_of(0)) == (None, None, None, None)
