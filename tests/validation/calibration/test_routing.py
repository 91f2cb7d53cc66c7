"""`python -m validation.calibrate --study routing` (validation/calibration/routing.py): the planted
routing rows sit at the criteria's bars in the simulator's truth, they are rows of the same noise
model as the others, the verdict reads them back, and CI's quick calibration has a row of each
criterion (the measured rates: docs/calibration.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from common.contract import avg_name, ens_name, noise_name
from validation import Prereg, judge
from validation.calibrate import main
from validation.calibration.plan import FAR_ABOVE, REGIMES, regime_params
from validation.calibration.routing import (
    CRITERIA,
    POWER_STEP,
    calibrate_routing,
    planted_rows,
    targets,
    true_figures,
)
from validation.simulation.simulate import simulate_experiment


def _study(regime: str, scenario: str, n_seeds: int = 3, rng_seed: int = 0, n_docs: int = 50, **over):
    prereg = Prereg()
    params = regime_params(regime, users=3, n_docs=n_docs)
    if over:
        from dataclasses import replace
        params = replace(params, **over)
    t = targets(prereg, 3, scenario)
    rows = planted_rows(params.users, prereg.noise_sigma, t)
    study = simulate_experiment(params, t.margin, n_seeds, np.random.default_rng(rng_seed), rows=rows)
    names = params.adapters + tuple(rows(study.truth.expected[:len(params.adapters)]))
    return prereg, params, t, study, names


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_the_boundary_figures_sit_exactly_at_the_bars(regime):
    prereg, params, t, study, names = _study(regime, "boundary")
    truth = true_figures(study.truth.expected, names, params.users, prereg.noise_sigma)
    assert truth["routing"] == pytest.approx(prereg.routing_margin, abs=1e-12)
    assert truth["averaging"] == pytest.approx(prereg.averaging_margin, abs=1e-12)
    assert truth["noise"] == pytest.approx(prereg.strict_margin, abs=1e-12)
    assert np.allclose(study.truth.margins, prereg.strict_margin + FAR_ABOVE)
    # every other figure is far above its bar
    assert min(t.routing[1:]) == pytest.approx(prereg.routing_margin + FAR_ABOVE)
    assert sorted(t.averaging.values())[1] == pytest.approx(prereg.averaging_margin + FAR_ABOVE)
    power = targets(prereg, 3, "power")
    assert set(np.round(power.noise, 12)) == {round(prereg.strict_margin + POWER_STEP, 12)}


def test_the_routing_rows_are_trained_rows_of_the_same_model():
    """Every planted row is in the tables, scored on every user's text, and varies with the seed
    (seed x adapter terms of its own), unlike `base`; the study without rows is unchanged."""
    prereg, params, _, study, names = _study("seed-dominated", "boundary", n_seeds=4)
    cells = study.data.cells
    assert set(cells["adapter"].unique()) == set(names)
    for name in (ens_name("user0"), avg_name("user0", "user1"), noise_name("user2", prereg.noise_sigma)):
        row = cells.filter(cells["adapter"] == name)
        assert row.height == 4 * 3
        assert row.filter(row["eval"] == "user0")["ppl"].std() > 0
    plain = simulate_experiment(params, 0.3, 4, np.random.default_rng(0))
    assert set(plain.data.cells["adapter"].unique()) == set(params.adapters)


def test_the_verdict_reads_the_planted_truth():
    """With many documents and little noise the verdict's routing figures are the planted ones."""
    prereg, params, _, study, names = _study("document-dominated", "boundary", n_seeds=5, n_docs=400,
                                             doc_adapter_sd=0.002)
    v = judge(study.data, prereg, rng=np.random.default_rng(1), n_resamples=100, fit=False)
    r = v.routing
    ens = next(c for c in r.generic if c.user == "user0" and c.against == ens_name("user0"))
    pair = next(p for p in r.pairs if (p.a, p.b) == ("user0", "user1"))
    noisy = next(c for c in r.curve if c.row == noise_name("user0", prereg.noise_sigma))
    assert ens.gain == pytest.approx(prereg.routing_margin, abs=0.005)
    assert pair.own_vs_average[0].gain == pytest.approx(prereg.averaging_margin, abs=0.005)
    assert noisy.gain == pytest.approx(prereg.strict_margin, abs=0.005)
    assert {c.name for c in r.criteria} == set(CRITERIA)


def test_quick_routing_calibration_has_every_criterion(tmp_path, capsys):
    """CI's quick calibration of the routing criteria: one design, a few experiments, every row."""
    res = calibrate_routing(seeds=(3,), regimes=("mixed",), n_experiments=3, n_resamples=60)
    figures = [r.figure for r in res.rows]
    for c in CRITERIA:
        assert f"{c.upper()}: false PASS at the least-favourable boundary" in figures
        assert f"{c.upper()}: coverage of the at-bar figure" in figures
        assert f"{c.upper()}: power, every figure {POWER_STEP:.0%} above the bar" in figures
    fp = [r for r in res.rows if r.kind == "false positive"]
    assert all(r.nominal == pytest.approx(0.025) and r.n == 3 for r in fp)
    assert all(r.within is None and math.isnan(r.nominal) for r in res.rows if r.kind == "power")
    again = calibrate_routing(seeds=(3,), regimes=("mixed",), n_experiments=3, n_resamples=60)
    assert [r.value for r in again.rows] == [r.value for r in res.rows]      # deterministic
    assert main(["--study", "routing", "--seeds", "3", "--regime", "mixed", "--experiments", "2",
                 "--resamples", "30", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "calibration_routing.json").read_text())
    assert doc["schema"] == "normadapt-calibration-routing/1" and len(doc["rows"]) == 9
    out = capsys.readouterr().out
    assert "| NOISE: false PASS at the least-favourable boundary |" in out
    assert "AVERAGING: false PASS at the least-favourable boundary, pooled over 1 design(s): " in out
    assert main(["--study", "routing", "--users", "4"]) == 2
    assert "`--study routing` simulates its own designs" in capsys.readouterr().err
