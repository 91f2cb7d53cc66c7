"""Hierarchical bootstrap: determinism, pairing within a column, degraded modes, intervals."""

import numpy as np
import polars as pl
import pytest
from scipy import stats

from validation import (
    BootstrapMode,
    InputError,
    bootstrap_interval,
    judge,
    normalize_cells,
)
from validation.contract.prereg import Prereg
from validation.inputs.arrays import build_arrays
from validation.inputs.study import StudyData
from validation.simulation.simulate import simulate_study
from validation.stats.bootstrap import multinomial_counts, resample_logppl

B = 400


def test_deterministic_with_fixed_generator():
    data = simulate_study(np.random.default_rng(1), n_seeds=3, n_docs=10)
    a = build_arrays(data)
    d1 = resample_logppl(a, B, np.random.default_rng(7))
    d2 = resample_logppl(a, B, np.random.default_rng(7))
    d3 = resample_logppl(a, B, np.random.default_rng(8))
    np.testing.assert_array_equal(d1, d2)
    assert not np.array_equal(d1, d3)
    v1 = judge(data, rng=np.random.default_rng(3), n_resamples=B, fit=False)
    v2 = judge(data, rng=np.random.default_rng(3), n_resamples=B, fit=False)
    assert v1.to_json() == v2.to_json()
    assert v1.bootstrap.rng_seed == 3


def test_multinomial_counts_are_draws_with_replacement():
    """Each row is Multinomial(n; 1/n, ..., 1/n): every item's count has mean 1 and variance
    (n - 1) / n, and an item is left out of a resample with probability (1 - 1/n)^n. An array of
    ones (every item once: no resampling at all) has the right row sums and fails here."""
    n, b = 7, 20_000
    c = multinomial_counts(n, b, np.random.default_rng(0))
    assert c.dtype.kind == "i" and c.min() >= 0 and (c.sum(1) == n).all()
    np.testing.assert_allclose(c.mean(0), 1.0, atol=0.03)            # SE 0.0065
    np.testing.assert_allclose(c.var(0), (n - 1) / n, atol=0.04)     # SE about 0.01
    np.testing.assert_allclose((c == 0).mean(0), (1 - 1 / n) ** n, atol=0.015)  # 0.340, SE 0.0034
    assert c.max() >= 4  # with 140,000 draws some item is drawn 4+ times in some resample


def _shifted_docs(n_seeds: int) -> StudyData:
    """Own adapter's per-token loss is exactly 0.1 below every other's on every document, while
    documents differ wildly: paired resampling gives a margin of exactly 1 - exp(-0.1)."""
    rng = np.random.default_rng(5)
    users, rows = ("a", "b"), []
    for u in users:
        loss = rng.uniform(1, 6, size=12)
        tok = rng.integers(10, 500, size=12)
        for s in range(n_seeds):
            for ad in users:
                shift = -0.1 if ad == u else 0.0
                for d in range(12):
                    rows.append((s, ad, u, f"d{d}", (loss[d] + shift + 0.3 * s) * tok[d], int(tok[d])))
    docs = pl.DataFrame(rows, schema=["seed", "adapter", "eval", "doc_id", "nll_sum", "n_tokens"], orient="row")
    cells = docs.group_by(["seed", "adapter", "eval"]).agg(pl.col("nll_sum").sum(), pl.col("n_tokens").sum())
    return StudyData(cells=normalize_cells(cells), docs=normalize_cells(docs, per_doc=True))


@pytest.mark.parametrize("n_seeds,mode", [(3, BootstrapMode.HIERARCHICAL), (1, BootstrapMode.DOCUMENTS_ONLY)])
def test_documents_paired_within_column(n_seeds, mode):
    v = judge(_shifted_docs(n_seeds), rng=np.random.default_rng(0), n_resamples=B, fit=False)
    assert v.bootstrap.mode is mode
    for u in v.users:
        np.testing.assert_allclose(u.draws_margin, 1 - np.exp(-0.1), rtol=0, atol=1e-12)
        assert not u.ci.known   # every draw the same number: no interval, not a zero-width one (issue 23)


def test_seeds_only_without_docs():
    data = simulate_study(np.random.default_rng(2), n_seeds=2, n_docs=5, with_docs=False)
    v = judge(data, rng=np.random.default_rng(0), n_resamples=B, fit=False)
    assert v.bootstrap.mode is BootstrapMode.SEEDS_ONLY
    assert any("seeds-only" in w for w in v.warnings)
    u = v.users[0]
    # With two seeds a resample is (s0, s0), (s1, s1) or (s0, s1): three distinct values.
    m0, m1 = u.seed_margins
    assert set(np.round(u.draws_margin, 12)) <= {round(m0, 12), round(m1, 12), round(u.margin, 12)}
    assert len(set(np.round(u.draws_margin, 12))) == 3


