"""The report's first screen at a laptop size, in headless Chromium: the one-sentence answer is
visible without scrolling, the calibration legend is not cut off, names in the manifest's
per-user table are not broken letter by letter. A screenshot of the first screen is written to
`$REPORT_SCREENSHOT_DIR` when set (to look at), else to tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import reports
from tests.support import examples
from tests.support.browser import Chromium, missing
from validation.study_verdict import StudyVerdict
from validation.text.summary_sentence import summary_sentence

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(missing() is not None, reason=missing() or ""),
]

LAPTOP = (1366, 768)

_PROBE = """JSON.stringify((() => {
  const a = document.getElementById('answer');
  const r = a.getBoundingClientRect();
  const lines = el => { const g = document.createRange(); g.selectNodeContents(el);
                        return new Set(Array.from(g.getClientRects()).map(x => Math.round(x.top))).size; };
  const col = t => t.rows[0] ? Array.from(t.rows[0].cells).findIndex(c => c.textContent === 'name') : -1;
  const users = Array.from(document.querySelectorAll('table.records')).find(t => col(t) >= 0);
  const k = users ? col(users) : -1;
  const names = users ? Array.from(users.rows).slice(1).map(tr => [tr.cells[k].textContent, lines(tr.cells[k])]) : [];
  const legend = Array.from(document.querySelectorAll('#chart-calibration svg text')).map(t => t.textContent);
  return {top: r.top, bottom: r.bottom, height: window.innerHeight, scrollY: window.scrollY,
          text: a.innerText, title: document.title, names: names, legend: legend,
          status: window.__reportStatus || null};
})())"""


def _open(browser: Chromium, path: Path, shot: Path) -> dict:
    with browser.open_page(path) as opened:
        probe = json.loads(opened.page.evaluate(_PROBE))
        opened.page.screenshot(path=shot)
    return probe


def test_the_answer_is_on_the_first_screen_at_laptop_size(tmp_path):
    from validation.calibrate import calibration_for_study

    verdict, data = examples.full_study(seed=0, n_resamples=500, locked=True)
    calibration, _ = calibration_for_study(data, cache_dir=tmp_path / "cal", n_experiments=40,
                                           n_resamples=100)
    path = reports.write_report(StudyVerdict(verdict, calibration=calibration), data, tmp_path / "report.html")
    shots = Path(os.environ.get("REPORT_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with Chromium(width=LAPTOP[0], height=LAPTOP[1]) as browser:
        p = _open(browser, path, shots / "report-first-screen.png")
    assert p is not None and p["status"] is not None and p["status"]["ok"], p
    assert p["scrollY"] == 0 and p["height"] == LAPTOP[1]
    assert 0 <= p["top"] and p["bottom"] <= LAPTOP[1], f"answer at {p['top']}-{p['bottom']} px"
    assert p["text"] == summary_sentence(verdict)
    assert p["title"] == f"Run {data.manifest.run_id}, {data.manifest.created[:10]}"
    # the calibration legend's title is drawn whole (Vega ends a cut text with an ellipsis)
    assert any("for catastrophic)" in t for t in p["legend"]) and not any("…" in t for t in p["legend"])
    # the manifest's per-user table: every name on one line
    assert p["names"] and all(n == 1 for _, n in p["names"]), p["names"]
