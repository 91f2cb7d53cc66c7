"""Population statistics (validation/judgment/population.py): share intervals, the random-slope and
random-intercept models against R lme4, the population criteria, the [population] settings."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from common.contract import loo_name
from validation.contract.prereg import Prereg, PreregError, check_users, load_prereg, min_users_share
from validation.contract.status import Status
from validation.inputs.arrays import build_arrays
from validation.judgment.population import (
    clopper_pearson,
    effect_criterion,
    share_bounds,
    share_clearing,
    share_criterion,
)
from validation.judgment.study import judge
from validation.simulation.simulate import simulate_study
from validation.stats.random_effects import fit_random_intercept, fit_random_slope, loo_log_ratios
from validation.stats.types import Interval

USERS6 = tuple(f"u{k}" for k in range(6))


def _lme4_study():
    """The study of the lme4 reference: 6 users, 3 seeds, `loo:<user>` controls, no documents."""
    rng = np.random.default_rng(20260101)
    return simulate_study(rng, n_seeds=3, users=USERS6, personalization=np.array([0.02, 0.05, 0.08, 0.10, 0.12, 0.20]),
                          controls=("base", "pooled") + tuple(loo_name(u) for u in USERS6), n_docs=10,
                          seen=0.03, with_docs=False)


def test_models_match_lme4():
    """Reference values from R 4 / lme4, on the tables this test writes (`random_slope_table`
    to slope.csv, `loo_log_ratios(...)["own_vs_loo"]` as columns d, user to icpt.csv):

        library(lme4)
        d <- read.csv("slope.csv", colClasses = c(seed = "character"))
        d$sa <- interaction(d$seed, d$adapter)
        m <- lmer(y ~ sa + eval + diag + (0 + diag | eval), data = d, REML = TRUE)
        cat(sprintf("%.10f %.10f %.10f %.10f\\n", fixef(m)["diag"], sqrt(vcov(m)["diag", "diag"]),
                    attr(VarCorr(m)$eval, "stddev"), sigma(m)))
        print(sprintf("%.8f", fixef(m)["diag"] + ranef(m)$eval[, "diag"]))
        e <- read.csv("icpt.csv")
        m2 <- lmer(d ~ 1 + (1 | user), data = e, REML = TRUE)
        cat(sprintf("%.10f %.10f %.10f %.10f\\n", fixef(m2)[1], sqrt(vcov(m2)[1, 1]),
                    attr(VarCorr(m2)$user, "stddev"), sigma(m2)))
        print(sprintf("%.8f", fixef(m2)[1] + ranef(m2)$user[, 1]))
    """
    arrays = build_arrays(_lme4_study())
    slope, notes = fit_random_slope(arrays, 0.95)
    assert notes == ()
    ref = (-0.0964515561, 0.0276527320, 0.0669386205, 0.0163754838)
    assert (slope.effect, slope.se, slope.user_sd, slope.residual_sd) == pytest.approx(ref, abs=2e-6)
    blups = [-0.01787655, -0.04594096, -0.08653170, -0.09671512, -0.12517462, -0.20647038]
    assert [e for _, e in slope.user_effects] == pytest.approx(blups, abs=2e-6)
    icpt, _ = fit_random_intercept(loo_log_ratios(arrays)["own_vs_loo"], arrays.users, "own_vs_loo", 0.95)
    ref2 = (-0.1190207585, 0.0211156408, 0.0491550707, 0.0278747590)
    assert (icpt.effect, icpt.se, icpt.user_sd, icpt.residual_sd) == pytest.approx(ref2, abs=2e-6)
    blups2 = [-0.06967229, -0.09200589, -0.09235343, -0.11690928, -0.14417502, -0.19900863]
    assert [e for _, e in icpt.user_effects] == pytest.approx(blups2, abs=2e-6)


def test_intervals_are_t_on_users_and_the_prediction_interval_adds_tau():
    arrays = build_arrays(_lme4_study())
    e, _ = fit_random_slope(arrays, 0.95)
    q, qp = stats.t.ppf(0.975, 5), stats.t.ppf(0.975, 4)
    assert e.ci == pytest.approx((e.effect - q * e.se, e.effect + q * e.se))
    half = qp * math.sqrt(e.se ** 2 + e.user_sd ** 2)
    assert e.prediction == pytest.approx((e.effect - half, e.effect + half))
    assert e.prediction.high - e.prediction.low > e.ci.high - e.ci.low


def test_clopper_pearson_against_scipy_and_by_hand():
    for k, n in ((0, 10), (3, 10), (10, 10), (17, 20)):
        ref = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        assert clopper_pearson(k, n, 0.95) == pytest.approx((ref.low, ref.high))
    assert clopper_pearson(12, 12, 0.95).low == pytest.approx(0.025 ** (1 / 12))


def test_min_users_share_is_the_first_count_that_can_pass():
    for share, level in ((0.8, 0.95), (0.5, 0.95), (0.9, 0.90)):
        n = min_users_share(share, level)
        assert share_bounds(n, n, n, level).low >= share > share_bounds(n - 1, n - 1, n - 1, level).low
    assert min_users_share(0.8, 0.95) == 18   # 17 with the bare Clopper-Pearson bound (0.79993 at 17)


def test_share_bounds_correct_clopper_pearson_for_miscounted_users_by_hand():
    a = 0.025
    for k, n in ((0, 10), (7, 10), (10, 10), (850, 1000)):
        cp_low, cp_high = clopper_pearson(k, n, 0.95)
        b = share_bounds(k, k, n, 0.95)
        assert b.low == pytest.approx(max(0.0, (cp_low - a) / (1 - a)))
        assert b.high == pytest.approx(min(1.0, cp_high / (1 - a)))
    assert share_bounds(0, 10, 10, 0.95).low == 0.0 and share_bounds(3, 3, 10, 0.95).high < 1


@pytest.mark.parametrize("n_users", [1000, 3000])
def test_the_share_keeps_its_false_pass_at_many_users(n_users):
    """Issue 23: at the boundary (80% of users far above the bar, the others at it, each counted
    sure with probability 0.025) the bare Clopper-Pearson bound passes 5.8% of studies at 1,000
    users and 9.4% at 3,000 (exact); the corrected bound stays at or below 0.025."""
    from validation.calibration.population import exact_share_pass
    bare = exact_share_pass(n_users, 0.8, 0.8, 0.95, bare=True)
    assert bare > 0.05
    assert exact_share_pass(n_users, 0.8, 0.8, 0.95) <= 0.025
    # the same through the verdict's share_clearing and share_criterion on simulated users
    from validation.calibration.population import calibrate_share_users
    c = calibrate_share_users(Prereg(), users=(n_users,), n_experiments=400, rng_seed=7)
    boundary = next(r for r in c.rates if r.scenario == "boundary")
    assert boundary.pass_rate <= 0.025 + 2 * math.sqrt(0.025 * 0.975 / 400)


def test_share_counts_sure_and_possible_users():
    users = ("a", "b", "c", "d")
    point = np.array([0.20, 0.08, 0.04, 0.06])
    low = np.array([0.15, 0.06, -0.01, 0.01])
    high = np.array([0.25, 0.10, 0.09, 0.11])
    s = share_clearing(users, point, low, high, 0.05, 0.95, "best_other")
    assert (s.n_point, s.n_sure, s.n_possible, s.users_below) == (3, 2, 4, ("c",))
    assert s.share == 0.75
    assert s.ci == pytest.approx(tuple(share_bounds(2, 4, 4, 0.95)))
    assert s.ci.low == pytest.approx((clopper_pearson(2, 4, 0.95).low - 0.025) / 0.975)


def test_share_criterion_is_three_valued_and_not_applicable_below_its_minimum():
    def share(sure, possible, n=20):
        point = np.r_[np.full(sure, 0.2), np.full(n - sure, 0.04)]
        low = np.r_[np.full(sure, 0.1), np.full(n - sure, -0.1)]
        high = np.r_[np.full(possible, 0.3), np.full(n - possible, 0.04)]
        return share_clearing(tuple(f"u{k}" for k in range(n)), point, low, high, 0.05, 0.95, "best_other")

    assert share_criterion(share(20, 20), 0.8, 17).result.status is Status.PASS
    assert share_criterion(share(5, 10), 0.8, 17).result.status is Status.FAIL  # CP high(10/20) = 0.73
    assert share_criterion(share(15, 20), 0.8, 17).result.status is Status.INCONCLUSIVE
    na = share_criterion(share(12, 12, n=12), 0.8, 17)
    assert na.result is None and na.status_text == "NOT_APPLICABLE" and "17" in na.reason


def test_effect_criterion_reads_the_interval():
    arrays = build_arrays(_lme4_study())
    e, _ = fit_random_slope(arrays, 0.95)
    assert effect_criterion(e, 6, 0.0).result.status is Status.PASS           # CI high -0.025 < 0
    assert effect_criterion(e, 6, -0.2).result.status is Status.FAIL          # CI low -0.168 >= -0.2
    assert effect_criterion(e, 6, -0.1).result.status is Status.INCONCLUSIVE
    assert effect_criterion(e, 5, 0.0).result is None
    bad = replace(e, ci=Interval(-0.01, 0.01))
    assert effect_criterion(bad, 6, 0.0).result.status is Status.INCONCLUSIVE


def test_judge_reports_population_in_verdict_json_deterministically():
    users = tuple(f"u{k:02d}" for k in range(8))
    data = simulate_study(np.random.default_rng(3), n_seeds=3, users=users, n_docs=10,
                          personalization=np.linspace(0.05, 0.2, 8),
                          controls=("base", "pooled") + tuple(loo_name(u) for u in users))
    a, b = (judge(data, Prereg(), rng=np.random.default_rng(5), n_resamples=200) for _ in range(2))
    ja, jb = a.to_json()["population"], b.to_json()["population"]
    assert json.dumps(ja) == json.dumps(jb)
    assert {s["against"] for s in ja["shares"]} == {"best_other", "loo"}
    assert {s["bar"] for s in ja["shares"]} == {0.05, 0.10}
    assert set(ja["effects"]) == {"personalization", "own_vs_loo", "new_user"}
    assert ja["criteria"]["population_share"]["status"] == "NOT_APPLICABLE"   # 8 < 18 users
    assert ja["criteria"]["population_effect"]["status"] == "PASS"
    assert a.gate.passed == b.gate.passed


def test_a_gated_population_criterion_fails_the_gate_when_its_status_is_not_accepted():
    users = tuple(f"u{k}" for k in range(6))
    data = simulate_study(np.random.default_rng(4), n_seeds=3, users=users, n_docs=10, personalization=0.0)
    p = Prereg(gate_population_effect=("PASS",), gate_lenient=("PASS", "FAIL", "INCONCLUSIVE"))
    v = judge(data, p, rng=np.random.default_rng(0), n_resamples=200)
    status = v.population.criterion("population_effect").result.status
    assert status is not Status.PASS
    assert any(r.startswith("POPULATION_EFFECT is") for r in v.gate.reasons)


def test_prereg_population_section(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("[population]\nshare_margin = 0.1\nmin_share = 0.5\nmax_effect = -0.05\n"
                 "[gate]\npopulation_share = [\"PASS\"]\n")
    p = load_prereg(f)
    assert (p.share_margin, p.min_share, p.max_effect, p.gate_population_share) == (0.1, 0.5, -0.05, ("PASS",))
    assert p.gates_population("population_share") and not p.gates_population("population_effect")
    check_users(p, 6)
    with pytest.raises(PreregError, match=r"`\[gate\] population_share`.*5 users.*at least 6"):
        check_users(p, 5)
    f.write_text("[population]\nmin_share = 1.5\n")
    with pytest.raises(PreregError, match="min_share"):
        load_prereg(f)
    f.write_text("[population]\nshares = 0.5\n")
    with pytest.raises(PreregError, match=r"unknown setting.*\[population\]"):
        load_prereg(f)


def test_default_prereg_does_not_gate_on_population():
    p = Prereg()
    assert not p.gates_population("population_share") and not p.gates_population("population_effect")
    check_users(p, 2)


def test_verdict_refuses_a_gated_population_criterion_on_too_few_users(tmp_path, capsys):
    from common.hashing import sha256_file
    from tests.validation.test_verdict_cli import PREREG, make_run
    from validation.verdict import main

    prereg = tmp_path / "prereg.toml"
    prereg.write_text(PREREG.read_text().replace(
        'population_effect = ["PASS", "FAIL", "INCONCLUSIVE"]', 'population_effect = ["PASS"]'))
    run = make_run(tmp_path, prereg_sha=sha256_file(prereg))
    assert main(["--run", str(run), "--prereg", str(prereg), "--no-report", "--no-calibration"]) == 2
    err = capsys.readouterr().err
    assert "`[gate] population_effect`" in err and "3 users" in err and "at least 6 users" in err
    assert not (run / "verdict.json").exists()


def test_profiled_reml_equals_statsmodels_mixedlm():
    """The profiled fit of `reml_random_slope` against statsmodels' MixedLM on the same model."""
    import warnings

    import statsmodels.formula.api as smf

    from validation.stats.mixed_model import fit_best
    from validation.stats.random_effects import random_slope_table

    arrays = build_arrays(_lme4_study())
    ours, _ = fit_random_slope(arrays, 0.95)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = smf.mixedlm("y ~ C(sa) + C(eval) + diag", random_slope_table(arrays), groups="eval",
                            re_formula="0 + diag")
        res, *_ = fit_best(model)
    assert ours.effect == pytest.approx(float(res.fe_params["diag"]), abs=1e-6)
    assert ours.se == pytest.approx(float(res.bse_fe["diag"]), abs=1e-6)
    assert ours.user_sd ** 2 == pytest.approx(float(res.cov_re.iloc[0, 0]), rel=1e-4)


