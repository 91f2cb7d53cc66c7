"""Hand-computed margins and gains on an asymmetric matrix (rows = adapters, columns = eval users)."""

import numpy as np
import pytest

from validation import judge
from validation.simulation.simulate import cells_from_matrix
from validation.stats.metrics import (
    best_other_index,
    diagonal_margin,
    personalization_gain,
    regularization_gain,
    total_gain,
    worst_other_margin,
)

USERS = ("a", "b", "c")
ADAPTERS = USERS + ("base", "pooled")
#                 eval: a     b     c
PPL = np.array([[10.0, 20.0, 30.0],   # adapter a
                [12.0, 15.0, 33.0],   # adapter b
                [11.0, 25.0, 24.0],   # adapter c
                [14.0, 28.0, 40.0],   # base
                [12.5, 21.0, 32.0]])  # pooled


def test_margins_by_hand():
    L = np.log(PPL)
    np.testing.assert_allclose(diagonal_margin(L), [1 - 10 / 11, 1 - 15 / 20, 1 - 24 / 30])
    np.testing.assert_allclose(worst_other_margin(L), [1 - 10 / 12, 1 - 15 / 25, 1 - 24 / 33])
    np.testing.assert_array_equal(best_other_index(L), [2, 0, 0])


def test_gains_by_hand_and_decomposition():
    L = np.log(PPL)
    pers, reg, tot = personalization_gain(L, 4), regularization_gain(L, 4, 3), total_gain(L, 3)
    np.testing.assert_allclose(pers, [1 - 10 / 12.5, 1 - 15 / 21, 1 - 24 / 32])
    np.testing.assert_allclose(reg, [1 - 12.5 / 14, 1 - 21 / 28, 1 - 32 / 40])
    np.testing.assert_allclose(tot, [1 - 10 / 14, 1 - 15 / 28, 1 - 24 / 40])
    # log(1 - total) = log(1 - regularization) + log(1 - personalization), exactly
    np.testing.assert_allclose(np.log1p(-tot), np.log1p(-reg) + np.log1p(-pers), rtol=0, atol=1e-14)


def test_judge_uses_best_other_and_keeps_rows_and_columns_apart():
    v = judge(cells_from_matrix(PPL, ADAPTERS, USERS), rng=np.random.default_rng(0), n_resamples=10, fit=False)
    got = {u.user: (u.margin, u.best_other, u.worst_other, u.worst_other_margin) for u in v.users}
    assert got["a"][1:3] == ("c", "b") and got["a"][0] == pytest.approx(1 - 10 / 11)
    assert got["b"][1:3] == ("a", "c") and got["b"][0] == pytest.approx(0.25)
    assert got["c"][1:3] == ("a", "b") and got["c"][3] == pytest.approx(1 - 24 / 33)
    # the transposed matrix is a different study: margins must change
    vt = judge(cells_from_matrix(PPL[:3].T.copy(), USERS, USERS), rng=np.random.default_rng(0),
               n_resamples=10, fit=False)
    assert [u.margin for u in vt.users] != pytest.approx([u.margin for u in v.users])


def test_across_seeds_is_geometric_mean():
    p1, p2 = PPL.copy(), PPL.copy()
    p1[0, 0], p2[0, 0] = 5.0, 20.0          # geometric mean 10: same margin as PPL
    p1[2, 0], p2[2, 0] = 11.0, 11.0
    v = judge(cells_from_matrix(np.stack([p1, p2]), ADAPTERS, USERS),
              rng=np.random.default_rng(0), n_resamples=50, fit=False)
    a = v.user("a")
    assert a.margin == pytest.approx(1 - 10 / 11)
    np.testing.assert_allclose(a.seed_margins, [1 - 5 / 11, 1 - 20 / 11])
    assert a.diagonal_ppl == pytest.approx(10.0)


def test_gains_absent_without_controls():
    v = judge(cells_from_matrix(PPL[:3], USERS, USERS), rng=np.random.default_rng(0), n_resamples=10, fit=False)
    u = v.user("a")
    assert np.isnan(u.personalization_gain) and u.personalization_ci is None and u.draws_total.size == 0
    assert any("no `pooled` control" in w for w in v.warnings)
    assert v.to_json()["users"][0]["personalization_gain"] is None
