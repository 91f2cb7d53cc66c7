"""Statistics and verdicts: `judge(data, prereg, rng=...)` -> `Verdict`; CLI `python -m validation.verdict`.

Never imports jinja2 or altair (docs/README.md, Code layout): rendering lives in `reports/`.
"""

from validation.data import InputError, load_external, load_run, normalize_cells
from validation.intervals import bootstrap_interval
from validation.judge import judge
from validation.prereg import Prereg, PreregError, check_prereg, load_prereg
from validation.results import (BootstrapInfo, BootstrapMode, CriterionResult, Gate, Interval,
                                ModelFit, ModelKind, PreregStatus, Status, StudyData, UserEffect,
                                UserResult, Verdict)

__all__ = [
    "BootstrapInfo", "BootstrapMode", "CriterionResult", "Gate", "InputError", "Interval",
    "ModelFit", "ModelKind", "Prereg", "PreregError", "PreregStatus", "Status", "StudyData",
    "UserEffect", "UserResult", "Verdict", "bootstrap_interval", "check_prereg", "judge",
    "load_external", "load_prereg", "load_run", "normalize_cells",
]
