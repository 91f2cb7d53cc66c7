"""`python -m runners.grid --routing` (issue #25, runner side): the `avg:`, `ens:` and `noise:` rows
built from the trained user adapters, scored like every other row; the storage record; run id,
resume and seal; the `--model` backend."""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from common.contract import avg_name, ens_name, is_control, noise_name
from runners.base_model import load_or_pretrain
from runners.data import eval_windows
from runners.evaluate import doc_nll, per_doc, window_nll
from runners.execution.execute import run_grid
from runners.grid import build_parser
from runners.routing import (
    RoutingConfig,
    average_state,
    choose_pairs,
    ensemble_nll,
    noise_seed,
    noisy_state,
    plan_routing,
    storage_record,
)
from runners.settings import run_config, settings_from_args
from tests.support.runs import small_set, tiny_settings
from validation.contract.manifest import read_manifest

CONFIG = RoutingConfig(sigmas=(0.1, 0.3), noise_draws=2, max_pairs=45, rng_seed=7)
USERS = ("user1", "user2", "user3")
COUNTS = (2, 4)


def _settings(out: Path, prereg: Path, seeds=(0,), routing=CONFIG):
    s = tiny_settings(out, prereg, seeds=seeds, steps=COUNTS[-1])
    return replace(s, train=replace(s.train, steps_list=COUNTS), routing=routing)


@pytest.fixture(scope="module")
def run(tmp_path_factory, session_cache):
    """One `--routing` run: 3 users, 1 seed, steps 2 and 4 (module-scoped: the tests only read it)."""
    tmp = tmp_path_factory.mktemp("routing")
    fs = small_set(3)
    s = _settings(tmp / "runs", tmp / "prereg.toml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NORMADAPT_CACHE_DIR", str(session_cache))
        run_dir = run_grid(fs, s)
        base = load_or_pretrain(s.model, s.pretrain, fs.pretrain, fs.pretrain_sha256())
    return SimpleNamespace(dir=run_dir, fs=fs, s=s, base=base, docs=pl.read_parquet(run_dir / "docs.parquet"))


def _rows(run, adapter: str, eval_user: str, steps: int = COUNTS[-1]) -> pl.DataFrame:
    return run.docs.filter((pl.col("adapter") == adapter) & (pl.col("eval") == eval_user) & (pl.col("steps") == steps))


def _states(run, steps: int = COUNTS[-1]) -> dict[str, dict[str, torch.Tensor]]:
    return {u: load_file(run.dir / "adapters/seed-0" / f"steps-{steps}" / f"{u}.safetensors") for u in USERS}


def _scorer(run, states: list[dict[str, torch.Tensor]]):
    model = copy.deepcopy(run.base.model)
    model.attach_adapters(len(states))
    model.load_adapter_bank(states)
    return model


# -- the helpers ---------------------------------------------------------------------------------

def test_pairs_are_every_pair_up_to_max_pairs_else_a_deterministic_sample():
    users = [f"u{i:02d}" for i in range(10)]  # 45 pairs
    every, sampled = choose_pairs(users, 45, 1)
    assert len(every) == 45 and not sampled and len(set(every)) == 45 and all(a < b for a, b in every)
    some, sampled = choose_pairs(users, 12, 1)
    assert sampled and len(set(some)) == 12 and set(some) <= set(every)
    assert some == choose_pairs(users, 12, 1)[0] and some != choose_pairs(users, 12, 2)[0]
    assert list(some) == [p for p in every if p in some]  # kept in the full list's order
    plan = plan_routing(["b", "a", "c"], CONFIG)
    assert plan.avg_names == ("avg:a+b", "avg:b+c", "avg:a+c")
    assert plan.names == (*plan.avg_names, "ens:b", "ens:a", "ens:c",
                          *(noise_name(u, s) for u in "bac" for s in CONFIG.sigmas))
    assert all(is_control(n) for n in plan.names)


