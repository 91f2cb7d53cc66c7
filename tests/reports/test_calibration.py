"""reports/calibration.py: the chart and tables render from a CalibrationResult design."""

from __future__ import annotations

import numpy as np

from validation import Prereg
from validation.calibrate import calibrate, least_favourable
from validation.simulation.simulate import SimParams


def _design():
    return calibrate(SimParams(), Prereg(), seeds=(3,), n_experiments=7, n_resamples=50,
                     n_model_fits=0, rng_seed=3).designs[0]


def test_least_favourable_configurations():
    (s_name, strict), (l_name, lenient) = least_favourable(Prereg(), 3)
    assert (s_name, l_name) == ("strict", "lenient")
    assert strict[0] == 0.10 and np.all(strict[1:] > 0.25)
    assert lenient[0] > 0.2 and np.all(lenient[1:] == 0.05)   # 2 of 3 required


def test_tables_and_chart_render():
    from reports.calibration import calibration_chart, calibration_table, status_rates_table

    d = _design()
    table = calibration_table(d)
    assert table.columns == ["quantity", "value", "note"]
    assert any("coverage, student-t" in q for q in table["quantity"])
    rates = status_rates_table(d)
    assert set(rates["criterion"]) == {"strict", "lenient", "catastrophic"}
    want = d.rates()  # the pre-registered method's, one row each, columns not swapped
    assert rates["relation"].to_list() == [r.relation for r in want]
    assert rates["pass"].to_list() == [r.pass_rate for r in want]
    assert rates["fail"].to_list() == [r.fail_rate for r in want]
    assert rates["inconclusive"].to_list() == [r.inconclusive_rate for r in want]
    spec = calibration_chart(d).to_dict()
    assert "hconcat" in spec
