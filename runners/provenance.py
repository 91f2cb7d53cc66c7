"""The run's manifest (validation.contract.manifest.Manifest): configuration, fixture provenance, base model,
pre-registration, package versions, git commit, timings and host."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from common.contract import STATUS_VALUES
from fixtures.corpus import FixtureSet
from runners import rundir
from runners.base_model import BaseModel
from runners.settings import GridSettings
from validation.contract.manifest import (
    AdapterRecord,
    BaseModelRecord,
    FixtureSetRecord,
    GitRecord,
    LeakageRecord,
    Manifest,
    MemoryRecord,
    PreregRecord,
    Provenance,
    UserRecord,
)


def build_manifest(config: dict, s: GridSettings, fs: FixtureSet, base: BaseModel, run_dir: Path,
                   timings: dict, extra_versions: dict[str, str] | None = None,
                   memory: dict | None = None, routing: dict | None = None) -> Manifest:
    n_params = base.model.n_adapter_params()
    one = next((run_dir / "adapters" / f"seed-{s.seeds[0]}").rglob("*.safetensors"), None)  # any count's
    return Manifest(
        run_id=run_dir.name,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        command=tuple(sys.argv) if sys.argv and "grid" in sys.argv[0] else None,
        config=config,
        seeds=tuple(s.seeds),
        fixture_set=FixtureSetRecord(
            name=fs.name, description=fs.description, users_sha256=fs.sha256(),
            pretrain_sha256=fs.pretrain_sha256(), pretrain_provenance=Provenance(**_prov(fs.pretrain_provenance)),
            pretrain_bytes=sum(d.n_bytes for d in fs.pretrain),
            users=tuple(UserRecord(name=u.name, sha256=u.sha256(), **_prov(u.provenance), train_bytes=u.train_bytes,
                                   heldout_bytes=u.heldout_bytes, n_train_docs=len(u.train),
                                   n_heldout_docs=len(u.heldout)) for u in fs.users),
            leakage=tuple(LeakageRecord(a, b, n) for a, b, n in fs.leakage),
        ),
        base_model=BaseModelRecord(key=base.key, sha256=base.sha256, path=str(base.path),
                                   params=base.model.n_base_params(), pretrain_seconds=base.pretrain_seconds,
                                   built_now=base.built_now),
        prereg=PreregRecord(path=str(s.prereg.resolve()), sha256=s.prereg_sha256,
                            settings=recorded_prereg_settings(run_dir, s)),
        adapter=AdapterRecord(params=n_params, bytes_fp32=4 * n_params, norm_layers=len(base.model.norm_names()),
                              file_bytes=one.stat().st_size if one else None),
        status_values=dict(STATUS_VALUES),
        versions={**_versions(), **(extra_versions or {})},
        git=_git(),
        timings=timings,
        host={"hostname": socket.gethostname(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "device": s.device, **_dtype(s),
              "cuda": torch.cuda.get_device_name() if s.device == "cuda" else None},
        memory=None if memory is None else MemoryRecord(**memory),
        routing=routing,
    )


PREREG_RECORD = "prereg.json"   # the run directory's record of the resolved pre-registration


def record_prereg_settings(run_dir: Path, s: GridSettings) -> None:
    """Write `prereg.json` when the run starts: the file's hash and every setting as resolved now,
    defaults included, so that a later version's changed default cannot change what the locked
    file meant (validation.contract.prereg_check.with_recorded_settings reads it from the manifest). A resumed
    run keeps the record of its first start (same hash); nothing is recorded without settings."""
    if s.prereg_settings is None or recorded_prereg_settings(run_dir, s) is not None:
        return
    rundir.write_json({"sha256": s.prereg_sha256, "settings": s.prereg_settings.settings()}, run_dir / PREREG_RECORD)


def recorded_prereg_settings(run_dir: Path, s: GridSettings) -> dict | None:
    """The settings `record_prereg_settings` wrote for this file's hash, or None."""
    try:
        doc = json.loads((run_dir / PREREG_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("sha256") != s.prereg_sha256 or not isinstance(doc.get("settings"), dict):
        return None
    return doc["settings"]


def _dtype(s: GridSettings) -> dict:
    """The frozen base weights' dtype (runners.dtypes): what `--dtype` asked for, what it resolved to, why."""
    c = s.dtype_choice
    out = {"dtype": s.dtype, "dtype_requested": c.requested if c else s.dtype,
           "dtype_reason": c.reason if c else "set directly (not from the command line)"}
    if s.dtype_check is not None:
        out["dtype_check"] = s.dtype_check
    return out


def _prov(p) -> dict:
    return {"source": p.source, "licence": p.licence, "source_sha256": p.sha256, "route": p.route, "notes": p.notes}


def _versions() -> dict:
    import numpy
    import polars
    import safetensors
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "polars": polars.__version__, "safetensors": safetensors.__version__}


def _git() -> GitRecord:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
                               text=True, timeout=10).stdout.strip() != ""
        return GitRecord(commit=commit or None, dirty=dirty)
    except (OSError, subprocess.SubprocessError):
        return GitRecord()