def test_noise_is_relative_deterministic_per_seed_user_sigma_draw_and_zero_sigma_is_the_adapter():
    g = torch.Generator().manual_seed(0)
    state = {"a.weight": 1 + torch.rand(20_000, generator=g), "a.bias": torch.randn(300, generator=g)}
    k = noise_seed(3, "user1", 0.1, 0)
    one, again = noisy_state(state, 0.1, k), noisy_state(state, 0.1, k)
    assert all(torch.equal(one[n], again[n]) for n in state)
    for other in (noise_seed(4, "user1", 0.1, 0), noise_seed(3, "user2", 0.1, 0), noise_seed(3, "user1", 0.3, 0),
                  noise_seed(3, "user1", 0.1, 1)):
        assert other != k and not torch.equal(noisy_state(state, 0.1, other)["a.weight"], one["a.weight"])
    eps = (one["a.weight"] / state["a.weight"] - 1) / 0.1  # relative to the adapter's own values
    assert abs(float(eps.mean())) < 0.03 and abs(float(eps.std()) - 1) < 0.03
    backwards = noisy_state(dict(reversed(state.items())), 0.1, k)  # a file's key order: the same draw
    assert list(backwards) == list(reversed(state)) and all(torch.equal(backwards[n], one[n]) for n in state)
    zero = noisy_state(state, 0.0, k)
    assert all(torch.equal(zero[n], state[n]) for n in state)


def test_ensemble_nll_averages_probabilities_not_logits():
    g = torch.Generator().manual_seed(1)
    nlls = [torch.rand(4, 6, generator=g) * 5 for _ in range(3)]
    nlls[0][:, -2:] = nlls[1][:, -2:] = nlls[2][:, -2:] = 0  # padding: 0 for every adapter
    want = -torch.log(sum(torch.exp(-t.double()) for t in nlls) / 3)
    got = ensemble_nll(nlls)
    assert torch.allclose(got, want, rtol=0, atol=1e-12) and torch.all(got[:, -2:] == 0)
    assert not torch.allclose(got, sum(t.double() for t in nlls) / 3, atol=1e-3)  # the mean NLL is another thing


def test_storage_record_counts_parameters_and_safetensors_bytes():
    state = {"x.weight": torch.ones(100), "x.bias": torch.zeros(100), "y.weight": torch.ones(28)}
    rec = storage_record(state)
    assert rec.keys() == {"parameters", "bytes_float32", "bytes_float16"} and rec["parameters"] == 228
    h32, h16 = rec["bytes_float32"] - 4 * 228, rec["bytes_float16"] - 2 * 228  # the data, then the header
    assert 8 < h32 < 8 + 3 * 100 and 8 < h16 < 8 + 3 * 100 and abs(h32 - h16) <= 16  # same header but offsets


# -- a `--routing` run -------------------------------------------------------------------------

def test_every_routing_row_is_scored_on_every_users_documents_at_every_count(run):
    plan = plan_routing(USERS, CONFIG)
    cells = pl.read_parquet(run.dir / "cells.parquet")
    for table in (cells, run.docs):
        for k in COUNTS:
            at = set(table.filter(pl.col("steps") == k)["adapter"])
            assert set(plan.names) <= at and len(plan.names) == 3 + 3 + 3 * 2
            assert at == {"base", "pooled", *USERS, *(f"loo:{u}" for u in USERS), *plan.names}
    base = run.docs.filter(pl.col("adapter") == "base").sort(["steps", "eval", "doc_id"])
    for name in plan.names:
        rows = run.docs.filter(pl.col("adapter") == name).sort(["steps", "eval", "doc_id"])
        assert rows.columns == base.columns and rows.schema == base.schema
        assert rows.select("steps", "eval", "doc_id", "n_tokens", "n_bytes").equals(
            base.select("steps", "eval", "doc_id", "n_tokens", "n_bytes"))
        assert rows["nll_sum"].is_finite().all() and set(rows["status"]) == {"ok"}
    done = json.loads((run.dir / "seeds/seed-0/done.json").read_text())
    assert all(set(plan.names) <= set(done["statuses_by_steps"][str(k)]) for k in COUNTS)
    assert set(plan.names) <= set(done["statuses"]) and set(done["routing_s"]) == {"build_s", "score_s", "ens_s"}


