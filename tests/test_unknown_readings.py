"""Issue 23, items 6, 7 and 9: unknown reads as unknown. A user without an interval is neither
inverted nor not (verdict.json `inverted: null`, the point reading beside it); a tail the draws
cannot resolve and draws without variance give no interval; the report labels few-user
population figures descriptive, as the terminal does."""

from __future__ import annotations

import json

import numpy as np

from validation.judging import judge
from validation.outputs import inverted_cell, verdict_json
from validation.prereg import Prereg
from validation.simulate import SimParams, simulate_experiment, simulate_study

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
    doc = json.loads(verdict_json(v, None))
    row = next(u for u in doc["users"] if u["user"] == "u0")
    assert row["inverted"] is None and row["inverted_point"] is True
    others = [u for u in doc["users"] if u["user"] != "u0"]
    assert all(u["inverted"] is False and u["inverted_point"] is False for u in others)
    assert inverted_cell(u0) == "unknown (no CI; point < 0)"
    assert v.users_table().filter(user="u0")["inverted"].to_list() == [None]


def test_the_report_labels_few_user_population_figures_descriptive():
    from reports.page import render_report
    from validation.population import descriptive_note
    data = simulate_study(np.random.default_rng(1), n_seeds=3, n_docs=10)
    few = judge(data, Prereg(n_resamples=200), rng=np.random.default_rng(0), fit=False, fit_population=True)
    note = descriptive_note(few.population)
    assert few.population.effects and note is not None
    html = render_report(few, data)
    assert 'id="population-descriptive"' in html and "descriptive only" in html
    assert "a new user (prediction interval) (descriptive only)" in html
    assert json.loads(verdict_json(few, None))["population"]["effects_descriptive_only"] is True
