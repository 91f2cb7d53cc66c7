"""The routing verdict's typed results (ROUTING, AVERAGING, NOISE, the storage bill; docs/routing.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from common.contract import noise_parts
from validation.judgment.user_results import CriterionResult, OptionalCriterion
from validation.stats.types import Interval, _interval, _num

NAMES = ("routing", "averaging", "noise")
RUN_WITH_ROUTING = "run the grid with --routing (`python -m runners.grid --routing`) to score these rows"
MIN_PAIRS_RANK = 10   # fewer pairs: the rank correlation is descriptive only
NAMES_SHOWN = 6


# ---- result types -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """One paired figure on user `user`'s text: 1 - ppl(`row`) / ppl(`against`), with its interval."""

    user: str          # whose held-out text
    row: str           # the numerator's row: the own adapter (= `user`), `avg:<a>+<b>` or `noise:<user>@<s>`
    against: str       # the denominator's row, or "best_other" / "worst_other" (per resample)
    gain: float
    ci: Interval

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "row": self.row, "against": self.against, "gain": _num(self.gain),
                "ci": _interval(self.ci)}


@dataclass(frozen=True)
class PairResult:
    """An `avg:<a>+<b>` row: each contributor's own adapter against it, its gain over `base`."""

    a: str
    b: str
    own_vs_average: tuple[Comparison, Comparison]        # on a's text, on b's text
    average_vs_base: tuple[Comparison, Comparison] | None  # None without a `base` row
    transfer_distance: float                             # validation.exploratory.similarity's d(a, b), nats/token

    @property
    def name(self) -> str:
        return f"avg:{self.a}+{self.b}"

    @property
    def helps(self) -> tuple[str, ...]:
        """The contributors whose text the average improves over `base` (interval above 0)."""
        if self.average_vs_base is None:
            return ()
        return tuple(c.user for c in self.average_vs_base if c.ci.known and c.ci.low > 0)

    @property
    def reading(self) -> str:
        if self.average_vs_base is None:
            return "no base row"
        return {2: "helps both", 1: "helps one", 0: "helps neither"}[len(self.helps)]

    @property
    def smaller_gain(self) -> float:
        """The smaller of the average's two gains over `base` (NaN without `base`)."""
        if self.average_vs_base is None:
            return math.nan
        return min(c.gain for c in self.average_vs_base)

    def to_json(self) -> dict[str, Any]:
        return {"pair": self.name, "users": [self.a, self.b],
                "own_vs_average": [c.to_json() for c in self.own_vs_average],
                "average_vs_base": None if self.average_vs_base is None else [c.to_json()
                                                                               for c in self.average_vs_base],
                "reading": self.reading, "helps": list(self.helps),
                "transfer_distance": _num(self.transfer_distance)}


@dataclass(frozen=True)
class RankLink:
    """Does the transfer distance predict which averages help? Spearman's rho over pairs of the
    pair's transfer distance with the smaller of the average's two gains over `base`."""

    rho: float
    n_pairs: int
    descriptive: bool
    words: str

    def to_json(self) -> dict[str, Any]:
        return {"statistic": "spearman", "x": "transfer_distance", "y": "smaller gain of the average over base",
                "rho": _num(self.rho), "n_pairs": self.n_pairs, "descriptive_only": self.descriptive,
                "words": self.words}


@dataclass(frozen=True)
class RoutingCriterion(OptionalCriterion):
    """ROUTING / AVERAGING / NOISE: its CriterionResult, or NOT_APPLICABLE with the reason; and what
    its status means for the routing decision, in one sentence."""

    name: str
    result: CriterionResult | None
    reason: str = ""
    meaning: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.result is None:
            return {**self.not_applicable_json(), "meaning": self.meaning}
        return self.result.to_json() | {"meaning": self.meaning}


@dataclass(frozen=True)
class StorageBill:
    """The bytes of one user's adapter (the manifest's `routing.storage` record) and the bill for
    `users` users; every figure None when the run did not record it."""

    users: int
    parameters: int | None = None
    bytes_float32: int | None = None
    bytes_float16: int | None = None

    @property
    def recorded(self) -> bool:
        return self.bytes_float32 is not None

    def total(self, per_user: int | None) -> int | None:
        return None if per_user is None else per_user * self.users

    @property
    def words(self) -> str:
        if not self.recorded:
            return "storage not recorded (the run's manifest has no `routing.storage` record: " + RUN_WITH_ROUTING + ")"
        return (f"{human_bytes(self.bytes_float32)} per user in float32 ({human_bytes(self.bytes_float16)} in "
                f"float16; {self.parameters:,} parameters): {human_bytes(self.total(self.bytes_float32))} "
                f"({human_bytes(self.total(self.bytes_float16))}) for {self.users:,} users")

    def to_json(self) -> dict[str, Any]:
        return {"recorded": self.recorded, "parameters": self.parameters, "bytes_float32": self.bytes_float32,
                "bytes_float16": self.bytes_float16, "users": self.users,
                "total_bytes_float32": self.total(self.bytes_float32),
                "total_bytes_float16": self.total(self.bytes_float16), "words": self.words}


@dataclass(frozen=True)
class RoutingResult:
    """verdict.json `routing`."""

    level: float
    interval_method: str
    comparator: str
    rows: tuple[str, ...]                       # the routing rows present
    criteria: tuple[RoutingCriterion, ...]      # routing, averaging, noise
    generic: tuple[Comparison, ...]             # ROUTING: own vs each generic option, per user
    pairs: tuple[PairResult, ...]
    link: RankLink | None
    curve: tuple[Comparison, ...]               # NOISE: sigma 0 (the margins) then every noise row
    sigmas: tuple[float, ...]
    storage: StorageBill
    notes: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        return bool(self.rows)

    def criterion(self, name: str) -> RoutingCriterion:
        return next(c for c in self.criteria if c.name == name)

    def curve_at(self, sigma: float) -> tuple[Comparison, ...]:
        return tuple(c for c in self.curve if math.isclose(_sigma_of(c), sigma, abs_tol=0.0))

    def to_json(self) -> dict[str, Any]:
        return {"present": self.present, "level": self.level, "interval_method": self.interval_method,
                "comparator": self.comparator, "rows": list(self.rows),
                "criteria": {c.name: c.to_json() for c in self.criteria},
                "generic": [c.to_json() for c in self.generic],
                "pairs": [p.to_json() for p in self.pairs],
                "similarity_link": None if self.link is None else self.link.to_json(),
                "noise_curve": [c.to_json() | {"sigma": _sigma_of(c)} for c in self.curve],
                "sigmas": list(self.sigmas), "storage": self.storage.to_json(), "notes": list(self.notes)}


def _sigma_of(c: Comparison) -> float:
    parts = noise_parts(c.row)
    return 0.0 if parts is None else parts[1]


def human_bytes(n: int | None) -> str:
    """Bytes in decimal units (1 KB = 1000 bytes), three significant figures: 9216 -> '9.22 KB'."""
    if n is None:
        return "n/a"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"
