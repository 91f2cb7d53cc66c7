"""`python -m runners.grid` as a user runs it: bad input exits 2 with a message and loses nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from runners import rundir
from runners.grid import main

REPO = Path(__file__).resolve().parents[2]
FAST = ["--preset", "tiny", "--fixture-set", "synthetic", "--seeds", "1", "--steps", "3", "--fixtures", "2"]


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() and not p.is_symlink() else str(p.readlink())
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory, session_cache):
    """A finished run in `out`, which no bad command may touch (one per module: tests only read it)."""
    tmp = tmp_path_factory.mktemp("prior")
    prereg = tmp / "prereg.toml"
    prereg.write_text("[criteria]\n")
    out = tmp / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NORMADAPT_CACHE_DIR", str(session_cache))
        assert main(FAST + ["--out", str(out), "--prereg", str(prereg), "-q"]) == 0
    return out, prereg


BAD = [
    (["--fixture-set", "no-such-set"], r"`--fixture-set no-such-set`: no such fixture set"),
    (["--fixtures", "5000"], r"`--fixtures 5000`: fixture set 'synthetic' generates at most 1820 users"),
    (["--fixtures", "1"], r"`--fixtures 1`: the confusion matrix needs at least two users"),
    (["--seeds", "0"], r"`--seeds 0`: must be at least 1"),
    (["--seed-list", "1,x"], r"`--seed-list 1,x`: give comma-separated integers"),
    (["--preset", "huge"], r"`--preset huge`: unknown preset; use one of tiny, cpu, gpt30m"),
    (["--steps", "0"], r"`--steps 0`: must be at least 1"),
    (["--lr", "-1"], r"`--lr -1.0`: must be a positive number"),
    (["--source", "botchan"], r"`--source botchan`: write NAME=PATH"),
    (["--device", "tpu"], r"`--device tpu`: use cpu or cuda"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[b[0][0] + "=" + b[0][1] for b in BAD])
def test_bad_input_exits_2_and_keeps_what_was_written(prior_run, cache_env, capsys, extra, message):
    out, prereg = prior_run
    before = _snapshot(out)
    assert main(FAST + ["--out", str(out), "--prereg", str(prereg)] + extra) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert _snapshot(out) == before


def test_cuda_without_gpu(prior_run, cache_env, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out, prereg = prior_run
    before = _snapshot(out)
    assert main(FAST + ["--out", str(out), "--prereg", str(prereg), "--device", "cuda"]) == 2
    assert "`--device cuda`: no CUDA GPU is visible" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_missing_prereg(prior_run, cache_env, tmp_path, capsys):
    out, _ = prior_run
    before = _snapshot(out)
    assert main(FAST + ["--out", str(out), "--prereg", str(tmp_path / "nope.toml")]) == 2
    assert "pre-registration file not found" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_unwritable_out(prior_run, cache_env, tmp_path, capsys):
    _, prereg = prior_run
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(FAST + ["--out", str(blocker / "runs"), "--prereg", str(prereg)]) == 2
    assert f"`--out {blocker / 'runs'}`: cannot write there" in capsys.readouterr().err
    assert blocker.read_text() == "not a directory"


def test_locked_run_dir(prior_run, cache_env, capsys):
    out, prereg = prior_run
    run_dir = (out / "latest").resolve()
    with rundir.RunLock(run_dir, "verdict"):
        assert main(FAST + ["--out", str(out), "--prereg", str(prereg)]) == 2
    assert "is locked by another process (verdict, pid" in capsys.readouterr().err


@pytest.mark.slow
def test_real_command_end_to_end(tmp_path, cache_env):
    prereg = tmp_path / "prereg.toml"
    prereg.write_text("[criteria]\n")
    cmd = [sys.executable, "-m", "runners.grid", "--preset", "tiny", "--fixture-set", "synthetic", "--seeds", "2",
           "--steps", "5", "--out", "runs"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's code, whatever is installed
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "perplexity per byte" in done.stdout
    cells = pl.read_parquet(tmp_path / "runs/latest/cells.parquet")
    rows = 3 + 2 + 3  # 3 user adapters, base and pooled, and a loo:<user> control per user
    assert len(cells) == 2 * rows * 3 and set(cells["status"]) <= {"ok", "worse_than_base", "diverged"}
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already done, kept" in again.stderr


def test_the_grid_ends_with_a_readable_matrix_and_the_next_step(tmp_path):
    import polars as pl

    from runners.grid import format_matrix, summary

    cells = pl.DataFrame({"seed": [0] * 8 + [1] * 8,
                          "adapter": ["alice", "alice", "bob", "bob", "base", "base", "pooled", "pooled"] * 2,
                          "eval": ["alice", "bob"] * 8,
                          "ppl": [3.0, 5.2, 4.0, 4.1, 5.0, 6.0, 4.2, 4.9]
                          + [3.0 * 4, 5.2, 4.0, 4.1, 5.0, 6.0, 4.2, 4.9],
                          "status": ["ok"] * 15 + ["diverged"]})
    lines = format_matrix(cells).splitlines()
    assert lines[0].split() == ["adapter", "\\", "eval", "alice", "bob"]
    # rows: users in column order, then the controls; geometric mean over seeds (3 and 12 -> 6)
    assert [ln.split()[0] for ln in lines[2:]] == ["alice", "bob", "base", "pooled"]
    assert lines[2].split()[1:] == ["6.000*", "5.200"] and lines[3].split()[1:] == ["4.000", "4.100*"]
    run = tmp_path / "run"
    run.mkdir()
    cells.write_parquet(run / "cells.parquet")
    text = summary(run)
    assert "shape:" not in text and "f64" not in text  # no raw polars frame dump
    assert "geometric mean over 2 seeds" in text and "1 cell(s) not ok (1 diverged)" in text
    assert text.splitlines()[-1].startswith(f"next: python -m validation.verdict --run {run}")
