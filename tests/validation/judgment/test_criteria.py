"""Truth tables of STRICT / LENIENT / CATASTROPHIC, inverted users and the gate."""

import numpy as np
import polars as pl
import pytest

from validation import InputError, Prereg, Status, StudyData, judge
from validation.judgment import criteria as crit
from validation.simulation.simulate import cells_from_matrix, simulate_study

U = ["a", "b", "c"]


@pytest.mark.parametrize("point,low,high,status,point_status", [
    ([0.15, 0.15, 0.15], [0.11, 0.10, 0.12], [0.2, 0.2, 0.2], Status.PASS, Status.PASS),
    # a 5% margin must never pass a 10% bar, however tight its interval
    ([0.05, 0.15, 0.15], [0.04, 0.11, 0.11], [0.06, 0.2, 0.2], Status.FAIL, Status.FAIL),
    # the point reading passes, the intervals cannot tell
    ([0.12, 0.15, 0.15], [0.05, 0.11, 0.11], [0.19, 0.2, 0.2], Status.INCONCLUSIVE, Status.PASS),
    ([0.09, 0.15, 0.15], [0.05, 0.11, 0.11], [0.13, 0.2, 0.2], Status.INCONCLUSIVE, Status.FAIL),
])
def test_strict(point, low, high, status, point_status):
    c = crit.strict(U, point, low, high, 0.10)
    assert (c.status, c.point) == (status, point_status)


@pytest.mark.parametrize("low,high,status", [
    ([0.06, 0.05, -0.2], [0.1, 0.1, 0.0], Status.PASS),           # two sure users
    ([0.06, -0.1, -0.2], [0.1, 0.04, 0.04], Status.FAIL),          # only one can reach 5%
    ([0.06, 0.01, -0.2], [0.1, 0.09, 0.04], Status.INCONCLUSIVE),
])
def test_lenient(low, high, status):
    point = (np.array(low) + np.array(high)) / 2
    assert crit.lenient(U, point, low, high, 0.05, 2).status is status


def test_lenient_point_reading_differs_from_intervals():
    c = crit.lenient(U, [0.06, 0.06, 0.0], [0.01, 0.01, -0.1], [0.11, 0.11, 0.1], 0.05, 2)
    assert (c.status, c.point) == (Status.INCONCLUSIVE, Status.PASS)


@pytest.mark.parametrize("low,high,eq_low,eq_high,status", [
    ([-0.02, -0.03, -0.01], [0.02, 0.02, 0.03], [-0.015, -0.01, -0.005], [0.01, 0.015, 0.019], Status.TRIGGERED),
    ([0.03, -0.03, -0.01], [0.08, 0.02, 0.03], [0.035, -0.01, -0.005], [0.07, 0.015, 0.019], Status.NOT_TRIGGERED),
    ([0.0, -0.03, -0.01], [0.08, 0.02, 0.03], [0.01, -0.01, -0.005], [0.07, 0.015, 0.019], Status.INCONCLUSIVE),
])
def test_catastrophic(low, high, eq_low, eq_high, status):
    point = (np.array(low) + np.array(high)) / 2
    assert crit.catastrophic(U, point, low, high, eq_low, eq_high, 0.02).status is status


def test_inverted_user_fails_gate():
    data = simulate_study(np.random.default_rng(0), n_seeds=5, n_docs=20, personalization=[-0.1, 0.2, 0.2])
    v = judge(data, rng=np.random.default_rng(0), n_resamples=300, fit=False)
    alice = v.user("alice")
    assert alice.inverted and alice.ci_high < 0 and alice.margin < 0
    assert not v.gate.passed and any("'alice' is inverted" in r for r in v.gate.reasons)
    assert v.exit_code == 1


def test_clear_personalization_passes_gate():
    data = simulate_study(np.random.default_rng(0), n_seeds=5, n_docs=20, personalization=0.2)
    v = judge(data, rng=np.random.default_rng(0), n_resamples=300, fit=False)
    assert [c.status for c in v.criteria] == [Status.PASS, Status.PASS, Status.NOT_TRIGGERED]
    assert v.gate.passed and v.gate.reasons == () and v.exit_code == 0


def test_pure_regularization_triggers_catastrophic():
    data = simulate_study(np.random.default_rng(0), n_seeds=5, n_docs=50, personalization=0.0,
                          instance_sd=0.0, seed_sd=0.0, noise_sd=0.001)
    v = judge(data, rng=np.random.default_rng(0), n_resamples=300, fit=False)
    assert v.criterion("catastrophic").status is Status.TRIGGERED
    assert v.criterion("lenient").status is Status.FAIL and not v.gate.passed


def _ok_matrix():
    ppl = np.array([[10.0, 20, 30], [13, 15, 35], [13, 25, 24]])
    # seeds differ by adapter row (a common factor would cancel from every margin: no variance, no interval)
    return np.stack([ppl, ppl * np.array([[1.01], [1.0], [0.99]]), ppl * np.array([[0.99], [1.01], [1.0]])])


