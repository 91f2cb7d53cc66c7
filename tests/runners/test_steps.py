"""`--steps 25,50,100`: one training to the largest count, snapshotted and evaluated at every count.

The snapshot at step k equals a separate k-step run bit for bit (constant learning rate, and the
k-step data order is a prefix of the K-step one); the run's tables carry a `steps` column; resume
works per (seed, steps); bad lists exit 2 before anything is written.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from runners import rundir, snapshots
from runners.data import training_stream
from runners.execution.execute import run_grid
from runners.grid import main
from runners.model import GPT, PRESETS
from runners.settings import UsageError, parse_steps
from runners.train import TrainConfig, data_order, train_adapters
from tests.support.runs import small_set, tiny_settings


def _streams(n_users: int = 2) -> list[np.ndarray]:
    return [training_stream(u.train) for u in small_set(n_users).users]


def _base(seed: int = 0) -> GPT:
    torch.manual_seed(seed)  # a random tiny model: the property does not need a pretrained one
    return GPT(PRESETS["tiny"])


def test_data_order_of_k_steps_is_the_prefix_of_k_max_steps():
    for k, big in ((1, 9), (3, 7), (25, 400)):
        short = data_order(4, 1, 5000, 64, TrainConfig(steps=k, batch_size=3))
        long = data_order(4, 1, 5000, 64, TrainConfig(steps=big, batch_size=3))
        np.testing.assert_array_equal(short, long[:k])


def test_snapshot_at_k_equals_a_separate_k_step_run_bit_for_bit():
    base, streams = _base(), _streams(2)
    T = base.config.block_size
    long_cfg = TrainConfig(steps=7, batch_size=3, lr=3e-2, steps_list=(2, 5, 7))
    orders = [data_order(0, a, len(s), T, long_cfg) for a, s in enumerate(streams)]
    long = train_adapters(base, streams, orders, long_cfg)
    assert sorted(long.snapshots) == [2, 5, 7]
    for a in range(2):  # the last snapshot is the final bank
        for name, t in long.states[a].items():
            assert torch.equal(long.snapshots[7][a][name], t)
    for k in (2, 5):
        cfg = TrainConfig(steps=k, batch_size=3, lr=3e-2)
        short = train_adapters(base, streams, [data_order(0, a, len(s), T, cfg) for a, s in enumerate(streams)], cfg)
        np.testing.assert_array_equal(short.losses, long.losses[:k])
        for a in range(2):
            assert short.states[a].keys() == long.snapshots[k][a].keys()
            for name, t in short.states[a].items():
                assert torch.equal(t, long.snapshots[k][a][name]), (k, a, name)
        # and the snapshots differ between counts: the test would see a frozen bank
        assert not torch.equal(long.snapshots[k][0]["ln_f.weight"], long.snapshots[7][0]["ln_f.weight"])


@pytest.mark.parametrize("text, message", [
    ("50,25", r"ascending order \(`--steps 25,50`\)"),
    ("25,25,50", r"25 is listed more than once"),
    ("0,10", r"must be at least 1 \(got 0\)"),
    ("-5", r"must be at least 1 \(got -5\)"),
    ("2.5", r"'2.5' is not a whole number"),
    ("10,,20", r"give one step count or comma-separated counts"),
    ("ten", r"'ten' is not a whole number"),
])
def test_parse_steps_refuses_bad_lists(text, message):
    with pytest.raises(UsageError, match=message):
        parse_steps(text)


def test_parse_steps_accepts_one_or_several():
    assert parse_steps("100") == (100,) and parse_steps(" 25, 50,100 ") == (25, 50, 100)
    assert TrainConfig(steps=100).to_dict()["steps_list"] == [100]


FAST = ["--preset", "tiny", "--fixture-set", "synthetic", "--seeds", "1", "--fixtures", "2", "-q"]


@pytest.mark.parametrize("steps, prereg_text, message", [
    ("4,2", "[steps]\nprimary = 4\n", r"`--steps 4,2`: list the counts in ascending order"),
    ("2,2", "[steps]\nprimary = 2\n", r"`--steps 2,2`: 2 is listed more than once"),
    ("0", "", r"`--steps 0`: must be at least 1"),
    ("-3,2", "", r"`--steps -3,2`: must be at least 1"),
    ("1.5", "", r"`--steps 1.5`: '1.5' is not a whole number"),
    ("2,4", "[steps]\nprimary = 3\n", r"`\[steps\] primary = 3` .* is not among them: .*add 3 to `--steps`"),
    ("2,4", "", r"`\[steps\] primary = 100` .*100 when the file has no `\[steps\]`"),
])
def test_bad_steps_exit_2_and_write_nothing(tmp_path, cache_env, capsys, steps, prereg_text, message):
    prereg = tmp_path / "prereg.toml"
    prereg.write_text(prereg_text)
    out = tmp_path / "runs"
    assert main(FAST + [f"--steps={steps}", "--out", str(out), "--prereg", str(prereg)]) == 2  # `=`: -3 is no flag
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists()  # refused before `--out` is even created


def _settings(tmp_path: Path, out: str, counts: tuple[int, ...], seeds=(0,)):
    s = tiny_settings(tmp_path / out, tmp_path / "prereg.toml", seeds=seeds, steps=counts[-1])
    return replace(s, train=replace(s.train, steps_list=counts), loo=False)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, session_cache):
    """One run at steps 2,4 and one separate run at 2 steps (module-scoped: the tests only read them)."""
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "prereg.toml").write_text("[statistics]\nn_resamples = 200\n\n[steps]\nprimary = 4\n")
    fs = small_set(2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NORMADAPT_CACHE_DIR", str(session_cache))
        multi = run_grid(fs, _settings(tmp, "multi", (2, 4)))
        single = run_grid(fs, _settings(tmp, "single", (2,)))
    return tmp, fs, multi, single


def test_a_sweep_has_a_steps_column_and_steps_folders(sweep):
    _, fs, multi, _ = sweep
    cells, docs, log = (pl.read_parquet(multi / f) for f in ("cells.parquet", "docs.parquet", "train_log.parquet"))
    for t in (cells, docs, log):
        assert t["steps"].dtype == pl.Int64 and sorted(set(t["steps"])) == [2, 4] and t["steps"].null_count() == 0
    # every count is a complete study: base and every adapter on every user
    per = cells.group_by("steps").agg(pl.len())
    assert per["len"].to_list() == [4 * 2] * 2  # (base, pooled, user1, user2) x 2 users
    # the log at count k holds steps 0..k-1, the loss of a k-step run
    for k in (2, 4):
        assert sorted(set(log.filter(pl.col("steps") == k)["step"])) == list(range(k))
    files = sorted(p.relative_to(multi / "adapters").as_posix() for p in (multi / "adapters").rglob("*.safetensors"))
    assert files == [f"seed-0/steps-{k}/{n}.safetensors" for k in (2, 4) for n in ("pooled", "user1", "user2")]
    from safetensors import safe_open
    with safe_open(str(multi / "adapters/seed-0/steps-2/user1.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["config"])["steps"] == 2
    config = json.loads((multi / "config.json").read_text())
    assert config["train"]["steps"] == 4 and config["train"]["steps_list"] == [2, 4]
    done = json.loads((multi / "seeds/seed-0/done.json").read_text())
    assert done["steps"] == [2, 4] and set(done["statuses_by_steps"]) == {"2", "4"}


def test_a_sweep_count_equals_a_separate_run_of_that_count(sweep):
    _, _, multi, single = sweep
    assert multi.name != single.name  # the run id covers the list
    key = ["seed", "adapter", "eval", "doc_id"]
    at2 = pl.read_parquet(multi / "docs.parquet").filter(pl.col("steps") == 2).sort(key)
    alone = pl.read_parquet(single / "docs.parquet").sort(key)
    assert at2.equals(alone)  # bit for bit, statuses included
    log2 = pl.read_parquet(multi / "train_log.parquet").filter(pl.col("steps") == 2).sort(["adapter", "step"])
    assert log2.equals(pl.read_parquet(single / "train_log.parquet").sort(["adapter", "step"]))
    # a one-count run keeps the layout of before (no steps-<k> folder)
    assert (single / "adapters/seed-0/user1.safetensors").is_file()
    from safetensors.torch import load_file
    a, b = load_file(multi / "adapters/seed-0/steps-2/user2.safetensors"), load_file(
        single / "adapters/seed-0/user2.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src.parent, dst, symlinks=True)
    return dst / src.name


def test_resume_evaluates_a_missing_count_without_retraining(sweep, tmp_path, cache_env, caplog):
    tmp, fs, multi, _ = sweep
    run = _copy_run(multi, tmp_path / "multi")
    want = pl.read_parquet(run / "cells.parquet")
    adapter = run / "adapters/seed-0/steps-4/user1.safetensors"
    kept_adapter = adapter.stat().st_mtime_ns
    # interrupted after count 2 was evaluated: count 4's docs, marker and the seed's done.json are absent
    for p in ("seeds/seed-0/done.json", "seeds/seed-0/steps-4.json", "seeds/seed-0/steps-4/docs.parquet",
              "cells.parquet"):
        (run / p).unlink()
    kept_docs = (run / "seeds/seed-0/steps-2/docs.parquet").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="runners.grid"):
        again = run_grid(fs, replace(_settings(tmp, "multi", (2, 4)), out=tmp_path / "multi"))
    assert again == run
    assert "training kept" in caplog.text and "steps 2 already evaluated, kept" in caplog.text
    assert adapter.stat().st_mtime_ns == kept_adapter  # not retrained
    assert (run / "seeds/seed-0/steps-2/docs.parquet").stat().st_mtime_ns == kept_docs
    assert pl.read_parquet(run / "cells.parquet").equals(want)
    assert json.loads((run / "seeds/seed-0/done.json").read_text())["training_kept"] is True


def test_resume_retrains_when_an_adapter_file_is_damaged(sweep, tmp_path, cache_env, caplog):
    tmp, fs, multi, _ = sweep
    run = _copy_run(multi, tmp_path / "multi")
    want = pl.read_parquet(run / "cells.parquet")
    (run / "seeds/seed-0/done.json").unlink()
    (run / "adapters/seed-0/steps-2/user2.safetensors").write_bytes(b"garbage")
    with caplog.at_level(logging.INFO, logger="runners.grid"):
        run_grid(fs, replace(_settings(tmp, "multi", (2, 4)), out=tmp_path / "multi"))
    assert "training not kept" in caplog.text and "steps-2/user2.safetensors` is corrupt" in caplog.text
    assert "trained again" in caplog.text
    assert pl.read_parquet(run / "cells.parquet").equals(want)
    record, problem = rundir.seed_problem(run, snapshots.trained_marker(run, 0))
    assert problem is None and record["steps"] == [2, 4]


def test_resume_reevaluates_a_count_whose_marker_is_stale(sweep, tmp_path, cache_env, caplog):
    """`steps-4.json` exists but the documents it vouches for changed since (here: a valid table of
    the wrong numbers, count 2's NLLs relabelled as 4): its hash no longer matches, so count 4 is
    evaluated again from the kept adapters, never read into the cells as it is."""
    tmp, fs, multi, _ = sweep
    run = _copy_run(multi, tmp_path / "multi")
    want = pl.read_parquet(run / "cells.parquet")
    for p in ("seeds/seed-0/done.json", "cells.parquet"):
        (run / p).unlink()
    wrong = pl.read_parquet(run / "seeds/seed-0/steps-2/docs.parquet").with_columns(pl.lit(4, pl.Int64).alias("steps"))
    wrong.write_parquet(run / "seeds/seed-0/steps-4/docs.parquet")
    with caplog.at_level(logging.INFO, logger="runners.grid"):
        run_grid(fs, replace(_settings(tmp, "multi", (2, 4)), out=tmp_path / "multi"))
    assert "training kept" in caplog.text and "evaluating steps 4 from the adapter files" in caplog.text
    assert "steps 2 already evaluated, kept" in caplog.text
    assert pl.read_parquet(run / "cells.parquet").equals(want)
    assert rundir.seed_problem(run, snapshots.count_marker(run, 0, 4))[1] is None


def test_the_verdict_of_a_sweep_gates_at_the_primary_count(sweep, tmp_path, capsys):
    from validation.verdict import main as verdict
    tmp, _, multi, _ = sweep
    run = _copy_run(multi, tmp_path / "multi")
    code = verdict(["--run", str(run), "--prereg", str(tmp / "prereg.toml"), "--no-calibration"])
    out = capsys.readouterr()
    assert code in (0, 1), out.err
    v = json.loads((run / "verdict.json").read_text())
    assert v["steps"]["primary"] == 4 and v["steps"]["counts"] == [2, 4] and list(v["steps"]["exploratory"]) == ["2"]
    assert v["preregistration"]["status"] == "pre-registered"
    assert v["steps_analysis"]["steps"] == [2, 4] and v["steps_analysis"]["primary"] == 4  # every count's tables
    assert "step counts: primary 4 (the criteria and the gate); 2 exploratory" in out.out
    sim = v["similarity"]  # read the primary count's adapter files (adapters/seed-0/steps-4/)
    assert sim is not None and sim["adapter_seeds"] == [0]
    assert "step counts: primary 4 (the criteria and the gate); 2 exploratory" in (run / "report.html").read_text()


def test_the_grid_summary_shows_the_primary_count_not_a_mean_over_counts(tmp_path):
    from runners.grid import summary

    rows = [dict(seed=0, adapter=a, eval=e, steps=k, ppl=float(k if a == e else 2 * k), status="ok")
            for k in (10, 20, 40) for a in ("u1", "u2", "base") for e in ("u1", "u2")]
    pl.DataFrame(rows).write_parquet(tmp_path / "cells.parquet")
    text = summary(tmp_path, primary_steps=20)
    assert "at 20 training steps" in text and "also trained: 10, 40" in text
    assert "20.000*" in text and "40.000 " in text and "10.000" not in text  # only the count-20 cells
    assert "at 40 training steps (the largest count" in summary(tmp_path, primary_steps=None)  # no primary
