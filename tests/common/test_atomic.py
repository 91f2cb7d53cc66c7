"""common.atomic: a failed write keeps the old file and leaves no temporary behind."""

import os

import pytest

from common.atomic import atomic_write_text, atomic_write_with


def test_failed_writer_keeps_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "cells.csv", "old\n")

    def half_then_crash(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash mid-write"):
        atomic_write_with(target, half_then_crash)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.csv"]


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "verdict.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
