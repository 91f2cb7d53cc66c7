"""The grid runner: files and schemas, determinism, resume, lock, health statuses."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from runners import rundir
from runners.base_model import load_or_pretrain
from runners.data import eval_windows
from runners.evaluate import doc_nll
from runners.execution.execute import run_grid
from runners.execution.units import adapter_status
from runners.train import TrainConfig
from tests.support.runs import small_set, tiny_settings
from validation.contract.manifest import MANIFEST_FORMAT, read_manifest

CELL_SCHEMA = {"seed": pl.Int64, "steps": pl.Int64, "adapter": pl.Utf8, "eval": pl.Utf8, "nll_sum": pl.Float64,
               "n_tokens": pl.Int64, "n_bytes": pl.Int64, "ppl": pl.Float64, "bpb": pl.Float64, "status": pl.Utf8}


@pytest.fixture
def fs():
    return small_set(3)


def test_files_and_schemas(tmp_path, cache_env, fs):
    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml")
    run_dir = run_grid(fs, s)
    assert (s.out / "latest").resolve() == run_dir.resolve()
    cells = pl.read_parquet(run_dir / "cells.parquet")
    assert dict(cells.schema) == CELL_SCHEMA
    assert len(cells) == 2 * 8 * 3  # seeds x (base, pooled, 3 users, 3 loo controls) x eval users
    assert set(cells["adapter"]) == {"base", "pooled", "user1", "user2", "user3", "loo:user1", "loo:user2", "loo:user3"}
    docs = pl.read_parquet(run_dir / "docs.parquet")
    assert dict(docs.schema) == {**{k: v for k, v in CELL_SCHEMA.items() if k != "status"}, "doc_id": pl.Utf8,
                                 "status": pl.Utf8}
    assert len(docs) == 2 * 8 * sum(len(u.heldout) for u in fs.users)
    summed = docs.group_by(["seed", "adapter", "eval"]).agg(pl.col("nll_sum").sum(), pl.col("n_bytes").sum())
    joined = cells.join(summed, on=["seed", "adapter", "eval"], suffix="_d")
    assert (joined["nll_sum"] - joined["nll_sum_d"]).abs().max() < 1e-9
    assert (joined["n_bytes"] == joined["n_bytes_d"]).all() and (cells["n_tokens"] == cells["n_bytes"]).all()
    by_user = {u.name: u.heldout_bytes for u in fs.users}
    assert all(r["n_bytes"] == by_user[r["eval"]] for r in cells.iter_rows(named=True))
    # the base is seed-independent: one evaluation, a row per seed
    base = cells.filter(pl.col("adapter") == "base").sort(["eval", "seed"])
    seed_0, seed_1 = (base.filter(pl.col("seed") == k)["nll_sum"].to_list() for k in (0, 1))
    assert seed_0 == seed_1
    log = pl.read_parquet(run_dir / "train_log.parquet")
    assert dict(log.schema) == {"seed": pl.Int64, "steps": pl.Int64, "adapter": pl.Utf8, "step": pl.Int64,
                                "loss": pl.Float64}
    assert set(cells["steps"]) == set(docs["steps"]) == set(log["steps"]) == {s.train.steps}  # always present
    assert len(log) == 2 * 7 * s.train.steps
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["prereg"]["sha256"] == s.prereg_sha256 and m["seeds"] == [0, 1]
    assert m["adapter"]["params"] == 320 and m["adapter"]["bytes_fp32"] == 1280
    assert [u["name"] for u in m["fixture_set"]["users"]] == ["user1", "user2", "user3"]
    assert {"source", "licence", "sha256", "train_bytes", "heldout_bytes"} <= set(m["fixture_set"]["users"][0])
    assert len(m["base_model"]["sha256"]) == 64 and m["versions"]["torch"]
    typed = read_manifest(run_dir / "manifest.json")  # what the verdict reads: the same, typed
    assert typed.format == MANIFEST_FORMAT and typed.seeds == (0, 1) and typed.to_json() == m
    adapters = run_dir / "adapters"
    files = sorted(p.relative_to(adapters).as_posix() for p in adapters.rglob("*.safetensors"))
    assert files == [f"seed-{k}/{n}.safetensors" for k in (0, 1)
                     for n in ("loo/user1", "loo/user2", "loo/user3", "pooled", "user1", "user2", "user3")]
    with safe_open(run_dir / "adapters/seed-1/user2.safetensors", "pt") as f:
        meta = json.loads(f.metadata()["config"])
        assert meta["adapter"] == "user2" and meta["seed"] == 1 and meta["model"]["n_embd"] == 32
        assert sum(f.get_tensor(k).numel() for k in f.keys()) == 320


def test_saved_adapters_reproduce_the_runs_document_nlls_exactly(tmp_path, cache_env, fs):
    """Round trip: the adapter files a run writes, loaded back into the base, give docs.parquet's NLLs."""
    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml", seeds=(1,))
    run_dir = run_grid(fs, s)
    docs = pl.read_parquet(run_dir / "docs.parquet")
    base = load_or_pretrain(s.model, s.pretrain, fs.pretrain, fs.pretrain_sha256())
    names = ("pooled", "user3", "user1", "user2")  # not the training bank order: each row is its own
    paths = [run_dir / "adapters" / "seed-1" / f"{n}.safetensors" for n in names]
    for path in paths:
        with safe_open(path, "pt") as f:
            assert json.loads(f.metadata()["config"])["base_model_sha256"] == base.sha256
    model = copy.deepcopy(base.model)
    model.load_adapter_bank([load_file(p) for p in paths])
    for k, name in enumerate(names):
        for u in fs.users:
            w = eval_windows(u.heldout, s.model.block_size)
            want = docs.filter((pl.col("seed") == 1) & (pl.col("adapter") == name) & (pl.col("eval") == u.name))
            assert want["doc_id"].to_list() == list(w.doc_ids)
            got = doc_nll(model, w, k + 1)
            np.testing.assert_array_equal(got, want["nll_sum"].to_numpy(), err_msg=f"{name} on {u.name}")
    # and the base row (bank index 0) is the run's base
    w = eval_windows(fs.users[0].heldout, s.model.block_size)
    want = docs.filter((pl.col("adapter") == "base") & (pl.col("eval") == "user1"))["nll_sum"].to_numpy()
    np.testing.assert_array_equal(doc_nll(model, w, 0), want)


