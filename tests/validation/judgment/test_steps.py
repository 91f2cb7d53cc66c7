"""One study, one pass (issue 24): every training-step count is bootstrapped once, with one set of
draws shared by the verdict at each count and the step analysis (validation.judgment.steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.validation.inputs.test_sweep import _prereg, _tables, _write
from validation.contract.prereg import Prereg
from validation.contract.prereg_check import Settings
from validation.exploratory.steps import analyze_resampled, analyze_steps
from validation.inputs.sweep import load_steps
from validation.stats import bootstrap
from validation.verdict import main


def test_a_sweep_is_bootstrapped_once_with_one_set_of_draws(tmp_path, monkeypatch):
    cells, docs = _tables((25, 100, 400))
    cp, dp = _write(tmp_path, cells, docs)
    drawn = []   # every draw of the counts' bootstrap, whichever module makes it (the similarity has its own)
    for module in ("validation.judgment.study", "validation.judgment.steps", "validation.exploratory.steps"):
        monkeypatch.setattr(f"{module}.draw_weights",
                            lambda a, b, rng: drawn.append(b) or bootstrap.draw_weights(a, b, rng), raising=False)
    out = tmp_path / "out"
    code = main(["--cells", str(cp), "--docs", str(dp), "--prereg", str(_prereg(tmp_path, 100)), "--out", str(out),
                 "--no-report", "--no-calibration"])
    assert code in (0, 1)
    assert drawn == [200]   # one set of draws for the three counts, the verdict and the step analysis
    v = json.loads((out / "verdict.json").read_text())
    assert v["steps_analysis"]["steps"] == [25, 100, 400] and list(v["steps"]["exploratory"]) == ["25", "400"]
    for u, s in zip(v["users"], v["steps_analysis"]["users"], strict=True):
        assert {c["steps"]: c for c in s["margin"]}[100]["value"] == u["margin"]


def test_the_shared_draws_give_the_figures_of_separate_bootstraps(tmp_path):
    from validation.judgment.steps import judge_exploratory, resample_counts
    cells, docs = _tables((25, 100, 400))
    cp, dp = _write(tmp_path, cells, docs)
    study = load_steps(cells=cp, docs=dp)
    settings = Settings(Prereg(n_resamples=200), rng_seed_flag=7)
    resampled = resample_counts(study, settings)
    assert len({id(r.weights) for r in resampled.values()}) == 1
    shared = analyze_resampled(sorted(resampled.items()), settings.prereg, primary=100)
    alone = analyze_steps(study.cells, study.docs, settings.prereg, rng=np.random.default_rng(7), primary=100)
    assert shared.to_json() == alone.to_json()
    with_shared = judge_exploratory(study, 100, settings, resampled=resampled)
    separate = judge_exploratory(study, 100, settings)
    assert with_shared.to_json() == separate.to_json()


def test_counts_resampled_apart_are_refused(tmp_path):
    from validation.judgment.steps import resample_counts
    cells, docs = _tables((25, 100))
    cp, dp = _write(tmp_path, cells, docs)
    study = load_steps(cells=cp, docs=dp)
    a = resample_counts(study, Settings(Prereg(n_resamples=200), rng_seed_flag=1))
    b = resample_counts(study, Settings(Prereg(n_resamples=200), rng_seed_flag=2))
    with pytest.raises(ValueError, match="one set of draws"):
        analyze_resampled([(25, a[25]), (100, b[100])], Prereg(n_resamples=200))
