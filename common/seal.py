"""The seal of a run directory: what the runner wrote, bound by SHA-256, and the facts the verdict
relies on (docs/gate.md, section 4).

The runner writes `seal.json` last, when every seed is done and the run's tables, records and
manifest are written: the SHA-256 of every file it wrote (tables, adapters, per-seed records,
`config.json`, `prereg.json`, `manifest.json`) and the facts the verdict judges by (seeds, step
counts, users, adapters, each user's held-out document ids, the pre-registration's hash and
settings). With a key in `$NORMADAPT_SEAL_KEY` it also writes `seal.sig`, an HMAC-SHA256 of
`seal.json`'s bytes, so whoever holds the key (a CI job) can tell a seal it made from one rewritten
by hand. The verdict checks every file against the seal (`verify_files`) and the tables against the
facts (`validation.inputs.sealed`); the signature when it is present and the key is known, or when asked
(`--require-signature`).

Standard library only: the runner writes a seal, the verdict reads one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.hashing import sha256_bytes, sha256_file

SEAL_FILE = "seal.json"
SIGNATURE_FILE = "seal.sig"
KEY_ENV = "NORMADAPT_SEAL_KEY"
SEAL_FORMAT = 1
HMAC_ALGORITHM = "hmac-sha256"

# Files in a run directory that the runner never writes and the seal never lists: the verdict's
# outputs (written after the seal, replaced by every verdict), the calibration the verdict may
# cache there, the lock, and the seal itself.
VERDICT_OUTPUTS = ("verdict.json", "junit.xml", "report.html", "calibration.json")
UNSEALED_DIRS = ("charts",)
# Facts every seal holds (their meaning: `seal_facts`).
FACT_KEYS = ("run_id", "seeds", "steps", "users", "adapters", "heldout", "prereg_sha256", "prereg_settings",
             "per_document")


class SealError(ValueError):
    """A seal that does not hold, or a file it does not vouch for: the message names the file and fact."""


@dataclass(frozen=True)
class Seal:
    """A parsed `seal.json`: `files` {path relative to the run directory: SHA-256}; `facts` as
    `seal_facts` made them; `sha256` the digest of the seal file's bytes."""

    files: dict[str, str]
    facts: dict[str, Any]
    sha256: str
    path: Path
    raw: bytes  # the bytes the signature covers, as read once


def seal_facts(*, run_id: str, seeds: Iterable[int], steps: Iterable[int], users: Iterable[str],
               adapters: Iterable[str], heldout: dict[str, Iterable[str]], prereg_sha256: str | None,
               prereg_settings: dict[str, Any] | None, per_document: bool = True) -> dict[str, Any]:
    """The facts a verdict relies on, in one JSON-able record.

    `seeds` and `steps` (the step counts evaluated) sorted; `users` in set order; `adapters` the
    trained rows in bank order (users, `pooled`, `loo:<user>`; `base` is implied); `heldout` each
    user's held-out document ids in order; `per_document`: the run scored every document
    (`docs.parquet`), so its bootstrap resamples documents and may never fall back to seeds only."""
    return {"run_id": run_id, "seeds": sorted(int(k) for k in seeds), "steps": sorted(int(k) for k in steps),
            "users": list(users), "adapters": list(adapters),
            "heldout": {u: list(ids) for u, ids in heldout.items()},
            "prereg_sha256": prereg_sha256, "prereg_settings": prereg_settings, "per_document": per_document}


