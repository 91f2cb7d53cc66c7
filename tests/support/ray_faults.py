"""A unit wrapper for the Ray tests: the first attempt kills its own worker process (SIGKILL).

Lives in an importable module (not the test file) because a Ray worker imports the functions it
runs by name."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def die_once(marker: str, fn, *args):
    """No `marker` file yet: write it (with this worker's pid) and SIGKILL this worker mid-task;
    Ray sees a dead worker and retries the task, which finds the marker, notes its own pid in
    `<marker>.retry` and runs `fn(*args)`."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    Path(f"{marker}.retry").write_text(str(os.getpid()))
    return fn(*args)
