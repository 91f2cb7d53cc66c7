"""`python -m validation.calibrate --study steps` (validation/calibration/steps.py): the figures it
reports, its JSON, determinism, and its refusals. Rates themselves: docs/calibration.md."""

import json

import numpy as np
import pytest

from validation.calibrate import main
from validation.calibration.plan import regime_params
from validation.calibration.steps import (
    calibrate_steps,
    cluster_experiment,
    format_steps_table,
    interaction_experiment,
    write_steps_calibration,
)
from validation.contract.prereg import Prereg


def test_small_calibration_has_every_figure_and_round_trips(tmp_path):
    res = calibrate_steps(Prereg(), seeds=(3,), regimes=("seed-dominated",), n_experiments=2,
                          n_resamples=50, model_fits=1, rng_seed=1)
    keys = {(f.study, f.scenario, f.measure) for f in res.figures}
    assert keys == {("interaction", "null", "coverage"), ("interaction", "null", "false-positive"),
                    ("interaction", "effect", "coverage"), ("interaction", "effect", "power"),
                    ("interaction-model", "null", "false-positive"), ("interaction-model", "effect", "power"),
                    ("cluster", "null", "false-positive"), ("cluster", "effect", "power")}
    from validation.calibration.steps import GROUP_PENALTIES, SLOPE_EFFECTS
    assert sorted(f.effect for f in res.figures if f.study == "interaction" and f.measure == "power") == \
        sorted(SLOPE_EFFECTS)
    assert sorted(f.effect for f in res.figures if f.study == "cluster" and f.measure == "power") == \
        sorted(GROUP_PENALTIES)
    for f in res.figures:
        assert 0 <= f.rate <= 1 and f.n == (2 if f.study == "cluster" else 3 if f.study == "interaction-model" else 6)
    doc = json.loads(write_steps_calibration(res, tmp_path).read_text())
    assert doc["schema"] == "normadapt-calibration-steps/1" and len(doc["figures"]) == len(res.figures)
    again = calibrate_steps(Prereg(), seeds=(3,), regimes=("seed-dominated",), n_experiments=2,
                            n_resamples=50, model_fits=1, rng_seed=1)
    assert [f.rate for f in again.figures] == [f.rate for f in res.figures]
    assert "false-positive" in format_steps_table(res)


def test_planted_effects_are_found_and_nulls_are_not():
    """Large planted effects: every user's slope named, both groups found; a null study with
    equal adapters has no split near certain."""
    from dataclasses import replace
    params = replace(regime_params("seed-dominated", users=3, n_docs=50), snapshot_sd=0.005)
    r = interaction_experiment(params, 0.04, 5, Prereg(), 200, np.random.default_rng(0), fit=False)
    assert list(r["direction"]) == ["rises"] * 3 and np.all(r["truth"] == 0.04)
    top, found = cluster_experiment((0, 0, 0, 1, 1, 1), 0.05, 5, Prereg(), 200, np.random.default_rng(0))
    assert found and top == 1.0
    top0, found0 = cluster_experiment(None, 0.05, 5, Prereg(), 200, np.random.default_rng(0))
    assert not found0 and top0 < 0.95


def test_cli_refuses_a_run_design(tmp_path, capsys):
    assert main(["--study", "steps", "--from-run", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--study steps" in capsys.readouterr().err
    assert not (tmp_path / "calibration_steps.json").exists()
    with pytest.raises(SystemExit):
        main(["--study", "nope"])


def test_step_trend_calibration_has_every_row_and_its_cli_writes_json(tmp_path, capsys):
    """Issue 23's quick calibration: one sweep per design, every test x design row present,
    deterministic, and `--study step-trends` writes its file (the rates: docs/calibration.md)."""
    from validation.calibration.steps import calibrate_step_trends, format_trend_table, trend_designs
    kw = dict(seeds=(3,), regimes=("seed-dominated",), n_experiments=1, n_resamples=50, model_fits=1, rng_seed=2)
    res = calibrate_step_trends(Prereg(), **kw)
    rows = {(f.test, f.trends, f.measure) for f in res.figures}
    for test in ("interaction", "slope", "wald"):
        assert {(test, "none", "false-positive"), (test, "documents", "false-positive"),
                (test, "none", "power"), (test, "documents", "power")} <= rows
    assert {("interaction", "cells", "false-positive"), ("wald", "cells", "false-positive"),
            ("slope", "cells", "coverage")} <= rows
    assert {("wald-user", "documents", "false-positive"), ("wald-user", "none", "power")} <= rows
    assert len(trend_designs()) == 5 and all(0 <= f.rate <= 1 for f in res.figures)
    assert [f.rate for f in calibrate_step_trends(Prereg(), **kw).figures] == [f.rate for f in res.figures]
    assert "documents" in format_trend_table(res)
    assert main(["--study", "step-trends", "--regime", "document-dominated", "--experiments", "1",
                 "--resamples", "20", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "calibration_step_trends.json").read_text())
    assert doc["schema"] == "normadapt-calibration-step-trends/1" and doc["figures"]
    assert main(["--study", "step-trends", "--docs", "20", "--out", str(tmp_path)]) == 2
    assert "--study step-trends" in capsys.readouterr().err
