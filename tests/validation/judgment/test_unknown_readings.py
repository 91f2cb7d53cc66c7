"""Issue 23, items 6, 7 and 9: unknown reads as unknown. A user without an interval is neither
inverted nor not (verdict.json `inverted: null`, the point reading beside it); a tail the draws
cannot resolve and draws without variance give no interval; the report labels few-user
population figures descriptive, as the terminal does."""

from __future__ import annotations

import json

import numpy as np

from validation.contract.prereg import Prereg
from validation.judgment.study import judge
from validation.simulation.simulate import SimParams, simulate_experiment, simulate_study
from validation.study_verdict import StudyVerdict
from validation.text.outputs import inverted_cell

B = 300


def _one_bare_user():
    """Six users, one seed, u0 with one held-out document and a point margin near -40%."""
    users = tuple(f"u{k}" for k in range(6))
    p = SimParams(users=users, n_docs=(1,) + (30,) * 5)
    st = simulate_experiment(p, np.array([-0.4, 0.3, 0.3, 0.3, 0.3, 0.3]), 1, np.random.default_rng(3))
    return judge(st.data, rng=np.random.default_rng(0), n_resamples=B, fit=False)


def test_a_user_without_an_interval_is_not_read_as_not_inverted():
    v = _one_bare_user()
    u0 = v.user("u0")
    assert not u0.ci.known and u0.margin < 0
    assert u0.inverted is None and u0.inverted_point is True
    doc = json.loads(StudyVerdict(v).json_text())
    row = next(u for u in doc["users"] if u["user"] == "u0")
    assert row["inverted"] is None and row["inverted_point"] is True
    others = [u for u in doc["users"] if u["user"] != "u0"]
    assert all(u["inverted"] is False and u["inverted_point"] is False for u in others)
    assert inverted_cell(u0) == "unknown (no CI; point < 0)"
    assert not any("every bootstrap draw of the margin is the same number" in w for w in v.warnings)  # NaN, not flat
    assert v.users_table().filter(user="u0")["inverted"].to_list() == [None]


def test_the_report_labels_few_user_population_figures_descriptive():
    from reports.page import render_report
    from validation.judgment.population import descriptive_note
    data = simulate_study(np.random.default_rng(1), n_seeds=3, n_docs=10)
    few = judge(data, Prereg(n_resamples=200), rng=np.random.default_rng(0), fit=False, fit_population=True)
    note = descriptive_note(few.population)
    assert few.population.effects and note is not None
    html = render_report(few, data)
    assert 'id="population-descriptive"' in html and "descriptive only" in html
    assert "a new user (prediction interval) (descriptive only)" in html
    assert json.loads(StudyVerdict(few).json_text())["population"]["effects_descriptive_only"] is True


# ---- item 7: no variance, no interval --------------------------------------------------------

def test_identical_seeds_give_no_interval_not_a_zero_width_one():
    from validation.simulation.simulate import cells_from_matrix
    from validation.stats.intervals import METHODS, bootstrap_interval
    flat = np.full(500, 0.1)
    for m in METHODS:
        iv = bootstrap_interval(flat, 0.1, 0.95, method=m, n_seeds=3, seed_values=np.full(3, 0.1), n_docs=None)
        assert not iv.known, m
    M = np.array([[10.0, 12.0, 12.5], [12.0, 10.0, 12.5], [12.0, 12.0, 10.0], [13.0, 13.0, 13.0],
                  [11.0, 11.0, 11.0]])
    data = cells_from_matrix(np.stack([M] * 3), ("u0", "u1", "u2", "base", "pooled"), ("u0", "u1", "u2"))
    v = judge(data, Prereg(), rng=np.random.default_rng(0), n_resamples=B, fit=False)
    assert all(not u.ci.known and u.inverted is None for u in v.users)
    assert {c.name: c.status.value for c in v.criteria}["strict"] == "INCONCLUSIVE"
    assert not v.gate.passed and any("no interval for" in r for r in v.gate.reasons)
    assert any("every bootstrap draw of the margin is the same number" in w for w in v.warnings)


