"""validation.simulation.simulate and validation.calibrate: determinism, truth recovery, coverage, files, CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from validation import Prereg, judge
from validation.calibrate import (
    CalibrationResult,
    calibrate,
    calibration_for_study,
    main,
    margin_ladder,
    read_calibration,
    write_calibration,
)
from validation.contract.prereg import INTERVAL_METHODS
from validation.simulation.from_run import params_from_run
from validation.simulation.simulate import (
    SimParams,
    expected_cells,
    simulate_experiment,
    true_diagonal_effect,
    true_margins,
    write_study,
)
from validation.stats.intervals import bootstrap_interval

RUNNER_CELL_COLUMNS = ["seed", "adapter", "eval", "nll_sum", "n_tokens", "n_bytes", "ppl", "bpb", "status"]


@pytest.fixture(scope="module")
def small_calibration() -> CalibrationResult:
    return calibrate(SimParams(), Prereg(), seeds=(3, 12), n_experiments=50, n_resamples=200,
                     n_model_fits=5, rng_seed=7)


# ---- the simulator ----------------------------------------------------------------------------

def test_simulator_is_deterministic_given_the_generator():
    a = simulate_experiment(SimParams(), 0.1, 4, np.random.default_rng(3))
    b = simulate_experiment(SimParams(), 0.1, 4, np.random.default_rng(3))
    c = simulate_experiment(SimParams(), 0.1, 4, np.random.default_rng(4))
    assert a.data.cells.equals(b.data.cells) and a.data.docs.equals(b.data.docs)
    assert not a.data.cells.equals(c.data.cells)


def test_simulated_tables_have_the_runner_columns():
    st = simulate_experiment(SimParams(n_docs=(7, 9, 11)), 0.0, 2, np.random.default_rng(0))
    assert set(RUNNER_CELL_COLUMNS) <= set(st.data.cells.columns)
    assert set(RUNNER_CELL_COLUMNS + ["doc_id"]) <= set(st.data.docs.columns)
    assert st.data.cells.height == 2 * 5 * 3
    assert st.data.docs.height == 2 * 5 * (7 + 9 + 11)
    # cells are the sums of their documents, as the runner writes them
    sums = st.data.docs.group_by(["seed", "adapter", "eval"]).agg(
        pl.col("nll_sum").sum())
    joined = st.data.cells.join(sums, on=["seed", "adapter", "eval"], suffix="_docs")
    assert np.allclose(joined["nll_sum"], joined["nll_sum_docs"])


def test_base_row_is_identical_across_seeds():
    st = simulate_experiment(SimParams(), 0.1, 3, np.random.default_rng(1))
    base = st.data.cells.filter(st.data.cells["adapter"] == "base").sort(["eval", "seed"])
    per_eval = base["ppl"].to_numpy().reshape(3, 3)
    assert np.allclose(per_eval, per_eval[:, :1])


def test_truth_is_the_margin_against_the_best_other_adapter():
    E = expected_cells(SimParams(), np.array([0.0, 0.05, 0.2]), np.random.default_rng(2))
    assert np.allclose(true_margins(E), [0.0, 0.05, 0.2])
    others = E[:3].copy()
    others[np.arange(3), np.arange(3)] = np.inf
    assert np.allclose(1 - np.exp(np.diag(E[:3]) - others.min(axis=0)), [0.0, 0.05, 0.2])


def test_true_diagonal_effect_of_a_pure_additive_matrix():
    a, e = np.array([0.1, -0.2, 0.05]), np.array([3.0, 2.5, 2.8])
    E = a[:, None] + e[None, :] - 0.3 * np.eye(3)
    assert true_diagonal_effect(E) == pytest.approx(-0.3)


def test_estimates_converge_to_the_true_margins_with_many_docs_and_seeds():
    p = SimParams(n_docs=(1500,) * 3)
    st = simulate_experiment(p, np.array([0.0, 0.08, 0.2]), 150, np.random.default_rng(5))
    v = judge(st.data, Prereg(), rng=np.random.default_rng(0), n_resamples=50, fit=False)
    assert np.allclose([u.margin for u in v.users], st.truth.margins, atol=0.006)


def test_simulator_rejects_bad_input():
    with pytest.raises(ValueError, match="`n_seeds`"):
        simulate_experiment(SimParams(), 0.1, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="`rng`"):
        simulate_experiment(SimParams(), 0.1, 3, 42)
    with pytest.raises(ValueError, match="`margins`"):
        simulate_experiment(SimParams(), 1.0, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="`noise_sd`"):
        SimParams(noise_sd=-1.0)
    with pytest.raises(ValueError, match="`n_docs`"):
        SimParams(n_docs=(5, 5))


def test_parameters_are_recovered_from_a_run(tmp_path):
    truth = SimParams(n_docs=(120,) * 4, users=("a", "b", "c", "d"), seed_sd=0.0,
                      instance_sd=0.03, cell_sd=0.01, doc_adapter_sd=0.02, noise_sd=0.04)
    st = simulate_experiment(truth, 0.1, 12, np.random.default_rng(9))
    write_study(st.data, tmp_path)
    est, notes = params_from_run(tmp_path)
    assert est.users == ("a", "b", "c", "d") and est.n_docs == (120,) * 4
    assert est.noise_sd == pytest.approx(0.04, rel=0.1)
    assert est.doc_adapter_sd == pytest.approx(0.02, rel=0.25)
    assert est.instance_sd == pytest.approx(0.03, rel=0.4)
    assert est.cell_sd == pytest.approx(0.01, rel=0.5)
    assert est.bytes_per_token == pytest.approx(4.0, rel=0.01)
    # the run's spacing of the other adapters is kept; the diagonal is set from the target
    assert np.allclose(true_margins(expected_cells(est, 0.07, np.random.default_rng(0))), 0.07)


# ---- the interval correction ------------------------------------------------------------------

# draws 0.09, 0.10, 0.11: SD (ddof 1) = sqrt((0.01^2 + 0 + 0.01^2) / 2) = 0.01 exactly; the Student-t
# quantiles are a printed table's: t(4, 0.975) = 2.776445, t(2, 0.975) = 4.302653, t(4, 0.95) = 2.131847.
@pytest.mark.parametrize("n_seeds, level, half", [(5, 0.95, 0.02776445), (3, 0.95, 0.04302653),
                                                  (5, 0.90, 0.02131847)])
def test_student_t_interval_by_hand(n_seeds, level, half):
    draws = np.array([0.09, 0.10, 0.11])
    low, high = bootstrap_interval(draws, 0.1, level, method="student-t", n_seeds=n_seeds)
    assert (low, high) == pytest.approx((0.1 - half, 0.1 + half), abs=1e-8)
    assert "student-t" in INTERVAL_METHODS


def test_student_t_with_one_seed_is_the_percentile_interval():
    draws = np.arange(101) / 100  # quantiles 0.025 and 0.975 by linear interpolation
    assert bootstrap_interval(draws, 0.5, 0.95, method="student-t", n_seeds=1) == pytest.approx((0.025, 0.975))


def test_student_t_interval_needs_the_number_of_seeds():
    with pytest.raises(ValueError, match="`n_seeds`"):
        bootstrap_interval(np.zeros(10), 0.0, 0.95, method="student-t")
    with pytest.raises(ValueError, match="`method`"):
        bootstrap_interval(np.zeros(10), 0.0, 0.95, method="bca")


# ---- calibration --------------------------------------------------------------------------------

def test_margin_ladder_holds_every_threshold():
    assert margin_ladder(Prereg()) == (0.0, 0.02, 0.05, 0.10, 0.15)


def test_coverage_estimates_are_sane_on_a_small_run(small_calibration):
    d3, d12 = small_calibration.design(3), small_calibration.design(12)
    assert d3.n_experiments == 56 and d3.n_model_fits == 7  # 7 scenarios x ceil(50 / 7)
    cov3, cov12 = ({f.method: f.coverage for f in d.by_method} for d in (d3, d12))
    # the percentile interval under-covers at 3 seeds; the t correction widens it
    assert cov3["student-t"] > cov3["percentile"]
    assert 0.8 <= cov12["percentile"] <= 1.0 and 0.8 <= cov12["student-t"] <= 1.0
    # the model's diagonal-effect interval covers the truth in a whole number of the fitted
    # experiments, and in most of them (nominal 95%: 4 or fewer of 7 has probability 0.4%)
    covered = d12.diagonal_effect_coverage * d12.n_model_fits
    assert covered == round(covered) and covered >= 5, (covered, d12.n_model_fits)
    assert {c.criterion for c in d12.pass_rate_at_threshold} == {"strict", "lenient", "catastrophic"}
    # one rung above the bar (STRICT: 15% vs 10%; LENIENT: 10% vs 5%) with 12 seeds, each passes
    # most of the time; one rung below it, each fails most of the time
    rates = {(r.criterion, r.relation): r for r in d12.rates("percentile")}
    for criterion in ("strict", "lenient"):
        assert rates[criterion, "above"].pass_rate > 0.8, rates[criterion, "above"]
        assert rates[criterion, "below"].fail_rate > 0.8, rates[criterion, "below"]


def test_calibration_is_independent_of_the_number_of_processes():
    kw = dict(seeds=(3,), n_experiments=10, n_resamples=50, n_model_fits=0, rng_seed=1)
    one, two = calibrate(**kw, jobs=1), calibrate(**kw, jobs=2)
    assert one.designs[0].by_method == two.designs[0].by_method
    assert one.designs[0].status_rates == two.designs[0].status_rates


def test_calibration_json_has_the_required_keys(small_calibration, tmp_path):
    path = write_calibration(small_calibration, tmp_path)
    doc = json.loads(path.read_text())
    assert [d["seeds"] for d in doc["designs"]] == [3, 12]
    for d in doc["designs"]:
        for key in ("seeds", "n_experiments", "margin_coverage", "diagonal_effect_coverage",
                    "pass_rate_at_threshold"):
            assert key in d
        assert set(d["pass_rate_at_threshold"]) == {"strict", "lenient", "catastrophic"}
        assert set(d["pass_rate_least_favourable"]) == {"strict", "lenient"}
    back = read_calibration(path)
    assert back.design(12).margin_coverage == small_calibration.design(12).margin_coverage
    assert back.design(3).status_rates == small_calibration.design(3).status_rates


def test_calibration_for_study_uses_the_run_file_then_the_cache(small_calibration, tmp_path):
    st = simulate_experiment(SimParams(), 0.1, 3, np.random.default_rng(0))
    write_calibration(small_calibration, tmp_path / "run")
    d, warnings = calibration_for_study(st.data, run_dir=tmp_path / "run", cache_dir=tmp_path / "c")
    assert d == small_calibration.design(3) and warnings == ()
    ticks = []
    d1, w1 = calibration_for_study(st.data, cache_dir=tmp_path / "c", n_experiments=10, n_resamples=50,
                                   progress=lambda done, total: ticks.append((done, total)))
    assert d1.seeds == 3 and d1.n_experiments == 14 and "quick simulation" in w1[-1]
    assert ticks and ticks[-1] == (14, 14) and [d for d, _ in ticks] == sorted(d for d, _ in ticks)
    # read from the cache: the same figures and the same warning (seconds included), no progress
    ticks.clear()
    d2, w2 = calibration_for_study(st.data, cache_dir=tmp_path / "c", n_experiments=10, n_resamples=50,
                                   progress=lambda done, total: ticks.append((done, total)))
    assert d2 == d1 and w2 == w1 and ticks == []
    assert f"computed in {d1.wall_s:.0f} s" in w2[-1]
    one_seed = simulate_experiment(SimParams(), 0.1, 1, np.random.default_rng(0))
    assert calibration_for_study(one_seed.data, cache_dir=tmp_path / "c")[0] is None


def test_calibrate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`seeds`"):
        calibrate(seeds=(1,))
    with pytest.raises(ValueError, match="`n_experiments`"):
        calibrate(seeds=(3,), n_experiments=0)
    with pytest.raises(ValueError, match="`n_resamples`"):
        calibrate(seeds=(3,), n_resamples=2)


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "1"], "--seeds"),
    (["--seeds", "a,b"], "--seeds"),
    (["--experiments", "0"], "--experiments"),
    (["--resamples", "x"], "--resamples"),
    (["--regime", "noisy"], "--regime"),
    (["--docs", "0"], "--docs"),
])
def test_cli_rejects_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_regime_with_a_run(tmp_path, capsys):
    assert main(["--from-run", str(tmp_path), "--regime", "mixed", "--out", str(tmp_path)]) == 2
    assert "--regime" in capsys.readouterr().err


def test_cli_names_a_missing_run(tmp_path, capsys):
    assert main(["--from-run", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "calibration.json").exists()


def test_cli_writes_calibration_json(tmp_path, capsys):
    rc = main(["--seeds", "3", "--experiments", "5", "--resamples", "50", "--regime",
               "document-dominated,mixed", "--docs", "20", "--jobs", "1", "--out", str(tmp_path),
               "--prereg", "prereg.toml"])
    assert rc == 0
    designs = json.loads((tmp_path / "calibration.json").read_text())["designs"]
    assert [(d["regime"], d["seeds"], d["n_docs"]) for d in designs] == [
        ("document-dominated", 3, [20] * 3), ("mixed", 3, [20] * 3)]
    assert designs[0]["seed_share"] < 0.2   # the regime is what its name says
    out = capsys.readouterr().out
    assert "coverage" in out and "False PASS at the least-favourable boundary" in out


def test_calibration_for_study_takes_its_own_regime_from_a_file_of_regimes(tmp_path):
    from validation.calibration.plan import regime_params
    res = calibrate(regime_params("seed-dominated", n_docs=20), Prereg(), seeds=(3,), n_experiments=7,
                    n_resamples=20, n_model_fits=0, variants=(regime_params("document-dominated", n_docs=20),
                                                             regime_params("document-dominated", n_docs=50)))
    write_calibration(res, tmp_path / "run")
    st = simulate_experiment(regime_params("document-dominated", n_docs=50), 0.1, 3, np.random.default_rng(0))
    d, warnings = calibration_for_study(st.data, run_dir=tmp_path / "run", cache_dir=tmp_path / "c",
                                        regime="document-dominated")
    assert (d.regime, d.docs, warnings) == ("document-dominated", 50, ())
    # without the regime (older callers) the first design with the run's seeds, as before
    assert calibration_for_study(st.data, run_dir=tmp_path / "run")[0].regime == "seed-dominated"
    # a regime the file lacks: not another regime's figures, but the quick simulation of this run
    d, warnings = calibration_for_study(st.data, run_dir=tmp_path / "run", cache_dir=tmp_path / "c",
                                        regime="mixed", n_experiments=7, n_resamples=20)
    assert d.regime == "run" and "quick simulation" in warnings[-1]


def test_the_summary_counts_designs_in_the_band_and_pools_false_pass_by_hand(small_calibration):
    from dataclasses import replace

    from validation.calibrate import summary_lines
    res = small_calibration
    lines = summary_lines(res)
    cov = [d.margin_coverage for d in res.designs]
    inside = sum(0.93 <= c <= 0.97 for c in cov)
    assert lines[0].startswith(f"Summary (share-blend intervals, nominal 95%): coverage {min(cov):.3f}-{max(cov):.3f}; "
                               f"{inside} of {len(cov)} designs inside 0.93-0.97")
    # pooled STRICT false PASS by hand: passes over experiments at the least-favourable boundary
    lf = [r for d in res.designs for r in d.rates() if r.criterion == "strict" and r.relation == "at, least favourable"]
    k, n = sum(round(r.pass_rate * r.n) for r in lf), sum(r.n for r in lf)
    assert f"STRICT {k}/{n} = {k / n:.3f}" in lines[1]
    # a design pushed out of the band is named
    d0 = res.designs[0]
    moved = tuple(replace(f, coverage=0.901) if f.method == d0.method else f for f in d0.by_method)
    bad = replace(res, designs=(replace(d0, by_method=moved),) + res.designs[1:])
    assert "OUTSIDE:" in summary_lines(bad)[0] and "0.901" in summary_lines(bad)[0]
