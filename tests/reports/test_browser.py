"""The report in a real browser: headless Chromium, every network request refused, file:// only.

Driven by Playwright (`tests/support/browser.py`, the `test` extra) launching the system Chromium
(Debian package `chromium`). Screenshots go to `$REPORT_SCREENSHOT_DIR` when set (CI artifacts), else to tmp_path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import reports
from tests.support import examples
from tests.support.browser import Chromium, missing
from validation.study_verdict import StudyVerdict

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(missing() is not None, reason=missing() or ""),
]

# The data marks each chart must have drawn (Vega mark type -> at least this many).
EXPECTED_MARKS = {
    "chart-matrix": {"rect": 1, "text": 1},
    "chart-margins": {"symbol": 1, "rule": 1},
    "chart-seed_margins": {"symbol": 2},
    "chart-decomposition": {"rect": 1},
    "chart-training": {"line": 1},
    "chart-model": {"symbol": 1},
    "chart-bootstrap": {"rect": 10},
    "chart-calibration": {"rect": 2},
}


@pytest.fixture(scope="module")
def browser():
    with Chromium() as b:
        yield b


def _shot_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("REPORT_SCREENSHOT_DIR", tmp_path))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _check_drawn(load, expected_ids):
    assert load.status is not None, "the page never finished embedding its charts"
    assert load.status["ok"], load.status
    assert load.console_errors == (), load.console_errors
    assert load.refused_requests == (), f"the page tried the network: {load.refused_requests}"
    assert sorted(c.id for c in load.charts) == sorted(expected_ids)
    for chart in load.charts:
        assert chart.drew, chart
        for mark, at_least in EXPECTED_MARKS[chart.id].items():
            assert chart.marks.get(mark, 0) >= at_least, (chart.id, chart.marks)


def test_full_study_renders_every_chart_offline(browser, tmp_path):
    from validation.calibrate import calibration_for_study

    verdict, data = examples.full_study(seed=0)
    calibration, _ = calibration_for_study(data, cache_dir=tmp_path / "cal")
    path = reports.write_report(StudyVerdict(verdict, calibration=calibration), data, tmp_path / "report.html")
    load = browser.load(path)
    _check_drawn(load, EXPECTED_MARKS)
    assert load.render_ms < 5000, f"rendered in {load.render_ms:.0f} ms"
    assert "NOT PRE-REGISTERED" in load.text
    assert "Gate:" in load.text
    (_shot_dir(tmp_path) / "report-full.png").write_bytes(load.screenshot_png)
    assert load.screenshot_png[:4] == b"\x89PNG" and len(load.screenshot_png) > 50_000


def test_external_single_seed_matrix_renders_with_gaps_explained(browser, tmp_path):
    path = reports.write_report(*examples.external_matrix(seed=0), tmp_path / "report.html")
    load = browser.load(path)
    _check_drawn(load, ["chart-matrix", "chart-margins", "chart-model"])
    for gap in ("Not shown: Only one seed", "Not shown: Calibration not computed", "Not shown: No control rows",
                "Not shown: No training log", "Not shown: No bootstrap draws",
                "No run manifest"):
        assert gap in load.text
    (_shot_dir(tmp_path) / "report-external.png").write_bytes(load.screenshot_png)
    assert load.screenshot_png[:4] == b"\x89PNG"


def test_harness_refuses_and_reports_network_requests(browser, tmp_path):
    # the offline guarantee is only as good as the harness: a page that reaches out must be caught
    page = tmp_path / "leaky.html"
    page.write_text('<html><body><div class="chart" id="c"></div><script>'
                    'fetch("http://example.invalid/x").catch(() => {}).finally(() => {'
                    'window.__reportStatus = {ok: true, ms: performance.now()};});'
                    '</script></body></html>')
    load = browser.load(page, screenshot=False)
    assert load.status is not None
    assert "http://example.invalid/x" in load.refused_requests
    assert load.console_errors  # Chromium logs the refused load as an error


def test_harness_sees_a_chart_that_failed(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<html><body><div class="chart" id="c"></div><script>'
                    'console.error("boom"); window.__reportStatus = {ok: false, ms: 1};'
                    '</script></body></html>')
    load = browser.load(page, screenshot=False)
    assert load.console_errors == ("boom",)
    assert not load.charts[0].drew


def test_step_sweep_draws_the_steps_chart(browser, tmp_path):
    """A run with several step counts gets the margin-and-gains-versus-steps chart (issue 13)."""
    from tests.reports.test_steps import study

    verdict, data = study()
    path = reports.write_report(verdict, data, tmp_path / "report.html")
    load = browser.load(path)
    steps = [c for c in load.charts if c.id == "chart-steps"]
    assert steps and steps[0].drew, load.charts
    assert steps[0].marks.get("area", 0) >= 9 and steps[0].marks.get("line", 0) >= 9, steps[0].marks
    assert load.console_errors == (), load.console_errors
    assert "the margin falls with training" in load.text
    (_shot_dir(tmp_path) / "report-steps.png").write_bytes(load.screenshot_png)