def test_avg_row_equals_the_hand_averaged_adapter(run):
    for k in COUNTS:
        st = _states(run, k)
        model = _scorer(run, [average_state(st["user1"], st["user3"]),
                              {n: (st["user1"][n] + st["user3"][n]) / 2 for n in st["user1"]}])
        for u in run.fs.users:
            w = eval_windows(u.heldout, run.s.model.block_size)
            want = _rows(run, avg_name("user3", "user1"), u.name, k)["nll_sum"].to_numpy()
            np.testing.assert_allclose(doc_nll(model, w, 1), want, rtol=1e-12, atol=0)
            np.testing.assert_allclose(doc_nll(model, w, 2), want, rtol=1e-12, atol=0)
        # not a copy of either contributor
        assert not np.allclose(_rows(run, "user1", "user1", k)["nll_sum"].to_numpy(),
                               _rows(run, "avg:user1+user3", "user1", k)["nll_sum"].to_numpy())


def test_ens_through_the_bank_equals_each_adapter_scored_alone_with_probabilities_averaged(run):
    st = _states(run)
    for left_out in USERS:
        others = [u for u in USERS if u != left_out]
        for u in run.fs.users:
            w = eval_windows(u.heldout, run.s.model.block_size)
            probs = []
            for v in others:  # each adapter alone, in a bank of its own
                tokens = []
                window_nll(_scorer(run, [st[v]]), w.x, w.y, 1, tokens=tokens)
                probs.append(torch.exp(-torch.cat(tokens).double()))
            mix = -torch.log(sum(probs) / len(probs))  # (W, T): padding gives exp(0) = 1 for all, nll 0
            want = per_doc(w, mix.sum(dim=1).numpy())
            got = _rows(run, ens_name(left_out), u.name)["nll_sum"].to_numpy()
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
            # a mixture of parameters (the average) or of logits is something else
            assert not np.allclose(got, _rows(run, avg_name(*others), u.name)["nll_sum"].to_numpy(), rtol=1e-4)


def test_noise_row_is_the_mean_over_its_draws_and_sigma_zero_reproduces_the_user_row(run):
    st = _states(run)
    for user, sigma in (("user2", 0.3), ("user1", 0.1)):
        draws = [noisy_state(st[user], sigma, noise_seed(0, user, sigma, d)) for d in range(CONFIG.noise_draws)]
        model = _scorer(run, [*draws, noisy_state(st[user], 0.0, noise_seed(0, user, 0.0, 0))])
        for u in run.fs.users:
            w = eval_windows(u.heldout, run.s.model.block_size)
            want = np.mean([doc_nll(model, w, d + 1) for d in range(CONFIG.noise_draws)], axis=0)
            got = _rows(run, noise_name(user, sigma), u.name)["nll_sum"].to_numpy()
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
            np.testing.assert_allclose(doc_nll(model, w, CONFIG.noise_draws + 1),
                                       _rows(run, user, u.name)["nll_sum"].to_numpy(), rtol=1e-12, atol=0)
    a, b = (_rows(run, noise_name("user1", s), "user1")["nll_sum"].to_numpy() for s in (0.1, 0.3))
    assert not np.array_equal(a, b)


def test_manifest_records_the_plan_storage_and_seconds(run):
    m = read_manifest(run.dir / "manifest.json")
    r = m.routing
    assert r["pairs"] == [["user1", "user2"], ["user1", "user3"], ["user2", "user3"]]
    assert r["pair_selection"] == "every pair" and r["sigmas"] == [0.1, 0.3] and r["noise_draws"] == 2
    assert r["max_pairs"] == 45 and r["rng_seed"] == 7 and "1 + sigma * eps" in r["noise"]
    assert r["rows"] == list(plan_routing(USERS, CONFIG).names)
    n_params = run.base.model.n_adapter_params()
    assert r["storage"] == storage_record(_states(run)["user1"]) and r["storage"]["parameters"] == n_params
    assert r["storage"]["bytes_float16"] < r["storage"]["bytes_float32"] and r["storage_adapter"] == "user1"
    sec = r["seconds"]
    assert sec["total_s"] == pytest.approx(sec["build_s"] + sec["score_s"] + sec["ens_s"]) and sec["score_s"] > 0
    assert m.config["routing"] == CONFIG.to_dict()


