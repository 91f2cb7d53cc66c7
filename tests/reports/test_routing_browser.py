"""The report's routing section (issue 25) in a real browser: the noise curve and the pairs chart
draw their marks offline (the pattern of tests/reports/test_browser.py)."""

from __future__ import annotations

import numpy as np
import pytest

import reports
from tests.support.browser import Chromium, missing
from tests.support.examples import full_study
from tests.support.routing import STORAGE, default_rows, with_rows
from validation.contract.prereg import Prereg
from validation.judgment.study import judge

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(missing() is not None, reason=missing() or ""),
]


def test_routing_charts_draw_offline(tmp_path):
    _, data = full_study(n_resamples=200, personalization=0.3)
    data = with_rows(data, default_rows(data), storage=STORAGE)
    verdict = judge(data, Prereg(), rng=np.random.default_rng(1), n_resamples=200)
    path = reports.write_report(verdict, data, tmp_path / "report.html")
    with Chromium() as browser:
        load = browser.load(path)
    assert load.status is not None and load.status["ok"], load.status
    assert load.console_errors == (), load.console_errors
    assert load.refused_requests == ()
    charts = {c.id: c for c in load.charts}
    noise, pairs = charts["chart-routing_noise"], charts["chart-routing_pairs"]
    assert noise.drew and pairs.drew
    # 3 users x 4 noise levels: a point and an interval bar each
    assert noise.marks.get("symbol", 0) >= 12 and noise.marks.get("rule", 0) >= 12, noise.marks
    # 3 pairs x 2 contributors, own vs average and average vs base
    assert pairs.marks.get("symbol", 0) >= 12, pairs.marks
    assert "Is routing non-optional?" in load.text and "9.22 KB per user" in load.text
