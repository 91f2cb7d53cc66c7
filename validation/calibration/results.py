"""Typed results of `validation.calibrate` and `calibration.json` (written and read here only).

Every figure is a named field of a frozen dataclass: per interval method a `MethodFigures`, per
true margin a `MarginCoverage`, per criterion x relation x method a `StatusRate`. The JSON layout
(schema `normadapt-calibration/1`) is unchanged from earlier files: `from_json` reads them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA = "normadapt-calibration/1"
LEAST_FAVOURABLE = "at, least favourable"   # the relation of a least-favourable scenario



def binomial_se(rate: float, n: int) -> float:
    """Monte Carlo standard error of a rate measured on `n` independent experiments (NaN for none)."""
    return math.sqrt(rate * (1 - rate) / n) if n else math.nan

@dataclass(frozen=True)
class StatusRate:
    """How often one criterion returned each status with every user's true margin at `true_margin`.

    For CATASTROPHIC, `pass_rate` is its TRIGGERED rate and `fail_rate` its NOT_TRIGGERED rate.
    """

    criterion: str
    relation: str          # "below", "at" or "above" the criterion's threshold, or LEAST_FAVOURABLE
    true_margin: float
    method: str            # interval method the statuses were read with
    n: int
    pass_rate: float
    fail_rate: float
    inconclusive_rate: float


@dataclass(frozen=True)
class MethodFigures:
    """One interval method over every scenario of a design."""

    method: str
    coverage: float        # share of (experiment, user) margin intervals containing the truth
    mean_width: float      # mean width of those intervals (margin units)


@dataclass(frozen=True)
class MarginCoverage:
    """Coverage of the pre-registered method with every user's true margin at `true_margin`."""

    true_margin: float
    coverage: float


@dataclass(frozen=True)
class CriterionRate:
    criterion: str
    pass_rate: float