def test_a_common_effect_is_recovered():
    users = tuple(f"u{k}" for k in range(6))
    data = simulate_study(np.random.default_rng(9), n_seeds=3, users=users, personalization=0.1,
                          with_docs=False, n_docs=10)
    e, _ = fit_random_slope(build_arrays(data), 0.95)
    assert e.effect == pytest.approx(math.log(0.9), abs=0.02)
    assert e.ci.contains(math.log(0.9)) and e.prediction.contains(math.log(0.9))


def test_population_calibration_is_deterministic_and_the_cli_refuses_foreign_flags(tmp_path, capsys):
    from validation.calibrate import main
    from validation.calibration.population import calibrate_population

    kw = dict(n_experiments=2, n_docs=5, n_resamples=50, share_users=(18,), effect_users=(6,))
    a, b = (calibrate_population(Prereg(), **kw) for _ in range(2))
    assert [r.__dict__ for r in a.rates] == [r.__dict__ for r in b.rates]
    assert {(r.criterion, r.relation) for r in a.rates} == {
        ("population_share", "boundary"), ("population_share", "power"),
        ("population_effect", "boundary"), ("population_effect", "power")}
    power = next(r for r in a.rates if r.criterion == "population_share" and r.relation == "power")
    assert power.not_applicable_rate == 0.0     # 18 users: the share criterion applies
    assert main(["--study", "population", "--users", "5", "--out", str(tmp_path)]) == 2
    assert "--study population" in capsys.readouterr().err


