"""The primitive result types every result object uses: intervals, modes, and the JSON helpers
(no NaN/inf in JSON); `Status` is re-exported from `validation.contract.status`. Re-exported by
`validation.judgment.results`."""

from __future__ import annotations

import enum
import math
from typing import NamedTuple

import numpy as np

from validation.contract.status import Status as Status  # re-exported: its home is the data contract's


class Interval(NamedTuple):
    """A two-sided interval; `low, high = interval`."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def known(self) -> bool:
        """Both ends finite: an interval was computed (NaN where nothing could be resampled)."""
        return math.isfinite(self.low) and math.isfinite(self.high)


class BootstrapMode(enum.StrEnum):
    """Which levels the bootstrap resampled; anything but HIERARCHICAL is a degraded mode."""

    HIERARCHICAL = "hierarchical"      # seeds, then documents within each eval column
    SEEDS_ONLY = "seeds-only"          # no per-document data
    DOCUMENTS_ONLY = "documents-only"  # one seed
    NONE = "none"                      # one seed and no documents: no interval (NaN), INCONCLUSIVE


class ModelKind(enum.StrEnum):
    MIXEDLM = "mixedlm"
    OLS = "ols"


def _at(a: np.ndarray, k: int) -> float:
    return float(a[k]) if len(a) > k else math.nan


def _num(x: float | None) -> float | None:
    """JSON has no NaN/inf: map them to null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def signed_pct(x: float | None) -> str:
    """A fraction as a signed percentage for text outputs: 0.133 -> '+13.3%'; 'n/a' if not finite."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.1%}"


def threshold_pct(x: float) -> str:
    """A threshold, in the unit of the margins: 0.1 -> '10%'."""
    return f"{100 * x:.3g}%"


def _interval(iv: Interval | None) -> list[float | None] | None:
    return None if iv is None else [_num(iv.low), _num(iv.high)]
