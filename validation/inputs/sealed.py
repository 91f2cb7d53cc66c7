"""A sealed run directory, checked: the verdict judges what the runner produced (docs/gate.md, 4).

`open_seal(run_dir)` runs before any table is read: a directory the runner made must carry its
seal (`common.seal`), every file must match its sealed SHA-256 (no file missing, changed, added,
or replaced by a folder, FIFO or symlink), and the signature must hold when one is asked for or
can be checked. `check_facts` then cross-checks what was read against the seal's facts and the
runner's own records (`config.json`, `prereg.json`, `manifest.json`, each seed's `done.json`):
the seeds, step counts, users, adapters, each user's held-out document ids, the adapters' statuses
and the pre-registration's hash and settings. Any mismatch is an InputError (exit 2) naming the
file and the fact. A directory without a seal and without any of the runner's records (a table
put in a folder by hand) is judged, NOT PRE-REGISTERED.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from common import seal as sealing
from common.contract import BASE
from common.hashing import sha256_json
from validation.inputs.tables import InputError

# What only the runner writes: a folder holding any of these is a run directory the runner made,
# and must be sealed.
RUNNER_RECORDS = ("config.json", "prereg.json", "seeds", "adapters", "train_log.parquet")
# What every seal the runner writes lists (besides each seed's done.json and its files).
SEALED_RECORDS = ("config.json", "manifest.json", "cells.parquet", "docs.parquet")
NOT_SEALED = ("the run directory is not sealed (no seal.json, and none of the runner's records): its tables "
              "cannot be shown to be what a run produced")


@dataclass(frozen=True)
class SealCheck:
    """The seal as checked: None `seal` for a hand-made folder (not sealed)."""

    seal: sealing.Seal | None
    signature: str  # "verified (key id ...)", "unsigned", "signed, not verified (no key)", "not sealed"

    def to_json(self) -> dict[str, Any]:
        if self.seal is None:
            return {"sealed": False, "signature": self.signature}
        return {"sealed": True, "sha256": self.seal.sha256, "files": len(self.seal.files),
                "signature": self.signature}


def _fail(run_dir: Path, what: str) -> InputError:
    return InputError(f"{what}; the verdict judges only what the runner produced. Run `python -m runners.grid` "
                      f"again with the run's flags to rebuild `{run_dir}` from its verified seeds, or judge the "
                      "tables as external `--cells`/`--docs` (NOT PRE-REGISTERED).")


def open_seal(run_dir: Path, *, require_signature: bool = False, key: bytes | None = None) -> SealCheck:
    """Check `run_dir`'s seal and every file it lists, before anything is read (see the module doc)."""
    run_dir = Path(run_dir)
    if not (run_dir / sealing.SEAL_FILE).exists() and not (run_dir / sealing.SEAL_FILE).is_symlink():
        made = [name for name in RUNNER_RECORDS if (run_dir / name).exists()]
        if made:
            raise _fail(run_dir, f"`{run_dir / sealing.SEAL_FILE}` is missing, but `{run_dir / made[0]}` shows the "
                                 "runner made this directory (an unfinished run, a run of an older version, or a "
                                 "seal removed by hand)")
        if require_signature:
            raise InputError(f"`{run_dir / sealing.SEAL_FILE}` is missing: `--require-signature` needs a run the grid "
                             f"sealed and signed (with ${sealing.KEY_ENV} set).")
        return SealCheck(None, "not sealed")
    try:
        seal = sealing.read_seal(run_dir)
        _complete(run_dir, seal)
        sealing.verify_files(run_dir, seal)
        signature = sealing.verify_signature(run_dir, seal, key if key is not None else sealing.env_key(),
                                             required=require_signature)
    except sealing.SealError as e:
        raise _fail(run_dir, str(e)) from None
    return SealCheck(seal, signature)


def _complete(run_dir: Path, seal: sealing.Seal) -> None:
    """What every seal the runner writes holds: a seal that lacks it was not made by the runner (a
    record removed and the seal re-made would otherwise switch its own cross-checks off)."""
    if seal.facts["per_document"] is not True:
        raise _fail(run_dir, f"`{seal.path}`: `per_document` is not true: the runner scores every document, and a "
                             "run directory is never judged by the weaker seeds-only bootstrap")
    seeds = seal.facts["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(k, int) for k in seeds):
        raise _fail(run_dir, f"`{seal.path}`: `seeds` must list the run's seeds")
    required = list(SEALED_RECORDS) + [f"seeds/seed-{k}/done.json" for k in seeds]
    missing = [name for name in required if name not in seal.files]
    if missing:
        raise _fail(run_dir, f"`{run_dir / missing[0]}` is not sealed: every run the runner seals holds "
                             f"{', '.join(SEALED_RECORDS)} and each seed's done.json")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"`{path}` cannot be read ({type(e).__name__})") from None


