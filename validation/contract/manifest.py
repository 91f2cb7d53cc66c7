"""`manifest.json` of a run directory: one typed record, written by the runner, read (and
validated) by the verdict and the report. Every field is described in docs/formats.md.

Part of the data contract the runner may import (it needs only the standard library): the runner
builds a `Manifest` and writes `manifest.to_json()`; `read_manifest` turns a file back into one,
refusing a malformed file with a message naming the file and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = 1  # bump when a field changes meaning; readers refuse newer formats


class ManifestError(ValueError):
    """A manifest.json that is not what the runner writes: the message names the file and field."""


@dataclass(frozen=True)
class Provenance:
    source: str | None = None
    licence: str | None = None
    source_sha256: str | None = None
    route: str | None = None
    notes: str | None = None


@dataclass(frozen=True, kw_only=True)
class UserRecord(Provenance):
    """One user of the fixture set: its text's hash and sizes, and where the text came from."""

    name: str
    sha256: str
    train_bytes: int
    heldout_bytes: int
    n_train_docs: int
    n_heldout_docs: int


@dataclass(frozen=True)
class LeakageRecord:
    part_a: str
    part_b: str
    longest_shared_bytes: int


@dataclass(frozen=True)
class FixtureSetRecord:
    name: str
    users_sha256: str
    pretrain_sha256: str
    users: tuple[UserRecord, ...]
    description: str = ""
    pretrain_provenance: Provenance = field(default_factory=Provenance)
    pretrain_bytes: int | None = None
    leakage: tuple[LeakageRecord, ...] = ()


@dataclass(frozen=True)
class BaseModelRecord:
    key: str
    sha256: str
    path: str
    params: int
    pretrain_seconds: float | None = None
    built_now: bool | None = None


@dataclass(frozen=True)
class PreregRecord:
    path: str
    sha256: str
    # every setting as resolved when the run started (`Prereg.to_json()` without path and hash):
    # the settings the file leaves out keep that meaning (validation.contract.prereg_check.with_recorded_settings)
    settings: dict[str, Any] | None = None


@dataclass(frozen=True)
class AdapterRecord:
    params: int
    bytes_fp32: int
    norm_layers: int
    file_bytes: int | None = None


@dataclass(frozen=True)
class MemoryRecord:
    """The run's memory plan (runners.memory.MemoryPlan) and what was measured against it."""

    budget_bytes: int
    budget_source: str
    peak_bytes: int  # the plan's estimate: max(train_peak_bytes, eval_peak_bytes)
    train_peak_bytes: int
    eval_peak_bytes: int
    fixed_bytes: int
    weights_bytes: int
    bank_bytes: int
    activation_bytes_per_window: int
    logit_chunk: int
    logit_bytes: int
    rows: int
    micro_rows: int
    micro_batches: int
    checkpointing: bool
    eval_batch: int
    context: int
    n_adapters: int
    step_flops: float = 0.0
    throughput_flops_s: float = 0.0
    step_seconds: float = 0.0  # estimated: step_flops / throughput_flops_s
    step_seconds_measured: float | None = None  # training time / steps of the seeds trained by this command
    peak_rss_bytes: int | None = None  # the process's measured peak resident memory (CPU) when the run ended


@dataclass(frozen=True)
class GitRecord:
    commit: str | None = None
    dirty: bool | None = None


@dataclass(frozen=True)
class Manifest:
    """What a run did and with what: the first thing a reviewer checks."""

    run_id: str
    created: str  # local time, ISO 8601
    config: dict[str, Any]  # everything that determines the results; its hash names the run
    seeds: tuple[int, ...]
    fixture_set: FixtureSetRecord
    base_model: BaseModelRecord
    prereg: PreregRecord
    adapter: AdapterRecord
    command: tuple[str, ...] | None = None
    status_values: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git: GitRecord = field(default_factory=GitRecord)
    timings: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    memory: MemoryRecord | None = None  # absent in manifests written before the memory plan existed
    # `python -m runners.grid --routing` (docs/routing.md): the routing rows' settings and `storage`
    # {parameters, bytes_float32, bytes_float16}, read by `validation.judgment.routing.storage_bill`
    routing: dict[str, Any] | None = None
    format: int = MANIFEST_FORMAT

    def to_json(self) -> dict[str, Any]:
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- reading -----------------------------------------------------------------------------------

_NESTED: dict[str, type] = {
    "fixture_set": FixtureSetRecord, "base_model": BaseModelRecord, "prereg": PreregRecord,
    "adapter": AdapterRecord, "git": GitRecord, "pretrain_provenance": Provenance, "memory": MemoryRecord,
}
_RECORD_LISTS: dict[str, type] = {"users": UserRecord, "leakage": LeakageRecord}
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
}


def _check_scalar(value: Any, annotation: str, where: str) -> Any:
    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise ManifestError(f"{where}: missing (null); expected {annotation}")
    base = annotation.replace(" | None", "").strip()
    if base in _SCALARS:
        ok = isinstance(value, _SCALARS[base]) and not (base in ("int", "float") and isinstance(value, bool))
        if base == "float" and ok and not math.isfinite(float(value)):
            ok = False
        if not ok:
            raise ManifestError(f"{where}: expected {base}, got {value!r}")
        return value
    if base.startswith("dict"):
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object, got {type(value).__name__}")
        return value
    if base.startswith("tuple[int"):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ManifestError(f"{where}: expected a list of integers, got {value!r}")
        return tuple(value)
    if base.startswith("tuple[str"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ManifestError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    return value


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected an object, got {type(raw).__name__}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        here = f"{where}.{f.name}" if where else f.name
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ManifestError(f"{here}: missing")
            continue
        value = raw[f.name]
        if f.name in _NESTED and value is not None:
            kwargs[f.name] = _build(_NESTED[f.name], value, here)
        elif f.name in _RECORD_LISTS:
            if not isinstance(value, list):
                raise ManifestError(f"{here}: expected a list of objects")
            kwargs[f.name] = tuple(_build(_RECORD_LISTS[f.name], v, f"{here}[{i}]") for i, v in enumerate(value))
        else:
            kwargs[f.name] = _check_scalar(value, str(f.type), here)
    return cls(**kwargs)


def manifest_from_json(doc: Any, source: str = "manifest.json") -> Manifest:
    """Validate a parsed manifest.json. Unknown keys are kept out (older or newer extras are not
    errors); a missing or mistyped field, or a newer `format`, is a ManifestError naming it."""
    if not isinstance(doc, dict):
        raise ManifestError(f"{source}: must hold a JSON object")
    fmt = doc.get("format", 1)  # manifests written before the field existed are format 1
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise ManifestError(f"{source}: `format` must be a positive integer, got {fmt!r}")
    if fmt > MANIFEST_FORMAT:
        raise ManifestError(f"{source}: manifest format {fmt} is newer than this suite reads ({MANIFEST_FORMAT}); "
                            "upgrade normadapt-verdict")
    try:
        return _build(Manifest, {**doc, "format": fmt}, "")
    except ManifestError as e:
        raise ManifestError(f"{source}: field `{e}`") from None


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON: {e}") from None
    return manifest_from_json(doc, str(path))