@dataclass(frozen=True)
class DesignCalibration:
    """Calibration of one design (seeds x users x documents); rates are fractions in [0, 1]."""

    seeds: int
    n_users: int
    n_docs: tuple[int, ...]
    n_experiments: int
    n_model_fits: int
    method: str                                   # the pre-registered interval method
    level: float
    by_method: tuple[MethodFigures, ...]          # every method compared, same draws
    coverage_by_margin: tuple[MarginCoverage, ...]  # ladder rungs, with `method`
    diagonal_effect_coverage: float | None        # None when no model was fitted
    status_rates: tuple[StatusRate, ...]          # every criterion x relation x method
    wall_s: float
    regime: str = ""                  # the simulated noise regime ("" in files before it existed)
    seed_share: float | None = None   # mean estimated seed share of the margins' variance

    @property
    def docs(self) -> int:
        """Mean held-out documents per user."""
        return round(sum(self.n_docs) / len(self.n_docs))

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(f.method for f in self.by_method)

    def figures(self, method: str | None = None) -> MethodFigures:
        m = method or self.method
        for f in self.by_method:
            if f.method == m:
                return f
        raise KeyError(f"method {m!r} not calibrated; have {list(self.methods)}")

    @property
    def margin_coverage(self) -> float:
        """Coverage of the pre-registered method."""
        return self.figures().coverage

    def rates(self, method: str | None = None) -> tuple[StatusRate, ...]:
        m = method or self.method
        return tuple(r for r in self.status_rates if r.method == m)

    def pass_rates(self, relation: str, method: str | None = None) -> tuple[CriterionRate, ...]:
        """PASS (TRIGGERED) rate per criterion at `relation` ("at", LEAST_FAVOURABLE, ...)."""
        return tuple(CriterionRate(r.criterion, r.pass_rate) for r in self.rates(method)
                     if r.relation == relation)

    @property
    def pass_rate_at_threshold(self) -> tuple[CriterionRate, ...]:
        return self.pass_rates("at")

    @property
    def pass_rate_least_favourable(self) -> tuple[CriterionRate, ...]:
        return self.pass_rates(LEAST_FAVOURABLE)

    def to_json(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds, "n_users": self.n_users, "n_docs": list(self.n_docs),
            "n_experiments": self.n_experiments, "n_model_fits": self.n_model_fits,
            "method": self.method, "level": self.level,
            "margin_coverage": self.margin_coverage,
            "margin_coverage_by_method": {f.method: f.coverage for f in self.by_method},
            "margin_coverage_by_margin": [asdict(c) for c in self.coverage_by_margin],
            "mean_interval_width": {f.method: f.mean_width for f in self.by_method},
            "diagonal_effect_coverage": self.diagonal_effect_coverage,
            "pass_rate_at_threshold": {c.criterion: c.pass_rate for c in self.pass_rate_at_threshold},
            "pass_rate_least_favourable": {c.criterion: c.pass_rate
                                           for c in self.pass_rate_least_favourable},
            "status_rates": [asdict(r) for r in self.status_rates],
            "wall_s": self.wall_s,
            "regime": self.regime, "seed_share": self.seed_share,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DesignCalibration:
        cov, width = d["margin_coverage_by_method"], d["mean_interval_width"]
        return cls(
            seeds=int(d["seeds"]), n_users=int(d["n_users"]), n_docs=tuple(d["n_docs"]),
            n_experiments=int(d["n_experiments"]), n_model_fits=int(d["n_model_fits"]),
            method=d["method"], level=float(d["level"]),
            by_method=tuple(MethodFigures(m, float(c), float(width[m])) for m, c in cov.items()),
            coverage_by_margin=tuple(MarginCoverage(float(r["true_margin"]), float(r["coverage"]))
                                     for r in d["margin_coverage_by_margin"]),
            diagonal_effect_coverage=d["diagonal_effect_coverage"],
            status_rates=tuple(StatusRate(**r) for r in d["status_rates"]),
            wall_s=float(d["wall_s"]), regime=str(d.get("regime", "")),
            seed_share=None if d.get("seed_share") is None else float(d["seed_share"]),
        )


@dataclass(frozen=True)
class CalibrationResult:
    """What `calibrate` returns and `calibration.json` holds."""

    designs: tuple[DesignCalibration, ...]
    margins: tuple[float, ...]          # the ladder of true margins simulated
    n_resamples: int
    rng_seed: int
    params: dict[str, Any]              # SimParams.to_json()
    prereg: dict[str, Any]              # the pre-registered settings used
    notes: tuple[str, ...]
    wall_s: float

    def design(self, seeds: int, regime: str | None = None, docs: int | None = None) -> DesignCalibration:
        """The first design with `seeds` seeds (and `regime`, `docs` per user when given)."""
        for d in self.designs:
            if d.seeds == seeds and regime in (None, d.regime) and docs in (None, d.docs):
                return d
        have = [(d.regime, d.seeds, d.docs) for d in self.designs]
        raise KeyError(f"no design with {seeds} seeds, regime {regime}, docs {docs}; have {have}")

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "designs": [d.to_json() for d in self.designs],
                "margins": list(self.margins), "n_resamples": self.n_resamples,
                "rng_seed": self.rng_seed, "params": self.params, "prereg": self.prereg,
                "notes": list(self.notes), "wall_s": self.wall_s}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CalibrationResult:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a calibration file: `schema` is {d.get('schema')!r}, expected {SCHEMA!r}.")
        return cls(tuple(DesignCalibration.from_json(x) for x in d["designs"]), tuple(d["margins"]),
                   int(d["n_resamples"]), int(d["rng_seed"]), d["params"], d["prereg"],
                   tuple(d["notes"]), float(d["wall_s"]))


def calibration_text(result: CalibrationResult) -> str:
    return json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n"


def write_json(doc: dict, out_dir: str | Path, filename: str) -> Path:
    """`out_dir/filename`: one calibration study's JSON document (indented, no NaN), written
    atomically; the folder is made when missing. Every `write_*_calibration` goes through it."""
    from common.atomic import atomic_write_text
    path = Path(out_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def write_calibration(result: CalibrationResult, out_dir: str | Path) -> Path:
    """`out_dir/calibration.json`, written atomically."""
    from common.atomic import atomic_write_text
    return atomic_write_text(Path(out_dir) / "calibration.json", calibration_text(result))


def read_calibration(path: str | Path) -> CalibrationResult:
    path = Path(path)
    try:
        return CalibrationResult.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a readable calibration.json: {type(e).__name__}: {e}") from None