@pytest.mark.parametrize("n_docs,with_docs", [(5, False), (1, True)])
def test_a_study_without_replication_has_no_interval_and_cannot_pass(n_docs, with_docs):
    """One seed and nothing else to resample (no documents, or one per user): there is no interval
    (null in verdict.json), every reading that needs one is INCONCLUSIVE, the point readings stay,
    and the gate fails. Before, the interval collapsed onto the point and STRICT PASSed, gate and all."""
    data = simulate_study(np.random.default_rng(2), n_seeds=1, n_docs=n_docs, with_docs=with_docs,
                          personalization=0.2)
    v = judge(data, rng=np.random.default_rng(0), n_resamples=B, fit=False)
    assert all(np.isnan(u.ci[0]) and np.isnan(u.ci[1]) for u in v.users)
    assert [c.status.value for c in v.criteria[:3]] == ["INCONCLUSIVE"] * 3
    assert all(c.point.value in ("PASS", "FAIL", "NOT_TRIGGERED", "TRIGGERED") for c in v.criteria[:3])
    assert not v.gate.passed and not any(u.inverted for u in v.users)
    assert any("there is no interval" in w for w in v.warnings)
    assert all(u["ci_low"] is None for u in v.to_json()["users"])
    # two held-out documents are enough to resample: judged, in the documents-only mode
    two = simulate_study(np.random.default_rng(2), n_seeds=1, n_docs=2, personalization=0.2)
    v = judge(two, rng=np.random.default_rng(0), n_resamples=B, fit=False)
    assert v.bootstrap.mode is BootstrapMode.DOCUMENTS_ONLY and all(u.ci[0] < u.ci[1] for u in v.users)


def test_critical_value_without_two_units_at_any_level_is_nan():
    from validation.stats.intervals import critical_value
    assert np.isnan(critical_value("cochran-cox", 1.0, 5.0, 1, None, 0.05))
    assert np.isnan(critical_value("share-blend", np.array([1.0, 0.5]), 5.0, 1, 1, 0.05)).all()
    assert critical_value("cochran-cox", 1.0, 5.0, 2, None, 0.05) == pytest.approx(stats.t.ppf(0.975, 1))


def test_bootstrap_interval_percentile_and_validation():
    draws = np.arange(1, 101, dtype=float)
    low, high = bootstrap_interval(draws, 50.0, 0.90)
    assert (low, high) == pytest.approx(np.quantile(draws, [0.05, 0.95]))
    assert bootstrap_interval(np.array([np.nan, 1.0, 2.0]), 1.5, 0.5).low >= 1.0
    assert np.isnan(tuple(bootstrap_interval(np.empty(0), 0.3, 0.95))).all()   # nothing resampled: none
    with pytest.raises(ValueError, match="`level`"):
        bootstrap_interval(draws, 0.0, 1.5)
    with pytest.raises(ValueError, match="`method`"):
        bootstrap_interval(draws, 0.0, 0.9, method="bca")
    with pytest.raises(ValueError, match="`draws`"):
        bootstrap_interval(draws.reshape(10, 10), 0.0, 0.9)


def test_docs_that_cannot_be_paired_are_an_input_error():
    """Never a silent fallback to seeds-only resampling (issue 10, docs/gate.md)."""
    data = simulate_study(np.random.default_rng(4), n_seeds=2, n_docs=6)
    first = data.docs["doc_id"][0]
    assert (data.docs["doc_id"] == first).sum() > 1  # the document is there for several rows
    docs = data.docs.filter(~((pl.col("adapter") == "bob") & (pl.col("doc_id") == first)))
    with pytest.raises(InputError, match="cannot be paired"):
        judge(StudyData(cells=data.cells, docs=docs), rng=np.random.default_rng(0), n_resamples=50, fit=False)


def test_diverged_seeds_cannot_leave_a_user_without_replication():
    """Two seeds, no documents, every user adapter of seed 1 diverged and a file that does not fail
    on bad cells: each margin is finite in one seed only, so its seeds-only interval would collapse
    onto the point (STRICT and the gate passed that way). No interval, INCONCLUSIVE, gate fails."""
    data = simulate_study(np.random.default_rng(0), n_seeds=2, n_docs=5, with_docs=False, personalization=0.2)
    cells = data.cells.with_columns(
        pl.when((pl.col("seed") == 1) & ~pl.col("adapter").is_in(["base", "pooled"]))
        .then(pl.lit("diverged")).otherwise(pl.col("status")).alias("status"))
    v = judge(StudyData(cells=normalize_cells(cells, "x")), Prereg(fail_on_bad_cells=False),
              rng=np.random.default_rng(0), n_resamples=B)
    assert all(np.isnan(u.ci[0]) for u in v.users) and v.criteria[0].status.value == "INCONCLUSIVE"
    assert not v.gate.passed
    assert any("for ['alice', 'bob', 'carol'], fewer than 2 seeds with a finite margin" in w for w in v.warnings)


def test_one_user_without_an_interval_fails_the_gate_and_cannot_hide_an_inversion():
    """Six users, one seed, 30 documents each but u0 with 1 and a point margin of -40%: u0 has no
    interval. LENIENT can PASS on the other five, but the gate fails, naming u0 twice: no interval,
    and a negative point margin (an inversion the missing interval would otherwise hide)."""
    from validation.simulation.simulate import SimParams, simulate_experiment
    users = tuple(f"u{k}" for k in range(6))
    p = SimParams(users=users, n_docs=(1,) + (30,) * 5)
    st = simulate_experiment(p, np.array([-0.4, 0.3, 0.3, 0.3, 0.3, 0.3]), 1, np.random.default_rng(3))
    v = judge(st.data, rng=np.random.default_rng(0), n_resamples=B, fit=False)
    u0 = v.user("u0")
    assert np.isnan(u0.ci[0]) and u0.margin < 0 and not u0.inverted
    assert all(np.isfinite(u.ci[0]) for u in v.users[1:])
    assert not v.gate.passed
    assert any("no interval for ['u0']" in r for r in v.gate.reasons)
    assert any("'u0' has no interval and its point margin is" in r for r in v.gate.reasons)
    assert "or no interval (u0)" in v.criterion("lenient").explanation
