"""Issue 22, item 6: inputs that gave a traceback or an unclear exit now fail closed: exit 2 with the
flag or file named, or (every adapter diverged) a distinct grid exit and a verdict that fails the gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from runners import grid
from runners.settings import MAX_BATCH_SIZE, MAX_SEED
from validation import InputError, load_external
from validation import verdict as verdict_cmd
from validation.simulation.simulate import simulate_study

PREREG = Path(__file__).resolve().parents[1] / "data" / "prereg_fast.toml"
FAST = ["--preset", "tiny", "--fixture-set", "synthetic", "--seeds", "1", "--steps", "3", "--fixtures", "2", "-q"]


@pytest.fixture
def prereg(tmp_path) -> Path:
    p = tmp_path / "prereg.toml"
    p.write_text("[criteria]\n")
    return p


def _refused(capsys, argv, flag: str, out: Path | None = None) -> str:
    assert grid.main(argv) == 2
    captured = capsys.readouterr()
    assert flag in captured.err and "Traceback" not in captured.err + captured.out, captured.err
    if out is not None:
        assert not out.exists() or not any(p.is_dir() for p in out.iterdir()), "nothing may be trained"
    return captured.err


@pytest.mark.parametrize("seeds", ["99999999999999999999", f"0,{MAX_SEED + 1}", "1,18446744073709551616"])
def test_a_seed_too_large_for_the_generators_is_refused(tmp_path, capsys, prereg, seeds):
    out = tmp_path / "runs"
    err = _refused(capsys, FAST[:6] + ["--seed-list", seeds, "--steps", "3", "--fixtures", "2", "-q",
                                       "--out", str(out), "--prereg", str(prereg)], "`--seed-list`", out)
    assert str(MAX_SEED) in err


def test_the_largest_seed_is_accepted_by_the_flag_check(prereg, tmp_path):
    from runners.settings import settings_from_args

    args = grid.build_parser().parse_args(FAST + ["--seed-list", f"0,{MAX_SEED}", "--out", str(tmp_path / "r"),
                                                  "--prereg", str(prereg)])
    assert settings_from_args(args).seeds == (0, MAX_SEED)


@pytest.mark.parametrize("batch", ["1000000000", str(MAX_BATCH_SIZE + 1)])
def test_an_absurd_batch_size_is_refused_before_any_allocation(tmp_path, capsys, prereg, batch):
    out = tmp_path / "runs"
    err = _refused(capsys, FAST + ["--batch-size", batch, "--out", str(out), "--prereg", str(prereg)],
                   f"`--batch-size {batch}`", out)
    assert str(MAX_BATCH_SIZE) in err


def test_a_batch_larger_than_a_users_text_is_refused(tmp_path, capsys, prereg):
    root = tmp_path / "set"
    for name in ("alice", "bob"):
        for part, k in (("train", 2), ("heldout", 10)):
            d = root / name / part
            d.mkdir(parents=True)
            for i in range(k):
                (d / f"{i}.txt").write_text(f"{name} writes document {i}. " * 8)
    (root / "pretrain").mkdir()
    (root / "pretrain" / "p.txt").write_text("pretraining text. " * 400)
    out = tmp_path / "runs"
    err = _refused(capsys, ["--preset", "tiny", "--fixture-set", str(root), "--seeds", "1", "--steps", "3",
                            "--fixtures", "2", "-q", "--batch-size", "4000", "--out", str(out),
                            "--prereg", str(prereg)], "`--batch-size 4000`", out)
    assert "window positions of user 'alice' training text" in err


def test_an_empty_out_is_refused_and_nothing_lands_in_the_current_directory(tmp_path, capsys, prereg, monkeypatch):
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    _refused(capsys, FAST + ["--out", "", "--prereg", str(prereg)], "`--out ''`")
    _refused(capsys, FAST + ["--out", "  ", "--prereg", str(prereg)], "`--out '  '`")
    assert list(here.iterdir()) == []


def test_every_adapter_diverging_is_said_by_the_grid_and_fails_the_verdicts_gate(tmp_path, capsys, prereg):
    out = tmp_path / "runs"
    code = grid.main(["--preset", "tiny", "--fixture-set", "synthetic", "--seeds", "2", "--steps", "3",
                      "--fixtures", "2", "-q", "--lr", "1e30", "--out", str(out), "--prereg", str(prereg)])
    captured = capsys.readouterr()
    assert code == grid.EXIT_ALL_DIVERGED == 3, captured.err
    assert "every trained adapter diverged" in captured.err and "`--lr 1e+30`" in captured.err
    run = out / "latest"
    assert (run / "cells.parquet").is_file(), "the run is still written"
    assert grid.all_diverged(run)
    code = verdict_cmd.main(["--run", str(run), "--prereg", str(prereg), "--no-calibration", "--no-report"])
    captured = capsys.readouterr()
    assert code == 1, captured.err        # a gate failure, not exit 2 with patsy's "negative dimensions"
    assert "negative dimensions" not in captured.err + captured.out
    v = json.loads((run / "verdict.json").read_text())
    assert not v["gate"]["passed"]
    assert "diverged" in v["gate"]["reasons"][0] and "--lr" in v["gate"]["reasons"][0]


def _cells_file(tmp_path: Path, change) -> Path:
    data = simulate_study(np.random.default_rng(0), n_seeds=3, n_docs=8, personalization=0.2)
    cells = data.cells.with_columns(pl.col("n_tokens").cast(pl.Int64), pl.col("n_bytes").cast(pl.Int64))
    cells = cells.select(["seed", "adapter", "eval", "nll_sum", "n_tokens", "n_bytes", "status"])
    p = tmp_path / "cells.csv"
    change(cells).write_csv(p)
    return p


def test_one_byte_for_240_tokens_is_refused(tmp_path, capsys):
    p = _cells_file(tmp_path, lambda c: c.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(1).otherwise(pl.col("n_bytes")).alias("n_bytes"),
        pl.when(pl.int_range(pl.len()) == 0).then(240).otherwise(pl.col("n_tokens")).alias("n_tokens")))
    with pytest.raises(InputError, match=r"cells.csv: column `n_bytes` is impossibly small .* row\(s\) 1 "
                                         r"\(e.g. 240 tokens in 1 byte"):
        load_external(p)
    assert verdict_cmd.main(["--cells", str(p), "--prereg", str(PREREG), "--no-report", "--no-calibration"]) == 2
    assert "`n_bytes`" in capsys.readouterr().err


def test_refusals_quote_plain_numbers_not_numpy_reprs(tmp_path):
    p = _cells_file(tmp_path, lambda c: c.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(-400.0).otherwise(pl.col("nll_sum")).alias("nll_sum")))
    with pytest.raises(InputError) as e:
        load_external(p)
    assert "(e.g. -400.0)" in str(e.value) and "np." not in str(e.value) and "float64" not in str(e.value)


@pytest.mark.parametrize("flag", ["--out", "--run", "--prereg"])
def test_the_verdict_refuses_an_empty_path(tmp_path, capsys, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    argv = {"--out": ["--cells", "x.csv", "--out", ""], "--run": ["--run", ""],
            "--prereg": ["--cells", "x.csv", "--prereg", ""]}[flag]
    assert verdict_cmd.main(argv + ["--no-calibration"]) == 2
    assert f"`{flag} ''`: empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_charts_without_the_report_are_refused_not_silently_dropped(tmp_path, capsys):
    data = simulate_study(np.random.default_rng(0), n_seeds=3, n_docs=8, personalization=0.2)
    cells = tmp_path / "c.parquet"
    data.cells.write_parquet(cells)
    out = tmp_path / "out"
    argv = ["--cells", str(cells), "--prereg", str(PREREG), "--out", str(out), "--no-calibration", "--no-report"]
    assert verdict_cmd.main(argv + ["--charts", "svg"]) == 2
    err = capsys.readouterr().err
    assert "`--charts svg` with `--no-report`" in err
    assert not out.exists()
