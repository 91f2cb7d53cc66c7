"""Issue 23 (calib2): the seen-user share's interval is valid among the studies where the share is
shown. In the normal model the share is shown where D_hat / sd(D) > z; Fieller's interval read among
those covers well below its level where D is small (a winner's curse); the selective interval does
not, and equals Fieller's where D is large."""

from __future__ import annotations

import math

import numpy as np
import pytest

from validation.stats.selective import selective_ratio_interval

Z = 1.959963984540054


def _fieller(n, d, v_n, v_d, c_nd, c=Z):
    a, b, k = d * d - c * c * v_d, n * d - c * c * c_nd, n * n - c * c * v_n
    root = math.sqrt(b * b - a * k)
    return (b - root) / a, (b + root) / a


def _shown_coverage(delta: float, r: float, reps: int, seed: int) -> tuple[float, float, int]:
    """Coverage among the shown (D_hat > z) of the selective and of Fieller's interval."""
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.3], [0.3, 1.0]])
    draws = rng.multivariate_normal([r * delta, delta], cov, size=reps)
    sel = fie = shown = 0
    for n, d in draws:
        if d <= Z:
            continue
        shown += 1
        sel += selective_ratio_interval(n, d, 1.0, 1.0, 0.3, level=0.95).ci.contains(r)
        lo, hi = _fieller(n, d, 1.0, 1.0, 0.3)
        fie += lo <= r <= hi
    return sel / shown, fie / shown, shown


def test_among_the_shown_the_selective_interval_keeps_its_level_where_fieller_does_not():
    sel, fie, shown = _shown_coverage(delta=1.5, r=2.5, reps=1400, seed=3)
    se = math.sqrt(0.95 * 0.05 / shown)
    assert shown > 300
    assert fie < 0.95 - 3 * se                      # the defect: selection on the denominator
    assert sel >= 0.95 - 2 * se, (sel, shown)


def test_where_the_denominator_is_large_it_is_fiellers_interval():
    n, d, v_n, v_d, c_nd = 2.5 * 30, 30.0, 1.0, 1.0, 0.3
    ci = selective_ratio_interval(n, d, v_n, v_d, c_nd, level=0.95).ci
    assert ci == pytest.approx(_fieller(n, d, v_n, v_d, c_nd), rel=1e-6)


def test_near_the_threshold_it_is_unbounded_and_below_it_undefined():
    ci = selective_ratio_interval(2.5 * 2.0, 2.0, 1.0, 1.0, 0.3, level=0.95).ci
    assert not (math.isfinite(ci.low) and math.isfinite(ci.high)) and ci.contains(2.5)
    assert selective_ratio_interval(1.0, 1.5, 1.0, 1.0, 0.3, level=0.95).ci == (-math.inf, math.inf)
    with pytest.raises(ValueError):
        selective_ratio_interval(1.0, 3.0, 1.0, 0.0, 0.3, level=0.95)