def test_a_sealed_routing_run_passes_the_seals_checks(run):
    from validation.inputs.sealed import check_facts, open_seal

    check = open_seal(run.dir)
    facts = check.seal.facts
    assert set(plan_routing(USERS, CONFIG).names) <= set(facts["adapters"])
    cells = pl.read_parquet(run.dir / "cells.parquet")
    study = SimpleNamespace(manifest=read_manifest(run.dir / "manifest.json"), cells=cells, docs=run.docs,
                            counts=tuple(sorted(set(cells["steps"]))))
    check_facts(run.dir, check, study)  # raises on any disagreement


def test_the_flag_is_part_of_the_run_id_and_resolved_from_the_prereg(tmp_path):
    fs = small_set(3)
    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml", seeds=(0,))
    plain, routed = run_config(s, fs), run_config(replace(s, routing=CONFIG), fs)
    assert "routing" not in plain and routed == {**plain, "routing": CONFIG.to_dict()}
    (tmp_path / "p.toml").write_text("[routing]\nsigmas = [0.05, 0.2]\nnoise_sigma = 0.2\nnoise_draws = 4\n")
    args = build_parser().parse_args(["--prereg", str(tmp_path / "p.toml"), "--out", str(tmp_path / "o"),
                                      "--routing"])
    got = settings_from_args(args).routing
    assert got.sigmas == (0.05, 0.2) and got.noise_draws == 4 and got.max_pairs == 45
    args = build_parser().parse_args(["--prereg", str(tmp_path / "p.toml"), "--out", str(tmp_path / "o")])
    assert settings_from_args(args).routing is None


def test_an_interrupted_routing_run_resumes_to_the_same_tables(run, tmp_path, cache_env, caplog):
    prereg = tmp_path / "prereg.toml"
    s = _settings(tmp_path / "resumed", prereg, seeds=(0, 1))
    full = run_grid(run.fs, _settings(tmp_path / "full", prereg, seeds=(0, 1)))

    def crash(seed):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(run.fs, s, on_seed_done=crash)
    run_dir = s.out / full.name
    assert (run_dir / "seeds/seed-0/done.json").exists() and not (run_dir / "seeds/seed-1").exists()
    resumed = run_grid(run.fs, s)
    assert json.loads((resumed / "manifest.json").read_text())["timings"]["resumed_seeds"] == [0]
    for table in ("docs.parquet", "cells.parquet"):
        assert pl.read_parquet(resumed / table).equals(pl.read_parquet(full / table))
    # the training kept, a count's evaluation lost: the routing rows are rebuilt from the adapter files
    for p in ("seeds/seed-1/done.json", "seeds/seed-1/steps-4.json", "seeds/seed-1/steps-4/docs.parquet"):
        (run_dir / p).unlink()
    with caplog.at_level(logging.INFO, logger="runners.grid"):
        again = run_grid(run.fs, s)
    assert "training kept" in caplog.text
    assert pl.read_parquet(again / "docs.parquet").equals(pl.read_parquet(full / "docs.parquet"))


