"""The leave-one-out controls `loo:<user>` in the runner: streams, batched == alone, files, `--no-loo`."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch
from safetensors import safe_open

from common.contract import LOO_PREFIX, is_control, loo_name, loo_user
from runners.data import training_stream
from runners.execution.execute import adapter_path, run_grid
from runners.execution.prepare import training_sets
from runners.grid import build_parser
from runners.model import GPT, PRESETS
from runners.settings import run_config, settings_from_args
from runners.train import TrainConfig, data_order, train_adapters
from tests.support.runs import small_set, tiny_settings


@pytest.fixture
def fs():
    return small_set(3)


def test_names_round_trip_and_are_controls():
    assert loo_name("novelist") == "loo:novelist" and LOO_PREFIX == "loo:"
    assert loo_user("loo:novelist") == "novelist" and loo_user("novelist") is None and loo_user("pooled") is None
    assert is_control("loo:novelist") and is_control("base") and is_control("pooled")
    assert not is_control("novelist") and not is_control("looney")


def test_each_loo_control_trains_on_every_other_users_text(fs):
    names, docs = training_sets(fs)
    users = [u.name for u in fs.users]
    assert names == (*users, "pooled", "loo:user1", "loo:user2", "loo:user3")
    by_name = dict(zip(names, docs, strict=True))
    for u in fs.users:
        assert by_name[u.name] == u.train
        others = tuple(d for v in fs.users if v.name != u.name for d in v.train)
        assert by_name[loo_name(u.name)] == others
        own_text = {d.text for d in u.train}
        assert not own_text & {d.text for d in by_name[loo_name(u.name)]}  # never saw the user
    assert by_name["pooled"] == tuple(d for u in fs.users for d in u.train)
    off_names, off_docs = training_sets(fs, loo=False)
    assert off_names == (*users, "pooled") and off_docs == docs[:4]


def test_loo_batched_equals_alone_and_leaves_the_other_adapters_unchanged(fs):
    torch.manual_seed(0)
    base = GPT(PRESETS["tiny"])
    cfg = TrainConfig(steps=5, batch_size=4, lr=3e-2)
    T = base.config.block_size
    names, docs = training_sets(fs)
    streams = [training_stream(d) for d in docs]
    orders = [data_order(7, k, len(st), T, cfg) for k, st in enumerate(streams)]
    batched = train_adapters(base, streams, orders, cfg)
    for k in (len(fs.users) + 1, len(names) - 1):  # first and last loo control, alone
        alone = train_adapters(base, [streams[k]], [orders[k]], cfg)
        for key, v in alone.states[0].items():
            assert torch.allclose(batched.states[k][key], v, atol=1e-5, rtol=0), (names[k], key)
        np.testing.assert_allclose(batched.losses[:, k], alone.losses[:, 0], atol=1e-5, rtol=0)
    without = train_adapters(base, streams[:4], orders[:4], cfg)  # --no-loo: users + pooled only
    for k in range(4):
        for key, v in without.states[k].items():
            assert torch.allclose(batched.states[k][key], v, atol=1e-5, rtol=0), (names[k], key)
    # a loo control trains on its own stream: it ends somewhere else than pooled
    assert any(not torch.equal(batched.states[4][key], batched.states[3][key]) for key in batched.states[3])


def test_grid_scores_saves_and_flags_every_loo_control(tmp_path, cache_env, fs):
    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml", seeds=(0,))
    run_dir = run_grid(fs, s)
    cells = pl.read_parquet(run_dir / "cells.parquet")
    loo = cells.filter(pl.col("adapter").str.starts_with(LOO_PREFIX))
    assert sorted(set(loo["adapter"])) == ["loo:user1", "loo:user2", "loo:user3"]
    assert loo.group_by("adapter").agg(pl.col("eval").sort())["eval"].to_list() == [["user1", "user2", "user3"]] * 3
    assert set(loo["status"]) <= {"ok", "worse_than_base", "diverged"} and loo["nll_sum"].is_finite().all()
    done = json.loads((run_dir / "seeds/seed-0/done.json").read_text())
    assert set(done["statuses"]) == {"user1", "user2", "user3", "pooled", "loo:user1", "loo:user2", "loo:user3"}
    for u in ("user1", "user2", "user3"):
        path = adapter_path(run_dir, 0, loo_name(u))
        assert path == run_dir / "adapters/seed-0/loo" / f"{u}.safetensors"
        with safe_open(path, "pt") as f:
            meta = json.loads(f.metadata()["config"])
        assert meta["adapter"] == loo_name(u) and meta["status"] == done["statuses"][loo_name(u)]
        assert f"adapters/seed-0/loo/{u}.safetensors" in done["files"]  # verified on resume like the others
    # the pooled/user cells are those of a run without the loo controls (same windows, same bank slots)
    off = run_grid(fs, replace(s, loo=False))
    assert off != run_dir  # the run id covers the flag
    m = json.loads((off / "manifest.json").read_text())
    assert m["config"]["loo_controls"] is False
    assert json.loads((run_dir / "manifest.json").read_text())["config"]["loo_controls"] is True
    off_cells = pl.read_parquet(off / "cells.parquet")
    assert not off_cells["adapter"].str.starts_with(LOO_PREFIX).any()
    assert not (off / "adapters/seed-0/loo").exists()
    key = ["seed", "adapter", "eval"]
    same = cells.filter(~pl.col("adapter").str.starts_with(LOO_PREFIX)).sort(key)
    np.testing.assert_allclose(same["nll_sum"].to_numpy(), off_cells.sort(key)["nll_sum"].to_numpy(), rtol=1e-6)


def test_no_loo_flag_reaches_the_settings_and_the_run_config(tmp_path, fs):
    prereg = tmp_path / "prereg.toml"
    prereg.write_text("# x\n")
    common = ["--preset", "tiny", "--out", str(tmp_path / "runs"), "--prereg", str(prereg)]
    on = settings_from_args(build_parser().parse_args(common))
    off = settings_from_args(build_parser().parse_args(common + ["--no-loo"]))
    assert on.loo is True and off.loo is False
    assert run_config(on, fs)["loo_controls"] is True and run_config(off, fs)["loo_controls"] is False


def test_routing_control_names_round_trip_and_are_controls():
    from common.contract import avg_name, avg_users, ens_name, ens_user, is_routing_control, noise_name, noise_parts
    assert avg_name("scientist", "novelist") == "avg:novelist+scientist" == avg_name("novelist", "scientist")
    assert avg_users("avg:novelist+scientist") == ("novelist", "scientist")
    assert avg_users("avg:novelist") is None and avg_users("loo:novelist") is None
    assert ens_user(ens_name("bob")) == "bob" and ens_user("loo:bob") is None
    assert noise_parts(noise_name("a@b", 0.1)) == ("a@b", 0.1)
    assert noise_parts("noise:bob@x") is None and noise_parts("noise:@0.1") is None
    assert all(is_control(n) and is_routing_control(n) for n in ("avg:a+b", "ens:a", "noise:a@0.1"))
    assert not is_routing_control("loo:a") and not is_control("avg")
    with pytest.raises(ValueError, match="two different users"):
        avg_name("a", "a")
