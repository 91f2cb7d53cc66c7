"""validation.calibration.theory: the t-type methods in the two-component normal model."""

from __future__ import annotations

import numpy as np
import pytest

from validation.calibration.theory import main, theory_grid, two_component_coverage


def test_every_method_is_exact_where_one_level_carries_all_the_variance():
    # share 1: all three critical values are t(S - 1) on a chi2(S - 1) variance: the exact
    # Student interval; the same replicates give the same coverage for every method
    cov = {m: two_component_coverage(m, 3, 50, 1.0, 40_000, np.random.default_rng(1)).coverage
           for m in ("satterthwaite", "cochran-cox", "share-blend")}
    assert len(set(cov.values())) == 1
    assert cov["share-blend"] == pytest.approx(0.95, abs=4 * np.sqrt(0.95 * 0.05 / 40_000))


def test_few_seeds_that_dominate_satterthwaite_liberal_cochran_cox_conservative_blend_between():
    # 3 seeds, seed share 0.9: the plug-in Satterthwaite df is liberal (about 0.92),
    # Cochran-Cox about 0.955, the blend between them (SE of each figure 0.0015)
    cov = {m: two_component_coverage(m, 3, 50, 0.9, 20_000, np.random.default_rng(2)).coverage
           for m in ("satterthwaite", "cochran-cox", "share-blend")}
    assert cov["satterthwaite"] < 0.935 < cov["share-blend"] < cov["cochran-cox"]
    # at share 0.35 Cochran-Cox over-covers (about 0.974) and the blend does not
    cc = two_component_coverage("cochran-cox", 3, 50, 0.35, 20_000, np.random.default_rng(3)).coverage
    blend = two_component_coverage("share-blend", 3, 50, 0.35, 20_000, np.random.default_rng(3)).coverage
    assert cc > 0.968 and blend < 0.962


def test_grid_is_deterministic_and_rejects_bad_input(capsys):
    kw = dict(seeds=(3,), docs=(20,), shares=(0.0, 0.5), replicates=500, rng_seed=5)
    assert theory_grid(**kw) == theory_grid(**kw)
    with pytest.raises(ValueError, match="share"):
        two_component_coverage("share-blend", 3, 20, 1.5, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="method"):
        two_component_coverage("percentile", 3, 20, 0.5, 10, np.random.default_rng(0))
    assert main(["--replicates", "0"]) == 2
    assert "--replicates" in capsys.readouterr().err
