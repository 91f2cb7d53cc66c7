"""The training-step interaction model (`validation.stats.mixed_model.fit_steps_model`) against R's lme4.

tests/data/lme4_steps_cells.csv: user cells of `simulate_steps` (3 users, 3 seeds, steps 25,
100, 400; planted slopes -0.02, 0, +0.03); lme4_steps_cells_snapshot.csv: the same with a seed
offset and a seed:adapter:steps offset added (so no variance component is at 0). Reference values
were produced by this R code (Debian r-cran-lme4), run from the repository root:

    library(lme4)
    for (f in c("tests/data/lme4_steps_cells.csv", "tests/data/lme4_steps_cells_snapshot.csv")) {
      d <- read.csv(f, stringsAsFactors = FALSE)
      d$y <- d$nll_sum / d$n_tokens
      d$x <- log2(d$steps) - mean(log2(unique(d$steps)))
      d$diag <- as.numeric(d$adapter == d$eval)
      d$diag_x <- d$diag * d$x
      d$seed <- factor(d$seed); d$adapter <- factor(d$adapter); d$eval <- factor(d$eval)
      d$steps <- factor(d$steps)
      m <- lmer(y ~ adapter * steps + eval * steps + diag + diag_x + (1 | seed) + (1 | seed:adapter)
                + (1 | seed:adapter:steps), data = d, REML = TRUE)
      cat(sprintf("diag %.10f diag_x %.10f se %.10f\\n", fixef(m)["diag"], fixef(m)["diag_x"],
                  sqrt(diag(vcov(m)))[["diag_x"]]))
      print(as.data.frame(VarCorr(m))[, c("grp", "vcov")], digits = 10)
      for (u in levels(d$eval)) {
        d[[paste0("diag_", u)]] <- as.numeric(d$diag == 1 & d$eval == u)
        d[[paste0("diag_x_", u)]] <- d[[paste0("diag_", u)]] * d$x
      }
      m2 <- lmer(y ~ adapter * steps + eval * steps + diag_ann + diag_x_ann + diag_bob + diag_x_bob
                 + diag_cid + diag_x_cid + (1 | seed) + (1 | seed:adapter) + (1 | seed:adapter:steps),
                 data = d, REML = TRUE)
      k <- c("diag_x_ann", "diag_x_bob", "diag_x_cid")
      print(fixef(m2)[k], digits = 10)
      print(sqrt(diag(vcov(m2)))[match(k, names(fixef(m2)))], digits = 10)
    }
"""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from validation.inputs.arrays import build_arrays
from validation.inputs.study import StudyData
from validation.inputs.tables import normalize_cells
from validation.stats.mixed_model import PROFILED, fit_steps_model
from validation.stats.types import ModelKind

DATA = Path(__file__).resolve().parents[2] / "data"

LME4 = {
    "lme4_steps_cells.csv": dict(
        diag=-0.0958940748, inter=-0.0034223188, se=0.0029229487,
        vc={"seed:adapter:steps": 0.0, "seed:adapter": 6.304400248e-05, "seed": 1.393802149e-13,
            "residual": 4.100942012e-04},
        singular={"seed", "seed:adapter:steps"},
        users=[0.01889408531, 0.00399581898, -0.03315686055], users_se=0.004585788224),
    "lme4_steps_cells_snapshot.csv": dict(
        diag=-0.0958940748, inter=-0.0034223188, se=0.0032241005,
        vc={"seed:adapter:steps": 0.0001301307513, "seed:adapter": 0.0001295655777,
            "seed": 0.0002560933348, "residual": 0.0004989515541},
        singular=set(),
        users=[0.01889408531, 0.00399581898, -0.03315686055], users_se=0.004997090115),
}


def per_count(path: Path):
    c = pl.read_csv(path)
    return [(k, build_arrays(StudyData(cells=normalize_cells(c.filter(pl.col("steps") == k).drop("steps"), str(path)))))
            for k in sorted(c["steps"].unique())]


@pytest.mark.parametrize("name", sorted(LME4))
def test_steps_model_matches_lme4(name):
    ref = LME4[name]
    m = fit_steps_model(per_count(DATA / name))
    assert m.kind is ModelKind.MIXEDLM and m.optimizer == PROFILED   # the exact REML, not a fallback
    assert m.diagonal_effect == pytest.approx(ref["diag"], abs=1e-8)
    assert m.interaction == pytest.approx(ref["inter"], abs=1e-8)
    assert m.interaction_se == pytest.approx(ref["se"], rel=1e-4)
    vc = dict(m.variance_components)
    for k, v in ref["vc"].items():
        assert vc[k] == pytest.approx(v, rel=2e-3, abs=1e-9)
    assert set(m.singular_components) == ref["singular"]
    np.testing.assert_allclose([e.effect for e in m.user_interactions], ref["users"], atol=1e-8)
    np.testing.assert_allclose([e.se for e in m.user_interactions], ref["users_se"], rtol=1e-4)
    low, high = m.interaction_ci
    assert low < m.interaction < high
    assert 0 < m.p_value < 1


def test_one_count_is_not_fitted_and_one_seed_falls_back_to_ols():
    counts = per_count(DATA / "lme4_steps_cells.csv")
    assert fit_steps_model(counts[:1]) is None
    c = pl.read_csv(DATA / "lme4_steps_cells.csv").filter(pl.col("seed") == 0)
    one = [(k, build_arrays(StudyData(cells=normalize_cells(c.filter(pl.col("steps") == k).drop("steps"), "x"))))
           for k in (25, 100, 400)]
    m = fit_steps_model(one)
    assert m.kind is ModelKind.OLS and any("one seed" in w for w in m.warnings)
    assert np.isfinite(m.interaction) and len(m.user_interactions) == 3


@pytest.mark.parametrize("name", sorted(LME4))
def test_statsmodels_engine_agrees_with_the_exact_fit(name):
    """The fallback (statsmodels MixedLM, variance components within seeds) agrees with the exact
    profiled REML: fixed effects to 1e-6, standard errors to 1e-3 (its optimizers stop short)."""
    counts = per_count(DATA / name)
    a, b = fit_steps_model(counts), fit_steps_model(counts, engine="mixedlm")
    assert b.optimizer != PROFILED
    assert a.interaction == pytest.approx(b.interaction, abs=1e-6)
    assert a.interaction_se == pytest.approx(b.interaction_se, rel=1e-3)
    assert dict(a.variance_components).keys() == dict(b.variance_components).keys()
    with pytest.raises(ValueError, match="engine"):
        fit_steps_model(counts, engine="lme4")
