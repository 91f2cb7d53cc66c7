"""The step analysis in the outputs: verdict.json `steps_analysis`, the terminal lines, the report
section (only with more than one count) and its chart file; the CLI hook."""

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

import reports
from reports.page import chart_sections
from tests.support.browser import Chromium, missing
from validation import judge
from validation.contract.prereg import Prereg
from validation.exploratory.steps import analyze_steps, split_by_steps
from validation.simulation.simulate import SimParams
from validation.simulation.steps import simulate_steps
from validation.study_verdict import StudyVerdict


def study(n_seeds=3, steps=(25, 100, 400)):
    st = simulate_steps(SimParams(n_docs=(20, 20, 20), snapshot_sd=0.003), 0.10, steps, n_seeds,
                        np.random.default_rng(0), slopes=(-0.03, 0.0, 0.03))
    primary = dict(split_by_steps(st.data.cells, st.data.docs))[100]
    v = judge(primary, Prereg(), rng=np.random.default_rng(5), n_resamples=200)
    a = analyze_steps(st.data.cells, st.data.docs, Prereg(), rng=np.random.default_rng(5), n_resamples=200,
                      primary=100)
    return StudyVerdict(v, steps_analysis=a), primary


def test_primary_count_equals_the_verdict_and_json_and_text_carry_it():
    v, _ = study()
    a = v.steps_analysis
    i = a.steps.index(100)
    for u, vu in zip(a.users, v.verdict.users, strict=True):   # same rng seed: the verdict's own draws
        assert u.margin[i].value == vu.margin and tuple(u.margin[i].ci) == tuple(vu.ci)
    doc = json.loads(v.json_text())
    st = doc["steps_analysis"]
    assert st["steps"] == [25, 100, 400] and st["primary"] == 100 and st["exploratory"] == [25, 400]
    assert [u["margin_slope"]["direction"] for u in st["users"]][::2] == ["falls", "rises"]
    text = v.text()
    assert "training steps 25, 100, 400 (exploratory; criteria read at 100):" in text
    assert "user0: the margin falls with training (slope " in text
    assert "diag x log2(steps), every user: " in text and "descriptive only" in text   # issue 23
    assert st["interaction"]["unit"].startswith("seeds and held-out documents")
    assert json.loads(replace(v, steps_analysis=None).json_text())["steps_analysis"] is None
    assert "training steps" not in replace(v, steps_analysis=None).text()


def test_report_section_only_with_several_counts(tmp_path):
    v, data = study()
    sec = {s.key: s for s in chart_sections(v, data)}
    steps = sec["steps"]
    assert "user2: the margin rises with training" in steps.caption
    assert "diag × log2(steps)" in steps.caption and "(100, dashed)" in steps.caption
    assert "Over every user, diag x log2(steps)" in steps.caption and "descriptive only" in steps.caption
    spec = steps.chart.to_dict()
    assert len(spec["vconcat"]) == 3 and len(spec["vconcat"][0]["hconcat"]) == 3   # users x quantities
    assert "steps" not in {s.key for s in chart_sections(replace(v, steps_analysis=None), data)}
    html = reports.render_report(v, data)
    assert 'id="chart-steps"' in html
    files = reports.write_charts(v, data, tmp_path / "charts", fmt="svg")
    assert any(p.name.startswith("steps") for p in files)


def test_chart_leaves_out_gains_without_controls():
    from reports.exploratory_charts import steps_chart
    v, _ = study()
    t = v.steps_analysis.table().with_columns(
        pl.when(pl.col("quantity") == "margin").then(pl.col("value")).otherwise(None).alias("value"))
    spec = steps_chart(t, 0.95).to_dict()
    assert len(spec["vconcat"][0]["hconcat"]) == 1


