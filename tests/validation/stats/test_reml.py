"""`validation.stats.reml.reml_nested` (the closed-form profiled REML of the seed / seed:adapter model):
its algebra against dense matrices, its fit against statsmodels' MixedLM and its use by `fit_model`.

The lme4 comparison is in tests/validation/stats/test_mixed_model.py (the same `fit_model`, now on this fit).
"""

import dataclasses
import math

import numpy as np
import pandas as pd
import patsy
import pytest

from validation import ModelKind
from validation.inputs.arrays import build_arrays
from validation.simulation.simulate import simulate_study
from validation.stats import reml
from validation.stats.mixed_model import PROFILED, _fit_mixed, _fit_profiled, _formulas, fit_model, long_table


def _study(rng_seed=0, n_seeds=4, users=("a", "b", "c", "d"), drop=0, **kw):
    """Simulated user arrays; `drop` random user cells set missing (unequal seed:adapter blocks)."""
    data = simulate_study(np.random.default_rng(rng_seed), n_seeds=n_seeds, users=users, n_docs=8,
                          with_docs=False, **kw)
    arrays = build_arrays(data)
    if drop:
        x = arrays.logppl.copy()
        S, _, J = x.shape
        rng = np.random.default_rng(rng_seed + 100)
        flat = rng.choice(S * J * J, size=drop, replace=False)
        s, i, j = np.unravel_index(flat, (S, J, J))
        x[s, i, j] = np.nan
        arrays = dataclasses.replace(arrays, logppl=x)
    return arrays


def _design(arrays, which=0):
    df = long_table(arrays)
    form = _formulas(len(arrays.users))[which]
    y, X = patsy.dmatrices(form, df, return_type="dataframe")
    return (X.to_numpy(float), y.to_numpy(float).ravel(), pd.Categorical(df["seed"]).codes,
            pd.Categorical(df["adapter"]).codes, df, form)


def _dense_criterion(X, y, seed, block, t1, t2):
    """The profiled REML criterion with V/s2 = I + t1 Z1 Z1' + t2 Z2 Z2' built as a dense matrix."""
    n, p = X.shape
    Z1 = (seed[:, None] == np.unique(seed)[None, :]).astype(float)
    key = seed.astype(np.int64) * 1000 + block
    Z2 = (key[:, None] == np.unique(key)[None, :]).astype(float)
    H = np.eye(n) + t1 * Z1 @ Z1.T + t2 * Z2 @ Z2.T
    Hi = np.linalg.inv(H)
    A = X.T @ Hi @ X
    beta = np.linalg.solve(A, X.T @ Hi @ y)
    r = y - X @ beta
    crit = -0.5 * (np.linalg.slogdet(H)[1] + np.linalg.slogdet(A)[1] + (n - p) * math.log(r @ Hi @ r))
    return crit, beta, A


