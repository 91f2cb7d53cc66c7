"""The statuses the data contract names: a criterion's `Status` and the pre-registration's
`PreregStatus`. Standard library only, so that `validation.contract.prereg` (which the runner may import)
needs neither numpy nor polars; `validation.judgment.results` and `validation.stats.types` re-export them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Status(enum.StrEnum):
    """Three-valued status of a criterion (docs/methods.md, section 8)."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    TRIGGERED = "TRIGGERED"
    NOT_TRIGGERED = "NOT_TRIGGERED"

    @classmethod
    def read(cls, passes: bool, fails: bool) -> Status:
        """PASS when the interval reading shows the criterion met, else FAIL when it shows it
        missed, else INCONCLUSIVE (the pass test wins if both hold)."""
        return cls.PASS if passes else cls.FAIL if fails else cls.INCONCLUSIVE


@dataclass(frozen=True)
class PreregStatus:
    """Whether the criteria were fixed before the run (file hash equals the manifest's)."""

    locked: bool               # False = NOT PRE-REGISTERED
    sha256: str                # of the prereg file used now
    expected_sha256: str | None  # from the manifest; None when there is no manifest
    path: str
    note: str                  # e.g. "matches manifest", "changed since the run", "no manifest"
    # command-line settings that differ from the file (docs/gate.md); any one makes it not locked
    overrides: tuple[str, ...] = ()
    accepted: bool = False     # --accept-not-preregistered: a NOT PRE-REGISTERED verdict may pass
    # a run directory's seal as checked (validation.inputs.sealed.SealCheck.to_json); None for external --cells
    seal: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return "pre-registered" if self.locked else "NOT PRE-REGISTERED"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.label,
            "locked": self.locked,
            "sha256": self.sha256,
            "expected_sha256": self.expected_sha256,
            "path": self.path,
            "note": self.note,
            "overrides": list(self.overrides),
            "accepted_not_preregistered": self.accepted,
            "seal": self.seal,
        }
