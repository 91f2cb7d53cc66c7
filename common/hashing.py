"""SHA-256 helpers: one place for hashing files, bytes and JSON-able configurations."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any, length: int | None = None) -> str:
    """Hex SHA-256 of `obj` as canonical JSON (sorted keys; `default=str` for paths and the like),
    cut to `length` hex digits when given."""
    digest = sha256_text(json.dumps(obj, sort_keys=True, default=str))
    return digest if length is None else digest[:length]


__all__ = ["sha256_bytes", "sha256_file", "sha256_json", "sha256_text"]