def test_same_command_twice_gives_identical_nll(tmp_path, cache_env, fs):
    a = run_grid(fs, tiny_settings(tmp_path / "a", tmp_path / "prereg.toml"))
    b = run_grid(fs, tiny_settings(tmp_path / "b", tmp_path / "prereg.toml"))
    assert a.name == b.name  # the run id derives from the configuration only
    ca, cb = (pl.read_parquet(d / "cells.parquet").sort(["seed", "adapter", "eval"]) for d in (a, b))
    assert ca["nll_sum"].to_list() == cb["nll_sum"].to_list()


def test_interrupted_run_resumes_to_the_same_cells(tmp_path, cache_env, fs):
    prereg = tmp_path / "prereg.toml"
    full = run_grid(fs, tiny_settings(tmp_path / "full", prereg, seeds=(0, 1, 2)))

    def crash(seed):
        if seed == 1:
            raise KeyboardInterrupt

    s = tiny_settings(tmp_path / "resumed", prereg, seeds=(0, 1, 2))
    with pytest.raises(KeyboardInterrupt):
        run_grid(fs, s, on_seed_done=crash)
    run_dir = s.out / full.name
    assert (run_dir / "seeds/seed-1/done.json").exists() and not (run_dir / "seeds/seed-2").exists()
    assert not (run_dir / "cells.parquet").exists()
    kept = (run_dir / "seeds/seed-0/docs.parquet").stat().st_mtime_ns
    resumed = run_grid(fs, s)
    assert (run_dir / "seeds/seed-0/docs.parquet").stat().st_mtime_ns == kept  # finished seeds are not redone
    assert json.loads((resumed / "manifest.json").read_text())["timings"]["resumed_seeds"] == [0, 1]
    assert pl.read_parquet(resumed / "cells.parquet").equals(pl.read_parquet(full / "cells.parquet"))


def test_lock_stops_a_second_runner(tmp_path, cache_env, fs):
    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml", seeds=(0,))
    first = run_grid(fs, s)
    assert not (first / ".lock").exists()  # a finished run keeps no stale lock naming a dead pid
    with rundir.RunLock(first):
        with pytest.raises(rundir.RunLocked, match=r"locked by another process \(runner, pid \d+\).*`--out`"):
            run_grid(fs, s)
    run_grid(fs, s)  # released: fine again
    assert not (first / ".lock").exists()


def test_run_id_changes_with_the_configuration(tmp_path, cache_env, fs):
    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml", seeds=(0,), steps=2)
    a = run_grid(fs, s)
    b = run_grid(fs, replace(s, train=replace(s.train, lr=1e-2)))
    assert a != b and (s.out / "latest").resolve() == b.resolve()


def test_adapter_status():
    assert adapter_status(False, 1.0, 1.5) == "ok"
    assert adapter_status(False, 1.6, 1.5) == "worse_than_base"
    assert adapter_status(True, 1.0, 1.5) == "diverged"
    assert adapter_status(False, float("nan"), 1.5) == "diverged"


def test_a_blown_up_training_is_flagged_not_averaged(tmp_path, cache_env, fs):
    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml", seeds=(0,), steps=4)
    run_dir = run_grid(fs, replace(s, train=TrainConfig(steps=4, batch_size=4, lr=1e4)))
    cells = pl.read_parquet(run_dir / "cells.parquet")
    adapters = cells.filter(~pl.col("adapter").is_in(["base"]))
    assert set(adapters["status"]) <= {"diverged", "worse_than_base"}
    assert set(cells.filter(pl.col("adapter") == "base")["status"]) == {"ok"}


def test_a_kept_seed_from_another_base_model_is_redone(tmp_path, cache_env, fs):
    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml", seeds=(0, 1))
    run_dir = run_grid(fs, s)
    cells = pl.read_parquet(run_dir / "cells.parquet")
    done = run_dir / "seeds/seed-0/done.json"
    stale = json.loads(done.read_text()) | {"base_model_sha256": "an-older-base"}
    done.write_text(json.dumps(stale))
    again = run_grid(fs, s)
    assert json.loads((again / "manifest.json").read_text())["timings"]["resumed_seeds"] == [1]
    assert json.loads(done.read_text())["base_model_sha256"] != "an-older-base"
    assert pl.read_parquet(again / "cells.parquet").equals(cells)


def test_training_text_shorter_than_one_window_is_refused_before_anything_is_written(fs):
    from fixtures import Document
    from runners.settings import UsageError, check_corpus_sizes
    short = replace(fs.users[0], train=(Document("tiny.txt", "too short"),))
    bad = replace(fs, users=(short,) + fs.users[1:])
    with pytest.raises(UsageError,
                       match=r"user 'user1' training text .* has 10 tokens, fewer than one training window of 66"):
        check_corpus_sizes(bad, 64)
    check_corpus_sizes(fs, 64)  # the normal set is fine