@pytest.mark.parametrize("status,reason", [("diverged", "diverged"), ("worse_than_base", None)])
def test_cell_status_and_gate(status, reason):
    data = cells_from_matrix(_ok_matrix(), tuple(U), tuple(U))
    cells = data.cells.with_columns(
        pl.when((pl.col("seed") == 1) & (pl.col("adapter") == "b") & (pl.col("eval") == "a"))
        .then(pl.lit(status)).otherwise(pl.col("status")).alias("status"))
    v = judge(StudyData(cells=cells), rng=np.random.default_rng(0), n_resamples=100, fit=False)
    failed = [r for r in v.gate.reasons if "cell" in r]
    if reason:
        assert failed and reason in failed[0] and "seed=1 adapter='b' eval='a'" in failed[0]
    else:
        assert failed == []
        strict_gate = Prereg(fail_on_worse_than_base=True)
        v = judge(StudyData(cells=cells), strict_gate, rng=np.random.default_rng(0), n_resamples=100, fit=False)
        assert any("worse-than-base" in r for r in v.gate.reasons)


def test_missing_cells_fail_gate():
    data = cells_from_matrix(_ok_matrix(), tuple(U), tuple(U))
    cells = data.cells.filter(~((pl.col("seed") == 2) & (pl.col("adapter") == "c") & (pl.col("eval") == "b")))
    v = judge(StudyData(cells=cells), rng=np.random.default_rng(0), n_resamples=100, fit=False)
    assert "1 missing cell(s): seed=2 adapter='c' eval='b'" in " | ".join(v.gate.reasons)
    assert np.isfinite(v.user("b").margin)


def test_duplicated_cells_are_an_input_error_on_every_path():
    """Files (load_external, load_run) and a StudyData built in code are refused alike (exit 2
    from the CLI), naming the rows: never a gate failure on one path and an error on another."""
    data = cells_from_matrix(_ok_matrix(), tuple(U), tuple(U))
    cells = pl.concat([data.cells, data.cells.head(1)])
    with pytest.raises(InputError, match=r"duplicated cell\(s\) at row\(s\) 1, \d+: seed=0, adapter='a', eval='a'"):
        judge(StudyData(cells=cells), rng=np.random.default_rng(0), n_resamples=100, fit=False)


def test_worst_other_comparator_is_flagged():
    data = cells_from_matrix(_ok_matrix(), tuple(U), tuple(U))
    v = judge(data, Prereg(comparator="worst_other"), rng=np.random.default_rng(0), n_resamples=100, fit=False)
    assert v.comparator == "worst_other" and any("anti-conservative" in w for w in v.warnings)


def test_judge_validates_its_arguments():
    data = cells_from_matrix(_ok_matrix(), tuple(U), tuple(U))
    with pytest.raises(ValueError, match="`rng` must be a numpy.random.Generator"):
        judge(data, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="`n_resamples` must be a positive integer"):
        judge(data, rng=np.random.default_rng(0), n_resamples=0)
    with pytest.raises(ValueError, match="`prereg` must be a validation.Prereg"):
        judge(data, {"delta": 0.02}, rng=np.random.default_rng(0))


def test_lenient_level_is_bonferroni_over_the_users_that_can_tip_it():
    # 3 users, 2 required: any one of the 3 - 2 + 1 = 2 boundary users can tip LENIENT
    assert Prereg().lenient_level(3) == pytest.approx(1 - 0.05 / 2)
    assert Prereg().lenient_level(5) == pytest.approx(1 - 0.05 / 2)        # 4 of 5 required
    assert Prereg(lenient_min_users=2).lenient_level(5) == pytest.approx(1 - 0.05 / 4)
    assert Prereg(lenient_min_users=3).lenient_level(3) == 0.95            # all required: no family
    assert Prereg(lenient_adjust="none").lenient_level(3) == 0.95


def test_lenient_adjustment_changes_a_borderline_pass():
    """Uniform draws on [0.01, 1.81]: the 2.5% quantile is 0.055 (>= 5%), the 1.25% one 0.0325."""
    data = simulate_study(np.random.default_rng(0), n_seeds=3, n_docs=20, personalization=[0.2, 0.2, -0.2])
    v = judge(data, rng=np.random.default_rng(0), n_resamples=200, fit=False)
    draws = {"alice": np.linspace(0.01, 1.81, 100_001), "bob": np.linspace(0.01, 1.81, 100_001),
             "carol": np.linspace(-0.3, -0.1, 100_001)}
    import dataclasses
    users = tuple(dataclasses.replace(u, margin=float(np.median(draws[u.user])), draws_margin=draws[u.user])
                  for u in v.users)
    plain = crit.read_criteria(users, Prereg(lenient_adjust="none"), method="percentile", n_seeds=3)[1]
    adjusted = crit.read_criteria(users, Prereg(), method="percentile", n_seeds=3)[1]
    assert plain.status is Status.PASS
    assert adjusted.status is Status.INCONCLUSIVE and "97.50%" in adjusted.explanation


def test_unknown_lenient_adjustment_is_refused():
    with pytest.raises(ValueError, match="`lenient_adjust` must be one of"):
        Prereg(lenient_adjust="holm")