def test_the_share_counts_read_the_same_intervals_as_the_users_and_the_criteria():
    # share-blend reads each column's document df; the share must use the users' own intervals
    data = simulate_study(np.random.default_rng(12), n_seeds=3, users=USERS6, n_docs=12,
                          personalization=np.array([0.02, 0.05, 0.08, 0.10, 0.12, 0.20]))
    v = judge(data, Prereg(interval_method="share-blend"), rng=np.random.default_rng(0), n_resamples=300, fit=False)
    for bar in (0.05, 0.10):
        s = v.population.share("best_other", bar)
        assert s.n_sure == sum(u.ci.low >= bar for u in v.users)
        assert s.n_possible == sum(u.ci.high >= bar for u in v.users)


def test_a_user_without_a_margin_stays_in_the_share_as_possible_not_sure():
    s = share_clearing(("a", "b", "c"), np.array([0.2, np.nan, 0.01]), np.array([0.15, np.nan, -0.02]),
                       np.array([0.25, np.nan, 0.04]), 0.05, 0.95, "best_other")
    assert (s.n_users, s.n_sure, s.n_possible) == (3, 1, 2)


def test_a_boundary_fit_of_the_population_model_serializes():
    """A random-slope fit whose optimum is the grid's theta = 0 kept a numpy float, so `singular`
    became numpy.bool and verdict.json failed to serialize (9 of 40 simulated 3-seed studies)."""
    from validation.study_verdict import StudyVerdict
    d = simulate_study(np.random.default_rng(37), n_seeds=3, n_docs=10)
    v = judge(d, Prereg(n_resamples=200), rng=np.random.default_rng(0), fit=True, fit_population=True)
    effects = v.population.effects
    assert effects and any(e.singular for e in effects)
    assert all(type(e.singular) is bool for e in effects)
    json.loads(StudyVerdict(v).json_text())