def sealable_files(run_dir: Path) -> list[Path]:
    """Every regular file of the run directory the runner wrote: all but the lock, temporary and
    hidden files, the seal, and the verdict's outputs (`VERDICT_OUTPUTS`, `charts/`)."""
    out = []
    for p in sorted(run_dir.rglob("*")):
        rel = p.relative_to(run_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if rel.parts[0] in UNSEALED_DIRS or (len(rel.parts) == 1 and rel.name in VERDICT_OUTPUTS + (
                SEAL_FILE, SIGNATURE_FILE)):
            continue
        if p.is_file() and not p.is_symlink():
            out.append(p)
    return out


def seal_text(run_dir: Path, files: Iterable[Path], facts: dict[str, Any]) -> str:
    """`seal.json`'s text: the files' SHA-256 (sorted by path) and the facts."""
    missing = [k for k in FACT_KEYS if k not in facts]
    if missing:
        raise ValueError(f"seal facts lack {missing}")
    hashes = {p.relative_to(run_dir).as_posix(): sha256_file(p) for p in files}
    doc = {"format": SEAL_FORMAT, "files": dict(sorted(hashes.items())), "facts": facts}
    return json.dumps(doc, indent=1, sort_keys=False) + "\n"


def signature_text(seal_bytes: bytes, key: bytes) -> str:
    """`seal.sig`: an HMAC-SHA256 of the seal's bytes, with the key's id (first 16 hex digits of its
    SHA-256) so a verdict given the wrong key says so."""
    return json.dumps({"algorithm": HMAC_ALGORITHM, "key_id": key_id(key), "mac": _mac(key, seal_bytes)},
                      indent=1) + "\n"


def _mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    return sha256_bytes(key)[:16]


def env_key() -> bytes | None:
    """The signing key from `$NORMADAPT_SEAL_KEY` (its UTF-8 bytes), or None when unset or empty."""
    raw = os.environ.get(KEY_ENV, "")
    return raw.encode("utf-8") if raw else None


def write_seal(run_dir: Path, facts: dict[str, Any], key: bytes | None = None) -> Path:
    """Seal `run_dir`: hash every file the runner wrote (`sealable_files`), write `seal.json`, and
    `seal.sig` when a key is given (else remove a stale one). Call it last."""
    run_dir = Path(run_dir)
    text = seal_text(run_dir, sealable_files(run_dir), facts)
    path = atomic_write_text(run_dir / SEAL_FILE, text)
    sig = run_dir / SIGNATURE_FILE
    if key:
        atomic_write_text(sig, signature_text(text.encode("utf-8"), key))
    else:
        sig.unlink(missing_ok=True)
    return path


def read_seal(run_dir: Path) -> Seal:
    """Parse `run_dir/seal.json`; a seal that is not what the runner writes is a SealError naming it."""
    path = Path(run_dir) / SEAL_FILE
    if not path.is_file() or path.is_symlink():
        raise SealError(f"`{path}` is missing or not a regular file")
    raw = path.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SealError(f"`{path}` is not valid JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != SEAL_FORMAT:
        raise SealError(f"`{path}`: `format` must be {SEAL_FORMAT}, got "
                        f"{doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}")
    files, facts = doc.get("files"), doc.get("facts")
    if not isinstance(files, dict) or not files or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in files.items()):
        raise SealError(f"`{path}`: `files` must map each file to its SHA-256")
    if not isinstance(facts, dict) or any(k not in facts for k in FACT_KEYS):
        raise SealError(f"`{path}`: `facts` must hold {list(FACT_KEYS)}")
    for rel in files:
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts or not parts:
            raise SealError(f"`{path}`: file entry {rel!r} leaves the run directory")
    return Seal(files=files, facts=facts, sha256=sha256_bytes(raw), path=path, raw=raw)


def verify_files(run_dir: Path, seal: Seal) -> None:
    """Every sealed file exists, is a regular file (no symlink, folder or FIFO) and has its sealed
    SHA-256; every file the runner could have written (`sealable_files`) is sealed. SealError names
    the first file that is not so."""
    run_dir = Path(run_dir)
    for rel, digest in seal.files.items():
        p = run_dir / rel
        if p.is_symlink() or not p.exists():
            raise SealError(f"`{p}` is sealed but {'a symlink' if p.is_symlink() else 'missing'}")
        if not p.is_file():
            raise SealError(f"`{p}` is sealed as a file but is a folder, FIFO or device")
        try:
            actual = sha256_file(p)
        except OSError as e:
            raise SealError(f"`{p}` cannot be read ({e.strerror})") from None
        if actual != digest:
            raise SealError(f"`{p}` changed after the run was sealed (sha256 {actual[:12]}... != sealed "
                            f"{digest[:12]}...)")
    extra = [p for p in sealable_files(run_dir) if p.relative_to(run_dir).as_posix() not in seal.files]
    if extra:
        raise SealError(f"`{extra[0]}` was added after the run was sealed ({len(extra)} file(s) the runner did "
                        "not write)")


def verify_signature(run_dir: Path, seal: Seal, key: bytes | None, *, required: bool) -> str:
    """Check `seal.sig` against `seal.json`'s bytes with `key`. Returns what the verdict records:
    "verified (key id ...)", "unsigned" or "signed, not verified (no key)". A signature that does
    not match, a wrong key, or `required` without a signature or a key is a SealError."""
    sig = Path(run_dir) / SIGNATURE_FILE
    if not sig.exists():
        if required:
            raise SealError(f"`{sig}` is missing: the run was not signed (run the grid with ${KEY_ENV} set)")
        return "unsigned"
    if key is None:
        if required:
            raise SealError(f"`--require-signature` needs the key in ${KEY_ENV} to check `{sig}`")
        return "signed, not verified (no key)"
    try:
        doc = json.loads(sig.read_text(encoding="utf-8"))
        algorithm, kid, mac = doc["algorithm"], doc["key_id"], doc["mac"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise SealError(f"`{sig}` is not a signature this suite writes") from None
    if algorithm != HMAC_ALGORITHM:
        raise SealError(f"`{sig}`: algorithm {algorithm!r} is not {HMAC_ALGORITHM!r}")
    if kid != key_id(key):
        raise SealError(f"`{sig}` was made with another key (key id {str(kid)[:16]}, ${KEY_ENV} has "
                        f"{key_id(key)})")
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(key, seal.raw)):
        raise SealError(f"`{seal.path}` does not match its signature `{sig}`: the seal was rewritten after "
                        "it was signed")
    return f"verified (key id {kid})"


# -- the runner's own records, signed so that a resume trusts only what this key's grid wrote ------

def record_signature_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sig")


def sign_record(path: Path, key: bytes | None) -> None:
    """With a key: write `<record>.sig`, an HMAC of the record's bytes (a seed's `done.json`,
    `trained.json`, `steps-<k>.json`). Without one: remove a stale signature."""
    sig = record_signature_path(path)
    if key:
        atomic_write_text(sig, signature_text(Path(path).read_bytes(), key))
    else:
        sig.unlink(missing_ok=True)


def record_signed(path: Path, key: bytes) -> bool:
    """Does `<record>.sig` hold this key's HMAC of the record's bytes?"""
    try:
        doc = json.loads(record_signature_path(path).read_text(encoding="utf-8"))
        return doc.get("key_id") == key_id(key) and hmac.compare_digest(str(doc.get("mac")),
                                                                         _mac(key, Path(path).read_bytes()))
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False
