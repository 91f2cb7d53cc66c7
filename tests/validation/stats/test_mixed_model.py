"""The mixed model against R's lme4 (Debian r-cran-lme4 1.1), and its OLS fallback.

Reference values were produced by this R code, run from the repository root:

    library(lme4)
    for (f in c("tests/data/lme4_cells.csv", "tests/data/lme4_cells_singular.csv")) {
      d <- read.csv(f, stringsAsFactors = FALSE)
      d <- d[!(d$adapter %in% c("base", "pooled")), ]
      d$y <- log(d$ppl)
      d$seed <- factor(d$seed); d$adapter <- factor(d$adapter); d$eval <- factor(d$eval)
      d$diag <- as.numeric(as.character(d$adapter) == as.character(d$eval))
      m <- lmer(y ~ adapter + eval + diag + (1 | seed) + (1 | seed:adapter), data = d, REML = TRUE)
      cat(sprintf("diag %.10f se %.10f\n", fixef(m)["diag"], sqrt(diag(vcov(m)))[["diag"]]))
      print(as.data.frame(VarCorr(m))[, c("grp", "vcov")], digits = 10)
      cat("isSingular", isSingular(m), "\n")
      for (u in levels(d$eval)) d[[paste0("diag_", u)]] <- as.numeric(d$diag == 1 & d$eval == u)
      m2 <- lmer(y ~ adapter + eval + diag_alice + diag_bob + diag_carol + (1 | seed) + (1 | seed:adapter),
                 data = d, REML = TRUE)
      print(fixef(m2)[c("diag_alice", "diag_bob", "diag_carol")], digits = 10)
      print(sqrt(diag(vcov(m2)))[c(6, 7, 8)], digits = 10)
    }
"""

from pathlib import Path

import numpy as np
import pytest

from validation import ModelKind, load_external
from validation.inputs.arrays import build_arrays
from validation.simulation.simulate import simulate_study
from validation.stats.mixed_model import fit_model

DATA = Path(__file__).resolve().parents[2] / "data"

LME4 = {
    "lme4_cells.csv": dict(
        diag=-0.0790631494, se=0.0064088620, singular=False,
        vc={"seed:adapter": 0.0004541065693, "seed": 0.0024812712577, "residual": 0.0003285880933},
        users=[-0.11448151705, -0.03619258913, -0.08651534211], users_se=0.009429769927),
    "lme4_cells_singular.csv": dict(
        diag=-0.1167616015, se=0.0297560225, singular=True,
        vc={"seed:adapter": 0.0, "seed": 0.0003753047354, "residual": 0.0070833670093},
        users=[-0.11569015385, -0.06943076073, -0.16516388988], users_se=0.06803284783),
}


@pytest.mark.parametrize("name", sorted(LME4))
def test_mixedlm_matches_lme4(name):
    ref = LME4[name]
    m = fit_model(build_arrays(load_external(DATA / name)))
    assert m.kind is ModelKind.MIXEDLM and m.converged
    assert m.diagonal_effect == pytest.approx(ref["diag"], abs=1e-8)
    assert m.diagonal_se == pytest.approx(ref["se"], rel=1e-4)
    vc = dict(m.variance_components)
    for k, v in ref["vc"].items():
        assert vc[k] == pytest.approx(v, rel=1e-3, abs=1e-9)
    assert ("seed:adapter" in m.singular_components) is ref["singular"]
    np.testing.assert_allclose([e.effect for e in m.user_effects], ref["users"], atol=1e-8)
    np.testing.assert_allclose([e.se for e in m.user_effects], ref["users_se"], rtol=1e-4)
    low, high = m.diagonal_ci
    assert low < m.diagonal_effect < high


def test_one_seed_falls_back_to_ols_and_says_so():
    data = simulate_study(np.random.default_rng(0), n_seeds=1, n_docs=5, personalization=0.1,
                          with_docs=False, noise_sd=0.01)
    m = fit_model(build_arrays(data))
    assert m.kind is ModelKind.OLS and m.fallback == "ols: one seed"
    assert any("one seed" in w for w in m.warnings)
    assert m.diagonal_effect == pytest.approx(-0.1, abs=0.03)
    assert len(m.user_effects) == 3


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_per_user_effects_are_not_reported_with_two_users(n_seeds):
    """2 users: 4 cells per seed, 5 mean parameters in the per-user model: not identifiable."""
    from validation import judge
    data = simulate_study(np.random.default_rng(0), n_seeds=n_seeds, n_docs=10, users=("a", "b"),
                          personalization=[0.3, 0.0])
    v = judge(data, rng=np.random.default_rng(0), n_resamples=100)
    assert v.model.user_effects == ()
    assert any("not identifiable with 2 users" in w for w in v.model.warnings)
    assert np.isfinite(v.model.diagonal_effect)


# lme4 on tests/data/lme4_cells_missing.csv (lme4_cells.csv less six user cells: unequal
# seed:adapter blocks), by the R code of the module docstring with that file name. statsmodels'
# MixedLM reports an SE of diag 1.2e-3 higher here (its SEs come from the joint Hessian of fixed
# effects and variances); lme4 and the profiled fit both report sigma^2 (X'V^-1X)^-1.
LME4_MISSING = dict(
    diag=-0.0749194377, se=0.0074727578, singular=False,
    vc={"seed:adapter": 0.0004651890874, "seed": 0.0025000729224, "residual": 0.0003338594398},
    users=[-0.10940754357, -0.03275437271, -0.08321510224],
    users_se=[0.01062150976, 0.01172752114, 0.01171432922])


@pytest.mark.parametrize("name", sorted(LME4) + ["lme4_cells_missing.csv"])
def test_profiled_reml_matches_lme4_closely(name):
    """The default (profiled REML) fit against lme4 at tolerances MixedLM's optimizers do not
    reach: SEs to 1e-5, variance components to 2e-5 relative."""
    ref = LME4.get(name, LME4_MISSING)
    m = fit_model(build_arrays(load_external(DATA / name)))
    assert m.optimizer == "profiled-reml" and m.fallback is None
    assert m.diagonal_effect == pytest.approx(ref["diag"], abs=5e-9)
    assert m.diagonal_se == pytest.approx(ref["se"], rel=1e-5)
    vc = dict(m.variance_components)
    for k, v in ref["vc"].items():
        assert vc[k] == pytest.approx(v, rel=2e-5, abs=1e-12)
    assert ("seed:adapter" in m.singular_components) is ref["singular"]
    np.testing.assert_allclose([e.effect for e in m.user_effects], ref["users"], atol=1e-7)
    np.testing.assert_allclose([e.se for e in m.user_effects], ref["users_se"], rtol=1e-5)