@pytest.mark.parametrize("drop", [0, 9])
@pytest.mark.parametrize("t", [(0.0, 0.0), (0.7, 0.0), (0.0, 2.5), (3.0, 0.2)])
def test_closed_form_equals_dense_algebra(drop, t):
    """Woodbury / determinant lemma per seed and adapter block = the dense n x n computation,
    with complete and with missing cells (unequal block sizes)."""
    X, y, seed, block, *_ = _design(_study(drop=drop), which=1)
    S = reml._sums(X, y, seed, block)
    crit, beta, A, _ = reml._criterion(S, np.sqrt(np.array(t)))
    crit_d, beta_d, A_d = _dense_criterion(X, y, seed, block, *t)
    assert crit == pytest.approx(crit_d, rel=1e-11, abs=1e-9)
    np.testing.assert_allclose(beta, beta_d, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(A, A_d, rtol=1e-9, atol=1e-9)


CASES = {   # (simulation settings, missing cells); 4 seeds: the seed variance often lands at 0
    "default (seed variance at 0, singular)": dict(),
    "no simulated seed variance": dict(seed_sd=0.0),
    "no simulated seed:adapter variance": dict(instance_sd=0.0),
    "missing cells": dict(drop=11),
    "no seed variance, missing cells": dict(seed_sd=0.0, drop=7),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("which", [0, 1], ids=["overall", "per-user"])
def test_profiled_equals_mixedlm(case, which):
    """Same fixed effects as statsmodels' MixedLM (1e-6 relative; 1e-5 SE absolute), a REML
    likelihood at least as high, the same variance components within MixedLM's optimizer
    precision (its optimizers stop ~1e-4 relative short of the optimum; ours agrees with lme4
    to ~1e-6, tests/validation/stats/test_mixed_model.py)
    and the same singular components. SEs: equal to 1e-4 with complete cells; with missing cells
    MixedLM's SEs (from the joint Hessian of fixed effects and variances) differ by ~1e-3 from
    sigma^2 (X'V^-1X)^-1, which lme4 and ours report."""
    kw = CASES[case]
    X, y, seed, block, df, form = _design(_study(**kw), which)
    ours = _fit_profiled(form, df)
    sm, *_ = _fit_mixed(form, df)
    # with missing cells b_GLS depends on the variance ratios: MixedLM's shift it by < 1e-5 SE
    np.testing.assert_allclose(ours.params.to_numpy(), sm.fe_params.to_numpy(), rtol=1e-6,
                               atol=1e-5 * float(ours.bse.min()))
    np.testing.assert_allclose(ours.bse.to_numpy(), sm.bse_fe.to_numpy(), rtol=5e-3 if kw.get("drop") else 1e-4)
    assert ours.llf >= sm.llf - 1e-9
    assert ours.llf == pytest.approx(sm.llf, abs=1e-6)
    assert ours.scale == pytest.approx(sm.scale, rel=1e-4)
    pairs = ((ours.fit.seed_var, float(np.asarray(sm.cov_re)[0, 0])), (ours.fit.block_var, float(sm.vcomp[0])))
    for v_ours, v_sm in pairs:
        assert v_ours == pytest.approx(v_sm, rel=2e-3, abs=1e-8 * sm.scale)
        assert bool(v_ours / ours.scale < 1e-8) == bool(v_sm / sm.scale < 1e-8)


def test_profiled_is_optimal_and_deterministic():
    """No point of a fine grid around the optimum has a higher criterion; refits are identical."""
    X, y, seed, block, *_ = _design(_study(drop=5))
    f = reml.reml_nested(X, y, seed, block)
    S = reml._sums(X, y, seed, block)
    best = reml._criterion(S, np.array(f.theta))[0]
    for d1 in (-1e-3, 0.0, 1e-3):
        for d2 in (-1e-3, 0.0, 1e-3):
            th = np.maximum(np.array(f.theta) + [d1, d2], 0)
            assert reml._criterion(S, th)[0] <= best + 1e-12
    g = reml.reml_nested(X, y, seed, block)
    assert np.array_equal(f.beta, g.beta) and f.theta == g.theta


def test_sigma2_and_covariance_are_the_gls_ones():
    """s2 = r'H^-1 r / (n - p) and cov = s2 (X'H^-1X)^-1 at the fitted ratios (dense check)."""
    X, y, seed, block, *_ = _design(_study(drop=3))
    f = reml.reml_nested(X, y, seed, block)
    t1, t2 = (x * x for x in f.theta)
    _, beta, A = _dense_criterion(X, y, seed, block, t1, t2)
    n, p = X.shape
    Z1 = (seed[:, None] == np.unique(seed)[None, :]).astype(float)
    key = seed.astype(np.int64) * 1000 + block
    Z2 = (key[:, None] == np.unique(key)[None, :]).astype(float)
    r = y - X @ beta
    s2 = r @ np.linalg.solve(np.eye(n) + t1 * Z1 @ Z1.T + t2 * Z2 @ Z2.T, r) / (n - p)
    assert f.sigma2 == pytest.approx(s2, rel=1e-10)
    np.testing.assert_allclose(f.cov, s2 * np.linalg.inv(A), rtol=1e-8, atol=1e-12 * s2)
    assert f.seed_var == pytest.approx(t1 * s2, rel=1e-12)


def test_bad_input_is_named():
    X = np.ones((4, 4))
    with pytest.raises(ValueError, match="no residual degrees of freedom"):
        reml.reml_nested(X, np.ones(4), np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="must be"):
        reml.reml_nested(np.ones((5, 1)), np.ones(4), np.zeros(5, int), np.zeros(5, int))


def test_fit_model_uses_profiled_and_keeps_mixedlm_reachable():
    arrays = _study(drop=4)
    fast = fit_model(arrays)
    slow = fit_model(arrays, engine="mixedlm")
    assert fast.kind is slow.kind is ModelKind.MIXEDLM
    assert fast.optimizer == PROFILED and fast.fallback is None
    assert slow.optimizer in ("lbfgs", "powell", "bfgs", "cg", "nm")
    assert fast.diagonal_effect == pytest.approx(slow.diagonal_effect, rel=1e-6)
    assert fast.diagonal_se == pytest.approx(slow.diagonal_se, rel=1e-3)
    np.testing.assert_allclose([e.effect for e in fast.user_effects],
                               [e.effect for e in slow.user_effects], rtol=1e-6)
    assert dict(fast.variance_components).keys() == dict(slow.variance_components).keys()
    assert "profiled REML" in fast.summary
    with pytest.raises(ValueError, match="engine"):
        fit_model(arrays, engine="lme4")


def test_falls_back_to_mixedlm_when_the_profiled_fit_fails(monkeypatch):
    import validation.stats.mixed_model as model

    def broken(*a, **k):
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    monkeypatch.setattr(model, "reml_levels", broken)
    m = fit_model(_study())
    assert m.kind is ModelKind.MIXEDLM and m.optimizer != PROFILED
    assert m.fallback and "profiled-reml: LinAlgError" in m.fallback
    assert any("per-user model" in w and "profiled-reml" in w for w in m.warnings)


def test_single_thread_blas_restores_the_thread_count():
    controls = reml._openblas_thread_controls()
    before = [get() for get, _ in controls]
    with reml.single_thread_blas():
        assert all(get() == 1 for get, _ in controls)
    assert [get() for get, _ in controls] == before
    with pytest.raises(RuntimeError), reml.single_thread_blas():
        raise RuntimeError("restored on error too")
    assert [get() for get, _ in controls] == before


@pytest.mark.parametrize("t", [(0.0, 0.0, 0.0), (0.7, 0.0, 1.3), (0.0, 2.5, 0.4), (3.0, 0.2, 0.0)])
def test_three_nested_levels_equal_dense_algebra(t):
    """The recursion of `_system` over (seed, seed:adapter, seed:adapter:steps), with missing cells,
    = the dense n x n computation with H = I + t1 Z1 Z1' + t2 Z2 Z2' + t3 Z3 Z3'."""
    X, y, seed, block, df, _ = _design(_study(drop=6), which=0)
    seed, block = seed.astype(np.int64), block.astype(np.int64)
    rng = np.random.default_rng(1)
    snap = rng.integers(0, 3, size=len(y))           # three "counts" per seed:adapter, unequal sizes
    S = reml._sums(X, y, seed, block, snap)
    crit, beta, A, _ = reml._criterion(S, np.sqrt(np.array(t)))
    n, p = X.shape
    Z = [(k[:, None] == np.unique(k)[None, :]).astype(float)
         for k in (seed, seed * 1000 + block, (seed * 1000 + block) * 10 + snap)]
    H = np.eye(n) + sum(tk * z @ z.T for tk, z in zip(t, Z, strict=True))
    Hi = np.linalg.inv(H)
    A_d = X.T @ Hi @ X
    beta_d = np.linalg.solve(A_d, X.T @ Hi @ y)
    r = y - X @ beta_d
    crit_d = -0.5 * (np.linalg.slogdet(H)[1] + np.linalg.slogdet(A_d)[1] + (n - p) * math.log(r @ Hi @ r))
    assert crit == pytest.approx(crit_d, rel=1e-11, abs=1e-9)
    np.testing.assert_allclose(beta, beta_d, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(A, A_d, rtol=1e-9, atol=1e-9)


def test_three_level_fit_is_optimal_on_every_face():
    """No point near the three-level optimum, on it or on the boundary faces, is higher."""
    X, y, seed, block, *_ = _design(_study(drop=4), which=0)
    snap = np.random.default_rng(2).integers(0, 3, size=len(y))
    f = reml.reml_levels(X, y, (seed, block, snap))
    S = reml._sums(X, y, seed, block, snap)
    best = reml._criterion(S, np.array(f.theta))[0]
    for d in ([1e-3, 0, 0], [0, 1e-3, 0], [0, 0, 1e-3], [-1e-3, 0, 0], [0, -1e-3, 0], [0, 0, -1e-3]):
        assert reml._criterion(S, np.maximum(np.array(f.theta) + d, 0))[0] <= best + 1e-9
    assert len(f.variances) == 3 and f.seed_var == f.variances[0]
