"""Issue 14's report defects, without a browser: the answer sentence and title at the top, no
reference to history the reader lacks, controls apart from users in the training curves, the
calibration legend's title in short lines, hashes (not names) allowed to break anywhere."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re

import polars as pl
import pytest

import reports
from reports import charts, tables
from reports.calibration import calibration_chart
from reports.page import page_title
from tests.support import examples
from validation.text.summary_sentence import summary_sentence


@pytest.fixture(scope="module")
def full():
    return examples.full_study(seed=0, n_resamples=300)


@pytest.fixture(scope="module")
def full_html(full):
    return reports.render_report(*full)


def test_the_answer_sentence_opens_the_page_right_under_the_title(full, full_html):
    verdict, _ = full
    body = full_html[full_html.index("<body>"):]
    h1 = body.index("<h1>")
    answer = body.index('id="answer"')
    assert h1 < answer < body.index('id="prereg-banner"') < body.index('id="gate"')
    shown = re.search(r'<p class="answer" id="answer">(.*?)</p>', body, re.DOTALL).group(1)
    assert html.unescape(shown) == summary_sentence(verdict)


def test_title_is_the_runs_name_and_date(full, full_html):
    _, data = full
    created = data.manifest.created[:10]
    assert page_title(data) == f"Run {data.manifest.run_id}, {created}"
    assert f"<title>Run {data.manifest.run_id}, {created}</title>" in full_html
    no_manifest = dataclasses.replace(data, manifest=None)
    assert page_title(no_manifest, today=dt.date(2026, 1, 2)).endswith(", judged 2026-01-02")


def test_no_reference_to_earlier_reports(full_html):
    assert "earlier report" not in full_html


def test_training_curves_put_controls_apart_from_users(full):
    _, data = full
    log = tables.training_table(data)
    log = pl.concat([log, log.filter(pl.col("adapter") == "pooled").with_columns(
        pl.lit("loo:alice").alias("adapter"))])
    spec = charts.training_curves(log, data.users).to_dict()
    top, bottom = spec["vconcat"]
    rows = spec["datasets"]
    users_panel = {r["adapter"] for r in rows[top["data"]["name"]]}
    controls_panel = {r["adapter"] for r in rows[bottom["data"]["name"]]}
    assert users_panel == set(data.users)
    # every control (pooled, and the loo:<user> rows the example carries) and nothing else
    assert controls_panel == set(log["adapter"].to_list()) - set(data.users)
    assert {"pooled", "loo:alice"} <= controls_panel
    assert bottom["title"]["text"] == "controls (not users)"
    only_users = charts.training_curves(log.filter(pl.col("adapter").is_in(list(data.users))),
                                        data.users).to_dict()
    assert "vconcat" not in only_users  # no empty control row


def test_calibration_legend_title_is_short_lines():
    import tempfile

    import numpy as np

    from validation.calibrate import calibration_for_study
    from validation.simulation.simulate import simulate_study

    data = simulate_study(np.random.default_rng(0), n_seeds=3, n_docs=10)
    with tempfile.TemporaryDirectory() as cache:
        design, _ = calibration_for_study(data, cache_dir=cache, n_experiments=10, n_resamples=50)
    spec = calibration_chart(design).to_dict()
    title = spec["hconcat"][1]["spec"]["encoding"]["color"]["title"]
    assert isinstance(title, list) and max(len(t) for t in title) <= 20


def test_only_hash_columns_of_manifest_records_break_anywhere(full_html):
    table = full_html[full_html.index('<h3 class="mono">fixture_set.users</h3>'):]
    table = table[:table.index("</table>")]
    assert '<td class="mono hash">' in table
    names = re.findall(r"<tr><td([^>]*)>([^<]*)</td>", table)
    assert names and all(attrs == "" for attrs, _ in names)  # the name column wraps like prose
