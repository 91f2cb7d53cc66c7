"""Issue #27's remaining gaps: the health check sized in tokens and scored once per distinct window
set, and what a narrower `--dtype` costs a checkpoint's margins (measured, cached, recorded, with a
fall-back to float32 beyond the tolerance)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from runners.data import sample_offsets, windows_at
from runners.evaluate import CHECK_SEED, check_windows, mean_check_nll, n_check_windows
from runners.execution import execute, prepare
from runners.model import GPT, GPTConfig
from tests.support.runs import small_set

# -- the health check -----------------------------------------------------------------------------


def test_the_check_holds_as_many_tokens_whatever_the_context():
    assert [n_check_windows(t) for t in (32, 64, 128, 256, 512, 1000, 4096, 8192)] == [32, 32, 32, 16, 8, 5, 1, 1]
    stream = np.random.default_rng(0).integers(0, 250, size=9000).astype(np.int64)
    for T in (128, 512):
        x, y = check_windows(stream, T)
        # the first n of the 32 windows the check always drew: the built-in contexts keep all 32
        x32, y32 = windows_at(stream, sample_offsets(np.random.default_rng(CHECK_SEED), len(stream), T, 32), T)
        n = n_check_windows(T)
        assert x.shape == (n, T) and torch.equal(x, x32[:n]) and torch.equal(y, y32[:n])


def test_the_base_is_scored_once_per_distinct_check_set(monkeypatch):
    """With 2 users, loo:<a> trains on <b>'s text: its check windows are <b>'s, scored once; the
    base's check NLLs are those of scoring every set, bit for bit."""
    fs = small_set(2)
    torch.manual_seed(0)
    base = GPT(GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    calls = []

    def counting(model, check, bank_index, device="cpu"):
        calls.append(len(check[0]))
        return mean_check_nll(model, check, bank_index, device)

    monkeypatch.setattr(prepare, "mean_check_nll", counting)
    prep = prepare.prepare(base, fs, "cpu", loo=True)
    a, b = (u.name for u in fs.users)
    assert prep.names == (a, b, "pooled", f"loo:{a}", f"loo:{b}")
    assert len(calls) == 3  # a, b, pooled; loo:a's windows are b's, loo:b's are a's
    want = tuple(mean_check_nll(base, c, 0) for c in prep.checks)
    assert prep.base_check == want
    assert prep.base_check[3] == prep.base_check[1] and prep.base_check[4] == prep.base_check[0]


# -- the dtype's cost --------------------------------------------------------------------------------

def _bf16_ok() -> bool:
    from runners.dtypes import probe

    return probe("cpu").bf16


needs_bf16 = pytest.mark.skipif(not _bf16_ok(), reason="this CPU has no native bfloat16")


@pytest.fixture
def llama(tmp_path):
    pytest.importorskip("transformers")
    from runners.hf.tiny import save_tiny

    return save_tiny("llama", tmp_path / "llama", seed=2, ctx=64, width=32, layers=2, heads=4, perturb_norms=0.1)


@needs_bf16
def test_the_dtype_check_measures_leaves_the_model_as_it_was_and_is_cached(llama, tmp_path):
    from runners.hf.dtype_check import TOLERANCE, cached_measure, check_documents
    from runners.hf.load import load_checkpoint

    ck = load_checkpoint(llama, dtype="bfloat16", context=32)
    fs = small_set(2)
    before = {k: v.clone() for k, v in ck.model.hf.state_dict().items()}
    first = cached_measure(ck, fs, "cpu", "test CPU", cache_dir=tmp_path / "cache")
    after = ck.model.hf.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert next(ck.model.hf.parameters()).dtype == torch.bfloat16
    assert first.docs == tuple(n for n, _ in check_documents(fs)) and len(first.docs) == 4
    u, v = fs.users
    assert first.docs == tuple(f"{w.name}/{w.heldout[i].doc_id}" for i in (0, 1) for w in (u, v))  # in turn
    # bfloat16 rounds: the base's NLL moves (a little), the stand-in adapter's difference to it moves less
    assert 0 < first.base_shift < 0.1 and 0 <= first.margin_shift < 0.1 and first.tolerance == TOLERANCE
    assert not first.cached and first.tokens > 0
    again = cached_measure(ck, fs, "cpu", "test CPU", cache_dir=tmp_path / "cache")
    assert again.cached and again.margin_shift == first.margin_shift and again.base_shift == first.base_shift
    other = cached_measure(ck, fs, "cpu", "another CPU", cache_dir=tmp_path / "cache")  # per machine
    assert not other.cached


@needs_bf16
@pytest.mark.parametrize("tolerance, kept", [(1.0, True), (0.0, False)])
def test_a_narrow_dtype_beyond_its_tolerance_falls_back_to_float32(llama, tmp_path, monkeypatch, cache_env,
                                                                    tolerance, kept):
    from runners.grid import main
    from runners.hf import dtype_check

    monkeypatch.setattr(dtype_check, "TOLERANCE", tolerance)
    monkeypatch.setattr(dtype_check, "FORMAT", dtype_check.FORMAT + (1000 if kept else 2000))  # not from the cache
    prereg = tmp_path / "prereg.toml"
    prereg.write_text("[criteria]\n")
    out = tmp_path / "runs"
    assert main(["--fixture-set", "synthetic", "--seeds", "1", "--steps", "2", "--fixtures", "2", "--batch-size", "2",
                 "-q", "--model", str(llama), "--context", "32", "--dtype", "bfloat16", "--out", str(out),
                 "--prereg", str(prereg)]) == 0
    m = json.loads((out / "latest" / "manifest.json").read_text())
    host, check = m["host"], m["host"]["dtype_check"]
    assert check["ok"] is kept and check["tolerance"] == tolerance and check["dtype"] == "bfloat16"
    assert host["dtype_requested"] == "bfloat16"
    assert {"load_s", "dtype_check_s", "plan_s", "base_eval_s"} <= set(m["timings"])
    config = json.loads((out / "latest" / "config.json").read_text())
    if kept:
        assert host["dtype"] == "bfloat16" and config["dtype"] == "bfloat16"
    else:
        assert host["dtype"] == "float32" and config["dtype"] == "float32"
        assert "fell back to float32" in host["dtype_reason"] and "nats per token" in host["dtype_reason"]


def test_a_float32_checkpoint_is_not_checked(llama, tmp_path, cache_env):
    from runners.grid import main

    prereg = tmp_path / "prereg.toml"
    prereg.write_text("[criteria]\n")
    out = tmp_path / "runs"
    assert main(["--fixture-set", "synthetic", "--seeds", "1", "--steps", "1", "--fixtures", "2", "--batch-size", "2",
                 "-q", "--model", str(llama), "--context", "32", "--out", str(out), "--prereg", str(prereg)]) == 0
    m = json.loads((out / "latest" / "manifest.json").read_text())
    assert "dtype_check" not in m["host"] and "dtype_check_s" not in m["timings"] and m["host"]["dtype"] == "float32"
    assert m["memory"]["step_seconds"] > 0 and m["memory"]["step_flops"] > 0


# -- the step time ---------------------------------------------------------------------------------------

def test_the_step_probe_times_the_plans_micro_batch_and_leaves_the_random_state():
    from dataclasses import replace

    from runners.memory import GIB, MIB, estimate_step_seconds, plan_memory, shape_of
    from runners.train import probe_step

    cfg = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=16)
    with torch.device("meta"):
        shape = shape_of(GPT(cfg))
    plan = plan_memory(shape, context=32, n_adapters=3, batch_size=4, budget=2 * GIB, resident=300 * MIB)
    plan = replace(plan, micro_rows=6, micro_batches=2)  # a split step: 2 passes of 6 windows
    twin = GPT(cfg)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    probe = probe_step(twin, plan)
    assert torch.equal(torch.get_rng_state(), state)  # the seed's random stream is not touched
    assert probe.rows == 6 and 0 < probe.seconds < 1  # a small model grows to the plan's own micro-batch
    assert estimate_step_seconds(probe, plan) == pytest.approx(2 * probe.seconds)


def test_planning_a_builtin_run_leaves_the_random_state(tmp_path):
    """plan_run times a random-weight copy of the built-in model: its initialisation draws nothing
    from the global generator, which the seeds' training starts from (the default study's cells)."""
    from tests.support.runs import tiny_settings

    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml", seeds=(0,), steps=2)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    plan = execute.plan_run(s, small_set(2))
    assert torch.equal(torch.get_rng_state(), state) and plan.step_seconds > 0
