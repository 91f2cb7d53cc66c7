"""Issue 23's small defects (calib2): `--require-signature` with external `--cells` is refused,
and a study in which no user could be measured says so instead of printing "nan% (0 of 0)"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from validation import verdict as verdict_cmd
from validation.simulation.simulate import diverge, simulate_study

PREREG = Path(__file__).resolve().parents[1] / "data" / "prereg_fast.toml"


def _cells(tmp_path: Path, *, diverged: bool) -> Path:
    data = simulate_study(np.random.default_rng(0), n_seeds=2, n_docs=8, personalization=0.2)
    if diverged:
        for seed in data.cells["seed"].unique().to_list():
            for adapter in data.cells["adapter"].unique().to_list():
                data = diverge(data, seed, adapter)
    p = tmp_path / "cells.csv"
    data.cells.select(["seed", "adapter", "eval", "nll_sum", "n_tokens", "n_bytes", "status"]).write_csv(p)
    return p


def test_require_signature_with_external_cells_is_refused_naming_both_flags(tmp_path, capsys):
    cells = _cells(tmp_path, diverged=False)
    out = tmp_path / "out"
    code = verdict_cmd.main(["--cells", str(cells), "--require-signature", "--prereg", str(PREREG),
                             "--no-calibration", "--no-report", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "`--require-signature`" in err and "`--cells`" in err and "--run DIR" in err
    assert not out.exists(), "a refusal writes nothing"


@pytest.mark.parametrize("report", [False, True])
def test_no_user_measured_reads_as_such_not_nan(tmp_path, capsys, report):
    cells = _cells(tmp_path, diverged=True)
    out = tmp_path / "out"
    verdict_cmd.main(["--cells", str(cells), "--prereg", str(PREREG), "--no-calibration", "--out", str(out)]
                     + ([] if report else ["--no-report"]))
    text = capsys.readouterr().out
    if report:
        text = (out / "report.html").read_text()
    assert "no user could be measured" in text
    assert "nan%" not in text and "0 of 0" not in text


def test_the_step_figures_share_one_rate_and_one_settings_record():
    from validation.calibration.steps import (
        BinomialRate,
        RateFigure,
        StepsCalibration,
        SweepCalibration,
        TrendCalibration,
        TrendFigure,
    )
    assert issubclass(RateFigure, BinomialRate) and issubclass(TrendFigure, BinomialRate)
    assert RateFigure.se is TrendFigure.se is BinomialRate.se
    assert issubclass(StepsCalibration, SweepCalibration) and issubclass(TrendCalibration, SweepCalibration)
    f = TrendFigure("slope", "mixed", 3, "none", 0.0, 0.0, "coverage", n=100, rate=0.95)
    assert abs(f.se - (0.95 * 0.05 / 100) ** 0.5) < 1e-12


def _section(path: Path, heading: str) -> str:
    text = path.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end > 0 else None]


def test_the_preregistration_rules_are_stated_once_in_gate_md():
    docs = Path(__file__).resolve().parents[2] / "docs"
    methods = _section(docs / "methods.md", "## 9. The gate and exit codes")
    gate = _section(docs / "gate.md", "## 1. Pre-registration means what it says")
    assert "gate.md#1-pre-registration-means-what-it-says" in methods
    for rule in ("--allow-prereg-change", "--accept-not-preregistered", "--n-resamples", "even of a comment"):
        assert rule in gate, rule
        assert rule not in methods, f"methods.md section 9 restates {rule!r}: link to gate.md section 1"
