"""Atomic file writes: a temporary file in the same directory, fsync, then rename.

A crash (or a bad input detected half-way) never leaves a half-written file behind, and a file
already written is replaced only by a complete new version.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | os.PathLike, writer: Callable[[str], object]) -> Path:
    """Call `writer(tmp_path)` to produce the file, then rename it onto `path` atomically.

    Use for writers that want a path, e.g. `lambda p: df.write_parquet(p)`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def replace_together(writers: dict[Path, Callable[[str], object] | None]) -> None:
    """Replace a set of files in one directory together, or leave every one of them as it was.

    `writers`: {final path: writer(tmp_path) producing the new file, or None to remove the file}.
    Every new file is written (and fsynced) to a temporary name first; a failure there removes the
    temporaries and leaves the old files untouched. Then the old files are moved aside, the new
    ones renamed in, and the old ones deleted; a failure while swapping (e.g. an old file that
    cannot be moved: immutable, or a folder) puts back every old file and removes every new one,
    so old and new outputs never stand side by side. A `path` whose writer makes a folder (`charts/`)
    is swapped the same way."""
    staged: dict[Path, Path] = {}
    try:
        for path, writer in writers.items():
            if writer is None:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)) / path.name
            writer(str(tmp))
            if tmp.is_file():
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o666 & ~_umask())
            staged[path] = tmp
    except BaseException:
        for tmp in staged.values():
            remove_tree(tmp.parent)
        for path, writer in writers.items():  # the one that failed
            if writer is not None and path not in staged:
                for left in path.parent.glob(f".{path.name}.*.tmp"):
                    remove_tree(left)
        raise
    aside: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for path in writers:
            if path.exists() or path.is_symlink():
                backup = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", suffix=".tmp", dir=path.parent))
                try:
                    os.replace(path, backup / path.name)
                except BaseException:
                    remove_tree(backup)
                    raise
                aside[path] = backup / path.name
        for path, tmp in staged.items():
            os.replace(tmp, path)
            placed.append(path)
    except BaseException:
        for path in placed:
            remove_tree(path)
        for path, backup in aside.items():
            try:
                os.replace(backup, path)
            except OSError:
                pass
        for tmp in staged.values():
            remove_tree(tmp.parent)
        for backup in aside.values():
            remove_tree(backup.parent)
        raise
    for tmp in staged.values():
        remove_tree(tmp.parent)
    for backup in aside.values():
        remove_tree(backup.parent)


def remove_tree(path: Path) -> None:
    """Remove a file or a folder tree; a missing one is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            for q in sorted(path.rglob("*"), reverse=True):
                q.rmdir() if q.is_dir() and not q.is_symlink() else q.unlink()
            path.rmdir()
        else:
            path.unlink()
    except FileNotFoundError:
        pass
