"""Run directories are verified (docs/gate.md, section 4): per-seed files carry SHA-256 in the
seed's done.json and are checked on resume; damage is a clear error, never a traceback; the
failures that can happen after training are checked before it."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import polars as pl
import pytest

from runners import grid, rundir

FAST = ["--preset", "tiny", "--fixture-set", "synthetic", "--seeds", "1", "--steps", "3", "--fixtures", "2", "-q"]


def _seed(run_dir: Path) -> Path:
    seed_dir = run_dir / "seeds" / "seed-0"
    seed_dir.mkdir(parents=True)
    adapter = run_dir / "adapters" / "seed-0" / "alice.safetensors"
    adapter.parent.mkdir(parents=True)
    adapter.write_bytes(b"weights")
    pl.DataFrame({"x": [1, 2]}).write_parquet(seed_dir / "docs.parquet")
    record = {"seed": 0, "base_model_sha256": "b" * 64,
              "files": rundir.file_hashes(run_dir, [adapter, seed_dir / "docs.parquet"])}
    (seed_dir / "done.json").write_text(json.dumps(record))
    return seed_dir / "done.json"


def test_an_intact_seed_is_kept(tmp_path):
    done = _seed(tmp_path)
    kept, problem = rundir.seed_problem(tmp_path, done)
    assert problem is None and kept["seed"] == 0


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "adapters/seed-0/alice.safetensors").write_bytes(b"weightz"), "alice.safetensors` is corrupt"),
    (lambda d: (d / "seeds/seed-0/docs.parquet").unlink(), "docs.parquet` is missing"),
    (lambda d: (d / "seeds/seed-0/done.json").write_text("{truncated"), "done.json` is unreadable"),
    (lambda d: (d / "seeds/seed-0/done.json").write_text('{"seed": 0}'), "records no file hashes"),
])
def test_a_damaged_seed_is_redone_with_the_reason(tmp_path, damage, message):
    done = _seed(tmp_path)
    damage(tmp_path)
    _, problem = rundir.seed_problem(tmp_path, done)
    assert problem and message in problem


def test_a_damaged_seed_table_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "seeds" / "seed-3" / "docs.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(rundir.RunDirError, match=r"seed-3/docs.parquet` cannot be read.*seed-3"):
        rundir.read_seed_table(bad)


def _prereg(tmp_path: Path, text: str = "[criteria]\n") -> Path:
    p = tmp_path / "prereg.toml"
    p.write_text(text)
    return p


def test_latest_as_a_real_directory_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "runs" / "latest").mkdir(parents=True)
    assert grid.main(FAST + ["--out", str(tmp_path / "runs"), "--prereg", str(_prereg(tmp_path))]) == 2
    assert "latest` is a real directory" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["latest"]


@pytest.mark.parametrize("text, message", [
    ("[criteria\n", "not valid TOML"),
    ("[criteria]\nstrict_margin = 2\n", "`[criteria] strict_margin` must be a number in [0.01, 0.5]"),
    ("[statistics]\nn_resamples = 1.5\n", "`n_resamples` must be an integer >= 200"),
    ("[criteria]\nstrict_margin = 0.04\n", "`strict_margin` (0.04) is below `lenient_margin`"),
    ("[criteria]\nlenient_min_users = 3\n", "`lenient_min_users = 3` but this run (`--fixtures`) has 2 users"),
    ("[nonsense]\n", "unknown section"),
])
def test_the_grid_validates_the_prereg_file_up_front(tmp_path, capsys, text, message):
    out = tmp_path / "runs"
    assert grid.main(FAST + ["--out", str(out), "--prereg", str(_prereg(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert "`--prereg`" in err and message in err, err
    assert not out.exists() or not any(p.is_dir() for p in out.iterdir()), "nothing may be trained or written"


def test_a_full_disk_is_reported_without_a_traceback(tmp_path, capsys, monkeypatch):
    def full(fs, settings, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "runs" / "x" / "docs.parquet"))

    monkeypatch.setattr(grid, "run_grid", full)
    assert grid.main(FAST + ["--out", str(tmp_path / "runs"), "--prereg", str(_prereg(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "docs.parquet" in err and "Traceback" not in err
    assert "finished seeds are kept" in err


@pytest.mark.slow
def test_resume_redoes_a_corrupt_seed_and_says_so(tmp_path, cache_env, caplog):
    out, prereg = tmp_path / "runs", _prereg(tmp_path)
    args = FAST + ["--seeds", "2", "--out", str(out), "--prereg", str(prereg)]
    assert grid.main(args) == 0
    run = (out / "latest").resolve()
    (run / "adapters" / "seed-1" / "user1.safetensors").write_bytes(b"garbage")
    before = (run / "seeds" / "seed-0" / "docs.parquet").read_bytes()
    caplog.set_level("INFO", logger="runners.grid")
    assert grid.main(args) == 0
    log = caplog.text
    assert "seed 0: already done, kept" in log
    assert "seed-1/user1.safetensors` is corrupt" in log and "redone" in log
    done = json.loads((run / "seeds" / "seed-1" / "done.json").read_text())
    assert rundir.seed_problem(run, run / "seeds" / "seed-1" / "done.json")[1] is None and done["files"]
    assert (run / "seeds" / "seed-0" / "docs.parquet").read_bytes() == before
