"""The model's diagnostics in the study's words on the terminal; the raw optimizer and
statsmodels text only in verdict.json (and the report)."""

import json
import math
from dataclasses import replace

import numpy as np

from validation import Prereg, judge
from validation.simulation.simulate import simulate_study
from validation.study_verdict import StudyVerdict
from validation.text.model_reading import diagnostic_readings, effect_line, is_raw_model_warning
from validation.text.outputs import verdict_text

RAW_FALLBACK = ("optimizer powell (after lbfgs: not converged (Maximum Likelihood optimization "
                "failed to converge. Check mle_retvals))")
RAW_WARNINGS = ("The MLE may be on the boundary of the parameter space.",
                "The Hessian matrix at the estimated parameter values is not positive definite.",
                "boundary (singular) fit: variance of seed, seed:adapter / residual scale < 1e-08")


def _fitted(n_seeds: int = 3):
    data = simulate_study(np.random.default_rng(2), n_seeds=n_seeds, n_docs=12, personalization=0.1)
    return judge(data, Prereg(), rng=np.random.default_rng(0), n_resamples=200)


def _boundary(v):
    """The default study's diagnostics (issue 14): both seed components at zero, powell after lbfgs."""
    m = replace(v.model, singular_components=("seed", "seed:adapter"), fallback=RAW_FALLBACK,
                warnings=RAW_WARNINGS)
    return replace(v, model=m, warnings=tuple(w for w in v.warnings if not w.startswith("model: "))
                   + tuple(f"model: {w}" for w in RAW_WARNINGS))


def test_boundary_fit_is_translated_on_the_terminal_and_kept_raw_in_the_json():
    v = _boundary(_fitted())
    text = verdict_text(v)
    assert ("the seed-level variance is estimated at zero: seeds barely change the adapters, the "
            "held-out documents carry the uncertainty") in text
    for raw in (RAW_FALLBACK, "powell", "lbfgs", "mle_retvals", "Hessian", "MLE", "1e-08"):
        assert raw not in text, raw
    doc = json.loads(StudyVerdict(v).json_text())
    assert doc["model"]["fallback"] == RAW_FALLBACK
    assert all(f"model: {w}" in doc["warnings"] for w in RAW_WARNINGS)


def test_effect_is_a_percentage_change_of_perplexity_with_its_interval():
    v = _fitted()
    m = v.model
    line = effect_line(m, 0.95)
    pct = f"{abs(math.expm1(m.diagonal_effect)):.1%}"
    assert f"perplexity is {pct} {'lower' if m.diagonal_effect < 0 else 'higher'}" in line
    assert "log ppl" not in line and "95% CI" in line


def test_one_seed_and_failed_fits_say_what_the_interval_leaves_out():
    one = _fitted(n_seeds=1).model
    assert one.fallback == "ols: one seed"
    assert diagnostic_readings(one)[0].startswith("one seed: seed-to-seed variation cannot be estimated")
    failed = replace(one, fallback="ols: mixedlm failed",
                     warnings=("mixed model failed with every optimizer (lbfgs: LinAlgError)",))
    readings = diagnostic_readings(failed)
    assert readings == (("the mixed model could not be fitted, so the effect comes from a plain "
                         "regression that ignores seed-to-seed variation: its interval is too narrow"),)


def test_unrecognised_model_notes_pass_through_and_raw_ones_are_recognised():
    m = replace(_fitted().model, singular_components=(), fallback=None,
                warnings=("per-user diag effects not identifiable with 2 users (need 3 or more): not fitted",))
    assert diagnostic_readings(m) == m.warnings
    assert all(is_raw_model_warning("model: " + w) for w in RAW_WARNINGS)
    assert not is_raw_model_warning("calibration skipped (--no-calibration)")


def test_thresholds_print_in_the_margins_unit():
    text = verdict_text(_fitted())
    assert "bar 10%" in text and "bar 5%" in text and "within +-2%" in text
    assert " 0.1 " not in text and " 0.05 " not in text and "0.02" not in text
