"""Statistics and verdicts: `judge(data, prereg, rng=...)` -> `Verdict`; CLI `python -m validation.verdict`.

The library never imports `reports` or `runners`, nor jinja2 or altair; the one place that ties
validation and reports together is the `python -m validation.verdict` command. Names below are
imported lazily, so that `import validation.contract.prereg` (the pre-registration, part of the data
contract the runner uses) does not pull in statsmodels.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InputError": "validation.inputs.tables", "normalize_cells": "validation.inputs.tables",
    "load_external": "validation.inputs.load", "load_run": "validation.inputs.load",
    "bootstrap_interval": "validation.stats.intervals",
    "judge": "validation.judgment.study",
    **{name: "validation.contract.prereg" for name in ("Prereg", "PreregError", "load_prereg")},
    "check_prereg": "validation.contract.prereg_check",
    **{name: "validation.judgment.results" for name in ("BootstrapInfo", "CriterionResult", "Gate", "Verdict")},
    **{name: "validation.stats.types" for name in ("BootstrapMode", "Interval", "ModelKind")},
    **{name: "validation.stats.fits" for name in ("ModelFit", "UserEffect")},
    "PreregStatus": "validation.contract.status", "Status": "validation.contract.status",
    "StudyData": "validation.inputs.study", "UserResult": "validation.judgment.user_results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'validation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