def _same(run_dir: Path, where: str, fact: str, have: Any, sealed: Any) -> None:
    if have != sealed:
        raise _fail(run_dir, f"{where}: {fact} {_short(have)} disagrees with the seal's {_short(sealed)}")


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_facts(run_dir: Path, check: SealCheck, study) -> None:
    """Cross-check a sealed run's tables and records against the seal's facts (module doc).

    `study`: the `validation.inputs.sweep.StepsStudy` read from `run_dir`."""
    seal = check.seal
    if seal is None:
        return
    run_dir = Path(run_dir)
    facts = seal.facts
    seeds, counts, users = facts["seeds"], facts["steps"], facts["users"]
    if study.manifest is None or study.docs is None:  # both sealed and verified by `open_seal`
        raise _fail(run_dir, f"`{run_dir / ('manifest.json' if study.manifest is None else 'docs.parquet')}` "
                             "is missing")
    m = study.manifest
    where = f"`{run_dir / 'manifest.json'}`"
    _same(run_dir, where, "run_id", m.run_id, facts["run_id"])
    _same(run_dir, where, "seeds", sorted(m.seeds), seeds)
    _same(run_dir, where, "prereg.sha256", m.prereg.sha256, facts["prereg_sha256"])
    _same(run_dir, where, "prereg.settings", m.prereg.settings, facts["prereg_settings"])
    config = _json(run_dir / "config.json")
    if not isinstance(config, dict):
        raise _fail(run_dir, f"`{run_dir / 'config.json'}` does not hold an object")
    where = f"`{run_dir / 'config.json'}`"
    _same(run_dir, where, "prereg_sha256", config.get("prereg_sha256"), facts["prereg_sha256"])
    _same(run_dir, where, "seeds", sorted(config.get("seeds") or []), seeds)
    _same(run_dir, where, "users", config.get("users"), users)
    train = config.get("train")
    if counts:  # the runner's tables carry `steps` (tables without it are read against `train` by the verdict)
        train = train if isinstance(train, dict) else {}
        _same(run_dir, where, "train.steps_list", sorted(train.get("steps_list") or [train.get("steps")]), counts)
    _same(run_dir, where, "its hash (the run id's suffix)", sha256_json(config, 12),
          str(facts["run_id"]).rsplit("-", 1)[-1])
    _same(run_dir, "`manifest.json`", "config", m.config, config)
    if "prereg.json" in seal.files:
        record = _json(run_dir / "prereg.json")
        where = f"`{run_dir / 'prereg.json'}`"
        _same(run_dir, where, "sha256", record.get("sha256"), facts["prereg_sha256"])
        _same(run_dir, where, "settings", record.get("settings"), facts["prereg_settings"])
    _check_tables(run_dir, facts, study)
    _check_seeds(run_dir, seal, facts, study)


def _check_tables(run_dir: Path, facts: dict, study) -> None:
    cells, docs = study.cells, study.docs
    src = f"`{run_dir / 'cells.parquet'}`"
    _same(run_dir, src, "seeds", sorted(set(cells["seed"].to_list())), facts["seeds"])
    _same(run_dir, src, "step counts (column `steps`)", list(study.counts), facts["steps"])
    _same(run_dir, src, "users (column `eval`)", sorted(set(cells["eval"].to_list())), sorted(facts["users"]))
    _same(run_dir, src, "adapters (column `adapter`)", sorted(set(cells["adapter"].to_list())),
          sorted([BASE, *facts["adapters"]]))
    dsrc = f"`{run_dir / 'docs.parquet'}`"
    _same(run_dir, dsrc, "seeds", sorted(set(docs["seed"].to_list())), facts["seeds"])
    for user in facts["users"]:
        ids = docs.filter(pl.col("eval") == user)["doc_id"].unique().sort().to_list()
        _same(run_dir, dsrc, f"held-out document ids of user {user!r}", ids, sorted(facts["heldout"][user]))


def _check_seeds(run_dir: Path, seal: sealing.Seal, facts: dict, study) -> None:
    """Each seed's `done.json` (sealed: `check_facts`) records its files, and each has that same
    SHA-256 in the seal; the run's `docs.parquet` is
    exactly the seeds' own document tables put together (as the runner assembles it); and each
    adapter row's status equals what its seed's `done.json` recorded. So a table rewritten and
    re-sealed still disagrees with the per-seed records it was assembled from."""
    has_steps = "steps" in study.docs.columns and study.docs["steps"].null_count() == 0
    rows = (study.docs.filter(pl.col("adapter") != BASE)
            .group_by(["seed", "steps", "adapter"] if has_steps else ["seed", "adapter"])
            .agg(pl.col("status").unique()))
    parts = []
    for seed in facts["seeds"]:
        rel = f"seeds/seed-{seed}/done.json"  # sealed: `_complete`
        done = _json(run_dir / rel)
        files = done.get("files") if isinstance(done, dict) else None
        if not isinstance(files, dict) or not files:
            raise _fail(run_dir, f"`{run_dir / rel}` records no file hashes")
        for name, digest in files.items():
            _same(run_dir, f"`{run_dir / rel}`", f"SHA-256 of `{name}`", digest, seal.files.get(name))
        parts += [run_dir / name for name in files if Path(name).name == "docs.parquet"]
        by_steps = done.get("statuses_by_steps") or {}
        for r in rows.filter(pl.col("seed") == seed).iter_rows(named=True):
            recorded = ((by_steps.get(str(r["steps"])) or {}) if has_steps else (done.get("statuses") or {})
                        ).get(r["adapter"])
            if r["status"] != [recorded]:
                raise _fail(run_dir, f"`{run_dir / 'docs.parquet'}`: seed {seed}, steps {r.get('steps')}, adapter "
                                     f"{r['adapter']!r} has status {r['status']}, `{run_dir / rel}` recorded "
                                     f"{recorded!r}")
    whole = pl.read_parquet(run_dir / "docs.parquet")
    if not parts:
        raise _fail(run_dir, "no seed's done.json records its document table")
    key = [c for c in ("seed", "steps", "adapter", "eval", "doc_id") if c in whole.columns]
    assembled = pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")
    if set(whole.columns) != set(assembled.columns) or not whole.sort(key).equals(
            assembled.select(whole.columns).sort(key)):
        raise _fail(run_dir, f"`{run_dir / 'docs.parquet'}` is not the seeds' document tables put together "
                             f"(`seeds/seed-*/.../docs.parquet`, recorded in each `done.json`)")
