"""Limits and odd inputs (docs/gate.md, section 5): a request that cannot fit is refused up front
naming the setting to lower; directories, FIFOs and NUL bytes get precise messages; a report.html
of an earlier verdict never stays beside a new verdict.json unflagged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import validation.inputs.tables as vtables
from runners import grid
from validation import InputError, load_external
from validation.simulation.simulate import simulate_study
from validation.stats.bootstrap import bootstrap_bytes
from validation.verdict import main

PREREG = Path(__file__).resolve().parents[1] / "data" / "prereg_fast.toml"
GRID = ["--preset", "tiny", "--fixture-set", "synthetic", "--fixtures", "2", "-q"]


def _cells(tmp_path: Path) -> tuple[Path, Path]:
    data = simulate_study(np.random.default_rng(0), n_seeds=3, n_docs=8, personalization=0.2)
    cells, docs = tmp_path / "c.parquet", tmp_path / "d.parquet"
    data.cells.write_parquet(cells)
    data.docs.write_parquet(docs)
    return cells, docs


def test_bootstrap_memory_estimate_grows_with_every_dimension():
    base = bootstrap_bytes(5, 5, 3, 40, 10_000)
    assert base > 8 * 10_000 * 5 * 3
    for bigger in ((10, 5, 3, 40, 10_000), (5, 9, 3, 40, 10_000), (5, 5, 3, 400, 10_000), (5, 5, 3, 40, 20_000)):
        assert bootstrap_bytes(*bigger) > base
    assert bootstrap_bytes(5, 5, 3, None, 10_000) > 0


def test_a_bootstrap_that_cannot_fit_names_the_setting(tmp_path, capsys):
    cells, docs = _cells(tmp_path)
    args = ["--cells", str(cells), "--docs", str(docs), "--no-calibration", "--accept-not-preregistered"]
    assert main([*args, "--prereg", str(PREREG), "--n-resamples", str(10**13)]) == 2
    err = capsys.readouterr().err
    assert "`--n-resamples = 10000000000000`" in err and "lower `--n-resamples` to at most about" in err
    huge = tmp_path / "huge.toml"
    huge.write_text(PREREG.read_text().replace("n_resamples = 300", "n_resamples = 10000000000000"))
    assert main([*args, "--prereg", str(huge)]) == 2
    assert "lower `n_resamples`" in capsys.readouterr().err
    assert not (tmp_path / "c.verdict").exists()


def test_a_table_too_large_for_memory_is_refused_before_reading(tmp_path, monkeypatch):
    cells, _ = _cells(tmp_path)
    monkeypatch.setattr(vtables, "memory_budget", lambda: 1000)
    with pytest.raises(InputError, match=r"c.parquet: the file is .* GiB; reading it needs about"):
        load_external(cells)


def test_a_directory_or_fifo_as_cells_gets_a_precise_message(tmp_path, capsys):
    assert main(["--cells", str(tmp_path), "--prereg", str(PREREG)]) == 2
    assert "is a directory, not a table file" in capsys.readouterr().err
    fifo = tmp_path / "cells.csv"
    os.mkfifo(fifo)
    assert main(["--cells", str(fifo), "--prereg", str(PREREG)]) == 2   # returns: never opened
    assert "is not a regular file (a FIFO, socket or device)" in capsys.readouterr().err


def test_a_csv_of_nul_bytes_is_not_text(tmp_path):
    p = tmp_path / "c.csv"
    p.write_bytes(b"seed,adapter,eval,ppl\n" + b"\x00" * 64)
    with pytest.raises(InputError, match=r"c.csv: cannot be read as csv: not UTF-8 text \(byte 22\)"):
        load_external(p)


def test_a_stale_report_is_removed_and_said(tmp_path, capsys):
    cells, docs = _cells(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("<html>an earlier verdict</html>")
    args = ["--cells", str(cells), "--docs", str(docs), "--prereg", str(PREREG), "--out", str(out),
            "--no-calibration", "--accept-not-preregistered"]
    assert main([*args, "--no-report"]) in (0, 1)
    assert not (out / "report.html").exists() and json.loads((out / "verdict.json").read_text())
    assert "removed" in capsys.readouterr().err
    assert main(args) in (0, 1)
    assert "an earlier verdict" not in (out / "report.html").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--seeds", str(10**12)], "`--seeds 1000000000000`: more than the 1000 seeds"),
    (["--seed-list", ",".join(map(str, range(1001)))], "`--seed-list`: 1001 seeds"),
    (["--seeds", "2", "--steps", str(10**12)], "lower `--steps` or `--seeds`"),
])
def test_grid_requests_that_cannot_fit_are_refused_up_front(tmp_path, capsys, extra, message):
    prereg = tmp_path / "prereg.toml"
    prereg.write_text("[criteria]\n")
    out = tmp_path / "runs"
    assert grid.main(GRID + extra + ["--out", str(out), "--prereg", str(prereg)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(p.is_dir() for p in out.iterdir())