def test_a_run_without_the_flag_has_no_routing_rows_or_record(tmp_path, cache_env):
    run_dir = run_grid(small_set(2), tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml", seeds=(0,), steps=2))
    adapters = set(pl.read_parquet(run_dir / "cells.parquet")["adapter"])
    assert adapters == {"base", "pooled", "user1", "user2", "loo:user1", "loo:user2"}
    assert read_manifest(run_dir / "manifest.json").routing is None
    assert "routing_s" not in json.loads((run_dir / "seeds/seed-0/done.json").read_text())


# -- the `--model` backend ------------------------------------------------------------------------

def test_routing_rows_with_a_hugging_face_model(tmp_path, cache_env):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from fixtures import load_fixture_set
    from runners.grid import main
    from runners.hf.tiny import bpe_tokenizer

    fs = load_fixture_set("synthetic")
    tok = bpe_tokenizer([d.text for u in fs.users for d in u.train + u.heldout], 300)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model_dir = tmp_path / "llama"
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    (tmp_path / "prereg.toml").write_text("[routing]\nsigmas = [0.1]\nnoise_sigma = 0.1\nnoise_draws = 2\n")
    out = tmp_path / "runs"
    assert main(["--fixture-set", "synthetic", "--seeds", "1", "--steps", "2", "--fixtures", "3", "--batch-size",
                 "2", "-q", "--model", str(model_dir), "--routing", "--no-loo", "--prereg",
                 str(tmp_path / "prereg.toml"), "--out", str(out)]) == 0
    run_dir = (out / "latest").resolve()
    users = [u.name for u in fs.users[:3]]
    docs = pl.read_parquet(run_dir / "docs.parquet")
    plan = plan_routing(users, RoutingConfig(sigmas=(0.1,), noise_draws=2))
    assert set(plan.names) <= set(docs["adapter"]) and docs["nll_sum"].is_finite().all()
    m = read_manifest(run_dir / "manifest.json")
    assert m.routing["storage"]["parameters"] == m.adapter.params
    # the ens row from the bank equals the two other adapters scored alone, probabilities averaged
    from runners.hf.backend import open_checkpoint

    ck = open_checkpoint(model_dir, "float32", "cpu", None)
    st = {u: load_file(run_dir / "adapters/seed-0" / f"{u}.safetensors") for u in users}
    u0 = fs.users[0]
    w = eval_windows(u0.heldout, ck.model.config.block_size, ck.encoder)
    probs = []
    for v in users[1:]:
        m1 = copy.deepcopy(ck.model)
        m1.attach_adapters(1)
        m1.load_adapter_bank([st[v]])
        tokens = []
        window_nll(m1, w.x, w.y, 1, tokens=tokens)
        probs.append(torch.exp(-torch.cat(tokens).double()))
    want = per_doc(w, (-torch.log(sum(probs) / 2)).sum(dim=1).numpy())
    got = docs.filter((pl.col("adapter") == ens_name(users[0])) & (pl.col("eval") == u0.name))["nll_sum"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)
    assert math.isfinite(m.routing["seconds"]["total_s"])
    shutil.rmtree(run_dir)


def test_routing_rows_in_chunks_as_a_ray_executor_splits_them_equal_one_bank(run, tmp_path, cache_env):
    from runners.execution.executors import LocalExecutor

    class Chunked(LocalExecutor):  # the evaluation and the built rows split as over 3 Ray slots
        parallelism = 3

    chunked = run_grid(run.fs, replace(run.s, out=tmp_path / "runs"), executor=Chunked())
    assert chunked.name == run.dir.name
    for table in ("docs.parquet", "cells.parquet"):
        assert pl.read_parquet(chunked / table).equals(pl.read_parquet(run.dir / table))


def test_the_grid_summary_keeps_the_routing_rows_out_of_its_matrix(tmp_path):
    """The printed matrix holds the users and the controls; the routing rows (15 for 3 users, about
    120 for 18) are counted in one line and judged by the verdict."""
    from runners.grid import summary

    users = ("u1", "u2", "u3")
    rows = ["base", *users, "avg:u1+u2", "ens:u1", "noise:u1@0.1", "noise:u1@0.3"]
    cells = [dict(seed=0, adapter=a, eval=e, ppl=1.5 if a == e else 2.5, status="ok") for a in rows for e in users]
    pl.DataFrame(cells).write_parquet(tmp_path / "cells.parquet")
    text = summary(tmp_path)
    assert "avg:" not in text.split("routing rows")[0] and "noise:" not in text and "ens:u1 " not in text
    assert "routing rows scored on every user's text (1 avg, 1 ens, 2 noise; docs/routing.md)" in text
    assert "u1" in text and "base" in text