def test_the_terminal_calls_few_users_descriptive():
    """Three users: the population averages rest on 2 df and a new user's range on 1; the terminal
    says they are descriptive only. Six users: no such note."""
    from validation.text.outputs import population_lines
    few = judge(simulate_study(np.random.default_rng(1), n_seeds=3, n_docs=10), Prereg(n_resamples=200),
                rng=np.random.default_rng(0), fit=False, fit_population=True)
    note = "with 3 users these averages rest on 2 df and a new user's range on 1: descriptive only"
    assert any(note in line for line in population_lines(few))
    six = judge(_lme4_study(), Prereg(n_resamples=200), rng=np.random.default_rng(0), fit=False, fit_population=True)
    assert six.population.effects and not any("descriptive only" in line for line in population_lines(six))


def test_population_share_calibration_cli_covers_17_to_3000_users(tmp_path, capsys):
    """`--study population-share`: a row per number of users, the exact rates beside the simulated
    ones (quick: 20 studies per row)."""
    from validation.calibrate import main
    assert main(["--study", "population-share", "--experiments", "20", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "calibration_population_share.json").read_text())
    boundary = {r["n_users"]: r for r in doc["rates"] if r["scenario"] == "boundary"}
    assert sorted(boundary) == [17, 18, 100, 1000, 3000]
    assert boundary[17]["not_applicable_rate"] == 1.0
    assert boundary[17]["exact_pass_bare"] == pytest.approx(0.025, abs=1e-3)
    assert all(r["exact_pass"] <= 0.025 for r in boundary.values())
    assert boundary[3000]["exact_pass_bare"] > 0.09
    assert "exact, bare CP" in capsys.readouterr().out
    assert main(["--study", "population-share", "--users", "30", "--out", str(tmp_path)]) == 2
