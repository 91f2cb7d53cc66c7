"""Statistics and verdicts: `judge(data, prereg, rng=...)` -> `Verdict`; CLI `python -m validation.verdict`.

The library never imports `reports` or `runners`, nor jinja2 or altair; the one place that ties
validation and reports together is the `python -m validation.verdict` command. Names below are
imported lazily, so that `import validation.prereg` (the pre-registration, part of the data
contract the runner uses) does not pull in statsmodels.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InputError": "validation.data", "load_external": "validation.data", "load_run": "validation.data",
    "normalize_cells": "validation.data",
    "bootstrap_interval": "validation.intervals",
    "judge": "validation.judging",
    "Prereg": "validation.prereg", "PreregError": "validation.prereg", "check_prereg": "validation.prereg",
    "load_prereg": "validation.prereg",
    **{name: "validation.results" for name in (
        "BootstrapInfo", "BootstrapMode", "CriterionResult", "Gate", "Interval", "ModelFit", "ModelKind",
        "PreregStatus", "Status", "StudyData", "UserEffect", "UserResult", "Verdict")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'validation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