def test_cli_hook_is_a_no_op_without_a_steps_column_and_names_bad_input():
    from validation.contract.prereg_check import Settings
    from validation.inputs.sweep import StepsStudy
    from validation.inputs.tables import InputError
    from validation.judgment.steps import resample_counts
    from validation.verdict import _steps_analysis
    v, data = study()
    plain = v.verdict
    settings = Settings(Prereg(), n_resamples_flag=200, rng_seed_flag=5)
    assert _steps_analysis(plain, {}, settings) == (plain, None)
    st = simulate_steps(SimParams(n_docs=(5, 5, 5)), 0.1, (50, 200), 2, np.random.default_rng(1))
    resampled = resample_counts(StepsStudy(st.data.cells, st.data.docs, (50, 200)), settings)
    out = _steps_analysis(plain, resampled, settings, primary=200)[1]
    assert out.steps == (50, 200) and out.primary == 200
    with pytest.raises(InputError, match="primary step count 100 was not trained"):
        _steps_analysis(plain, resampled, settings, primary=100)


def many_users_sweep(n_users=14):
    users = tuple(f"u{k:02d}" for k in range(n_users))
    slopes = np.linspace(-0.03, 0.03, n_users)
    st = simulate_steps(SimParams(users=users, n_docs=(12,) * n_users), 0.10, (25, 100, 400), 3,
                        np.random.default_rng(0), slopes=slopes)
    primary = dict(split_by_steps(st.data.cells, st.data.docs))[100]
    v = judge(primary, Prereg(), rng=np.random.default_rng(5), n_resamples=200, fit=False)
    a = analyze_steps(st.data.cells, st.data.docs, Prereg(), rng=np.random.default_rng(5), n_resamples=200,
                      primary=100, fit=False)
    return StudyVerdict(v, steps_analysis=a), primary


def test_many_users_get_one_line_each_and_sorted_slopes_not_a_panel_row_each(tmp_path):
    """Above 12 users the steps section is one panel per quantity (a line per user, the median)
    and a sorted slope chart; the counts of rising / flat / falling users are in the caption."""
    v, data = many_users_sweep()
    sec = {s.key: s for s in chart_sections(v, data)}["steps"]
    spec = sec.chart.to_dict()
    assert len(spec["vconcat"]) == 2                      # the panels, then the slopes: not 14 rows
    dirs = [u.trend.direction for u in v.steps_analysis.users]
    assert f"the margin rises for {dirs.count('rises')}, is flat for {dirs.count('flat')} and falls for " \
           f"{dirs.count('falls')} users" in sec.caption
    assert dirs.count("rises") >= 3 and dirs.count("falls") >= 3   # planted -3 .. +3 pp per doubling
    few, fdata = study()
    assert len({s.key: s for s in chart_sections(few, fdata)}["steps"].chart.to_dict()["vconcat"]) == 3


@pytest.mark.browser
@pytest.mark.skipif(missing() is not None, reason=missing() or "")
def test_many_users_steps_summary_draws_in_the_browser(tmp_path):
    v, data = many_users_sweep()
    path = reports.write_report(v, data, tmp_path / "report.html")
    with Chromium() as browser:
        load = browser.load(path)
    assert load.console_errors == () and load.refused_requests == ()
    steps = {c.id: c for c in load.charts}["chart-steps"]
    assert steps.drew and steps.height < 1000, steps


def test_nothing_resampled_gives_no_slope_interval_and_an_unknown_trend():
    """One seed and no documents: the slope has no interval (null in verdict.json, never [slope,
    slope]) and its direction is `unknown`, not `flat`."""
    st = simulate_steps(SimParams(n_docs=(5, 5, 5)), 0.1, (25, 100, 400), 1, np.random.default_rng(2))
    a = analyze_steps(st.data.cells, None, Prereg(), rng=np.random.default_rng(0), n_resamples=200, fit=False)
    assert {u.trend.direction for u in a.users} == {"unknown"}
    assert all(u["margin_slope"]["ci"] == [None, None] for u in a.to_json()["users"])
    assert all("unknown" in u.trend.words and "nan" not in u.trend.words for u in a.users)
