"""The run directory's lock: one process at a time writes a run directory, the grid or a verdict.

An exclusive, non-blocking `flock` on `<dir>/.lock`, released when the process ends (also when it is
killed). Taking it also removes the temporary files an interrupted write left behind (`.<name>.*.tmp`,
common.atomic): while the lock is held no other process of this suite writes there, so every such
file is an orphan. Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from common.atomic import remove_tree

LOCK_NAME = ".lock"


class RunLocked(RuntimeError):
    """Another process (a grid or a verdict) holds the directory's lock."""


def remove_orphan_temps(root: Path, *, recursive: bool = True) -> list[Path]:
    """Delete `.<name>.<random>.tmp` files (and such folders) in `root` (and below it when
    `recursive`); returns them."""
    gone = []
    found = Path(root).rglob(".*.tmp") if recursive else Path(root).glob(".*.tmp")
    for p in sorted(found, reverse=True):
        try:
            remove_tree(p)
            gone.append(p)
        except OSError:
            continue
    return gone


class RunLock:
    """`with RunLock(dir, "grid"):` holds `<dir>/.lock`; RunLocked names the holder when it is taken.

    The file holds "<pid> <who>". It is removed when released, so a finished directory keeps no
    stale `.lock`; a lock taken on a file that was removed meanwhile is taken again on the new one."""

    def __init__(self, run_dir: str | os.PathLike, who: str = "runner", *, clean_below: bool = True):
        self.path = Path(run_dir) / LOCK_NAME
        self.who = who
        self.clean_below = clean_below  # orphans in sub-folders too (a run directory), or only at the top
        self._fh = None
        self.orphans: list[Path] = []

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            try:  # never through a symlink: a planted `.lock -> somefile` must not be truncated
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                raise RunLocked(f"`{self.path}` cannot be used as the lock ({e.strerror}): remove it if no grid or "
                                "verdict is running") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise RunLocked(f"`{self.path}` is not a regular file: remove it if no grid or verdict is running")
            fh = os.fdopen(fd, "a+")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                fh.close()
                raise RunLocked(f"`{self.path.parent}` is locked by another process ({_holder(holder)}); wait for it "
                                "to finish, or use another directory (`--out`)") from None
            try:  # the holder before us may have removed the file between our open and our lock
                same = os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            fh.close()
        else:  # pragma: no cover - a lock file replaced a hundred times in a row
            raise RunLocked(f"`{self.path}` keeps changing; another process is taking the lock")
        fh.seek(0), fh.truncate(), fh.write(f"{os.getpid()} {self.who}"), fh.flush()
        self._fh = fh
        self.orphans = remove_orphan_temps(self.path.parent, recursive=self.clean_below)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()


def _holder(text: str) -> str:
    pid, _, who = text.partition(" ")
    return f"{who or 'runner'}, pid {pid}" if pid.isdigit() else "unknown holder"