# ---- item 6: no tail beyond what the draws resolve --------------------------------------------

def test_expanded_percentile_at_three_seeds_does_not_read_the_min_and_max():
    from validation.stats.intervals import bootstrap_interval, expanded_fallback
    rng = np.random.default_rng(5)
    draws = rng.normal(0.1, 0.02, size=10_000)
    sv = np.array([0.07, 0.10, 0.13])
    iv = bootstrap_interval(draws, 0.1, 0.95, method="expanded-percentile", n_seeds=3, seed_values=sv, n_docs=None)
    sat = bootstrap_interval(draws, 0.1, 0.95, method="satterthwaite", n_seeds=3, seed_values=sv, n_docs=None)
    assert (iv.low, iv.high) != (draws.min(), draws.max()) and iv.low < draws.min()   # wider: the t(nu) width
    assert np.allclose(iv, sat)
    assert expanded_fallback(draws, sv, 3, None, 0.95)
    # where the draws resolve the tail (many seeds), the percentiles of the draws as before
    sv12 = rng.normal(0.1, 0.02, size=12)
    iv12 = bootstrap_interval(draws, 0.1, 0.95, method="expanded-percentile", n_seeds=12, seed_values=sv12,
                              n_docs=None)
    assert not expanded_fallback(draws, sv12, 12, None, 0.95)
    assert np.sum(draws < iv12.low) >= 10 and np.sum(draws > iv12.high) >= 10


# ---- item 5: a diverged seed for one user ------------------------------------------------------

def test_a_diverged_seed_for_one_user_uses_that_users_finite_seeds():
    import polars as pl

    from validation.inputs.study import StudyData
    from validation.stats.intervals import bootstrap_interval
    rng = np.random.default_rng(9)
    draws = rng.normal(0.1, 0.02, size=2000)
    sv = np.array([0.08, 0.11, np.nan])
    for m in ("student-t", "satterthwaite", "cochran-cox", "share-blend"):
        three = bootstrap_interval(draws, 0.1, 0.95, method=m, n_seeds=3, seed_values=sv, n_docs=20)
        two = bootstrap_interval(draws, 0.1, 0.95, method=m, n_seeds=2, seed_values=sv[:2], n_docs=20)
        assert np.allclose(three, two), m
    data = simulate_study(np.random.default_rng(2), n_seeds=3, n_docs=20)
    bad = (pl.col("seed") == 2) & (pl.col("adapter") == "alice") & (pl.col("eval") == "alice")
    cells = data.cells.with_columns(pl.when(bad).then(pl.lit("diverged")).otherwise(pl.col("status")).alias("status"))
    docs = data.docs.with_columns(pl.when(bad).then(pl.lit("diverged")).otherwise(pl.col("status")).alias("status"))
    v = judge(StudyData(cells=cells, docs=docs), Prereg(fail_on_bad_cells=False), rng=np.random.default_rng(0),
              n_resamples=B, fit=False)
    alice = v.user("alice")
    assert alice.n_seeds_finite == 2 and v.user("bob").n_seeds_finite == 3
    from validation.inputs.arrays import build_arrays
    from validation.stats.design import _doc_df
    k = v.users.index(alice)
    doc_df = _doc_df(build_arrays(StudyData(cells=cells, docs=docs)))[k]
    direct = bootstrap_interval(alice.draws_margin, alice.margin, 0.95, method=v.bootstrap.method, n_seeds=2,
                                seed_values=alice.seed_margins[:2], n_docs=20, doc_df=doc_df)
    assert alice.ci.known and np.allclose(alice.ci, direct)
    assert any("fewer finite seeds than the study's 3" in w and "alice 2" in w for w in v.warnings)
    row = next(u for u in json.loads(StudyVerdict(v).json_text())["users"] if u["user"] == "alice")
    assert row["n_seeds_finite"] == 2
