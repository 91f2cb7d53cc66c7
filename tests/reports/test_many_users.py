"""The report and the terminal at 50 users: charts summarize instead of one panel per user, tables
fold, the matrix follows the similarity clustering, the page stays a reasonable size, and every
chart draws in a real browser (tests/support/browser.py)."""

from __future__ import annotations

import re

import pytest

import reports
from reports import tables
from reports.page import chart_sections, render_report
from tests.support import examples
from tests.support.browser import Chromium, missing
from validation.text.outputs import TERMINAL_USERS

N_USERS = 50
PAGE_BYTES = 3_000_000   # measured 2.1 MB at 50 users (the inline Vega bundle alone is 0.9 MB)


@pytest.fixture(scope="module")
def study():
    return examples.many_users_study(n_users=N_USERS)


def test_matrix_is_in_tree_order_with_one_leave_one_out_row(study):
    result, data = study
    matrix, _ = tables.matrix_table(result.verdict, data, result.similarity)
    order = result.similarity.order
    cols = matrix.filter(matrix["adapter"] == order[0]).sort("col_order")["eval"].to_list()
    assert cols == list(order) and order != tuple(sorted(order))   # the planted groups reorder it
    controls = sorted(set(matrix.filter(matrix["group"] == "controls")["adapter"].to_list()))
    assert controls == ["base", tables.LOO_ROW, "pooled"]
    loo = matrix.filter(matrix["adapter"] == tables.LOO_ROW)
    assert loo.height == N_USERS


def test_charts_summarize_and_the_page_stays_small(study):
    verdict, data = study
    sections = {s.key: s for s in chart_sections(verdict, data)}
    for key in ("matrix", "margins", "seed_margins", "decomposition", "training", "bootstrap",
                "population", "similarity"):
        assert sections[key].chart is not None, key
    # one decomposition layer (a tick per user), not a facet of 50 panels; 6 bootstrap panels
    assert "facet" not in sections["decomposition"].chart.to_dict()
    assert len(sections["bootstrap"].chart.to_dict()["vconcat"]) == 6
    html = render_report(verdict, data)
    size = len(html.encode())
    assert size < PAGE_BYTES, f"{size} bytes"
    assert re.search(r"<details><summary>50 users, sorted by margin", html)
    assert f"{len(data.cells)} measured cells" in html and "every cell is in cells.parquet" in html
    assert html.count("<tr") < 2_400        # the cells table is capped at tables.CELL_ROWS rows
    assert 'id="population-shares"' in html and "POPULATION_SHARE" in html


def test_terminal_folds_the_user_tables(study):
    result, _ = study
    text = result.text()
    lines = text.splitlines()
    assert sum(line.startswith("user") and "%" in line for line in lines) <= 2 * TERMINAL_USERS + 2
    assert "50 users, sorted by margin: the 10 lowest and 10 highest shown" in text
    assert "sorted by loo -> own" in text
    assert "population (50 users" in text and "share with margin >= 5%" in text
    assert len(lines) < 110, len(lines)
    assert "; as a population: " in lines[1]


@pytest.mark.browser
@pytest.mark.skipif(missing() is not None, reason=missing() or "")
def test_fifty_users_draw_in_the_browser(study, tmp_path):
    verdict, data = study
    path = reports.write_report(verdict, data, tmp_path / "report.html")
    with Chromium() as browser:
        load = browser.load(path)
    assert load.status is not None and load.status["ok"], load.status
    assert load.console_errors == () and load.refused_requests == ()
    drawn = {c.id: c for c in load.charts}
    for key in ("matrix", "margins", "seed_margins", "decomposition", "training", "bootstrap",
                "population", "similarity"):
        assert drawn[f"chart-{key}"].drew, drawn.get(f"chart-{key}")
    assert drawn["chart-matrix"].marks.get("rect", 0) >= N_USERS * N_USERS
    assert drawn["chart-margins"].marks.get("symbol", 0) >= N_USERS
    # summarized: no chart is taller than about a screen and a half per 50 users
    tallest = max(c.height for c in load.charts)
    assert tallest < 1400, {c.id: c.height for c in load.charts}
    assert load.render_ms < 15000, f"rendered in {load.render_ms:.0f} ms"


@pytest.mark.browser
@pytest.mark.skipif(missing() is not None, reason=missing() or "")
def test_fifty_user_page_is_a_few_screens_long_with_tables_folded(study, tmp_path):
    verdict, data = study
    path = reports.write_report(verdict, data, tmp_path / "report.html")
    with Chromium() as browser, browser.open_page(path) as page:
        height = page.page.evaluate("() => document.documentElement.scrollHeight")
    # measured: 10,436 px (1280 px wide) with the tables folded; 21,364 px before folding them
    assert height < 12_000, height


def test_step_summary_folds_the_user_tables(study):
    from validation.text.outputs import markdown_summary

    text = markdown_summary(study[0].verdict)
    assert text.count("<details>") == 1 and text.count("</details>") == 1
    assert "Population: " in text
