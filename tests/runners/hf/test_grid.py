"""`python -m runners.grid --model DIR`: a Hugging Face checkpoint as the base model of the grid.

Bad `--model` input exits 2 and writes nothing; a run writes the usual tables (with the model's
own token counts), the adapters also as PEFT directories, and the checkpoint's identity in the
configuration, run id and manifest; end to end through `validation.verdict` (slow), and the
built-in tiny base exported to GPT-2 gives the same cells and the same verdict through both paths.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors import safe_open

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from runners.grid import main  # noqa: E402
from runners.hf.peft_export import PEFT_PREFIX  # noqa: E402
from runners.hf.tiny import bpe_tokenizer, save_tiny  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
FAST = ["--fixture-set", "synthetic", "--seeds", "1", "--steps", "3", "--fixtures", "2", "--batch-size", "2", "-q"]


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory):
    """A tiny Llama whose tokenizer is a BPE trained on the synthetic users' text (tokens != bytes)."""
    from fixtures import load_fixture_set

    fs = load_fixture_set("synthetic")
    tok = bpe_tokenizer([d.text for u in fs.users for d in u.train + u.heldout], 400)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bpe-llama")
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def prereg(tmp_path):
    p = tmp_path / "prereg.toml"
    p.write_text("[criteria]\n")
    return p


BAD = [
    (["--model", "{missing}"], r"`--model .*/missing`: not a directory"),
    (["--dtype", "float64"], r"`--dtype float64`: use one of float32, bfloat16, float16, auto"),
    (["--context", "16"], r"`--context 16`: applies to a Hugging Face checkpoint only"),
    (["--model", "{model}", "--preset", "tiny"], r"`--preset` with `--model .*`: the checkpoint is the base model"),
    (["--model", "{model}", "--context", "999"], r"`--context 999`: longer than the model's position limit of 64"),
    (["--model", "{model}", "--dtype", "float64"], r"`--dtype float64`: use one of float32, bfloat16, float16"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[" ".join(b[0][-2:]) for b in BAD])
def test_bad_model_input_exits_2_and_writes_nothing(bpe_model, tmp_path, prereg, capsys, extra, message):
    out = tmp_path / "runs"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier file")
    before = _snapshot(out)
    args = [a.format(missing=tmp_path / "missing", model=bpe_model) for a in extra]
    assert main(FAST + ["--out", str(out), "--prereg", str(prereg)] + args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert _snapshot(out) == before


def test_grid_on_a_checkpoint(bpe_model, tmp_path, prereg, cache_env):
    out = tmp_path / "runs"
    assert main(FAST + ["--model", str(bpe_model), "--context", "32", "--out", str(out), "--prereg", str(prereg)]) == 0
    run = (out / "latest").resolve()
    assert run.name.startswith(f"synthetic-{bpe_model.name}-")
    cells = pl.read_parquet(run / "cells.parquet")
    assert set(cells["adapter"]) == {"base", "pooled", "user1", "user2", "loo:user1", "loo:user2"}
    assert len(cells) == 6 * 2
    assert (run / "peft/seed-0/loo/user2/adapter_config.json").is_file()  # loo:user2, no ':' in a path
    assert (cells["n_tokens"] < cells["n_bytes"]).all()  # the BPE tokenizer's count, not bytes
    docs = pl.read_parquet(run / "docs.parquet")
    assert (docs["n_tokens"] > 0).all()
    config = json.loads((run / "config.json").read_text())
    m = json.loads((run / "manifest.json").read_text())
    ident = config["hf_model"]
    assert ident["path"] == str(bpe_model.resolve()) and list(ident["weights_sha256"]) == ["model.safetensors"]
    assert config["context"] == 32 and config["dtype"] == "float32" and "preset" not in config
    assert m["base_model"]["sha256"] == config["hf_model_sha256"]
    assert m["base_model"]["path"] == str(bpe_model.resolve())
    assert m["versions"]["transformers"] == transformers.__version__ and m["adapter"]["norm_layers"] == 5
    assert m["adapter"]["params"] == 5 * 32
    # the run's own adapter files, and each adapter as a PEFT directory that PEFT loads
    with safe_open(run / "adapters/seed-0/user1.safetensors", "pt") as f:
        assert json.loads(f.metadata()["config"])["model"]["hf_model_sha256"] == config["hf_model_sha256"]
        ours = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    pdir = run / "peft/seed-0/user1"
    assert json.loads((pdir / "adapter_config.json").read_text())["peft_type"] == "LN_TUNING"
    with safe_open(pdir / "adapter_model.safetensors", "pt") as f:
        names = {k.removeprefix(PEFT_PREFIX).replace(".ln_tuning_layers", "") for k in f.keys()}  # noqa: SIM118
        assert names == set(ours)
    base = transformers.AutoModelForCausalLM.from_pretrained(bpe_model, trust_remote_code=False).eval()
    pm = peft.PeftModel.from_pretrained(base, pdir).eval()
    loaded = {n.removeprefix(PEFT_PREFIX).replace(".ln_tuning_layers.default", ""): p
              for n, p in pm.named_parameters() if "ln_tuning_layers" in n}
    assert all(torch.equal(loaded[k], v) for k, v in ours.items())
    # resumed: a second run keeps the seed (same checkpoint content)
    assert main(FAST + ["--model", str(bpe_model), "--context", "32", "--out", str(out), "--prereg", str(prereg)]) == 0
    assert (out / "latest").resolve() == run


def _run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_end_to_end_grid_and_verdict(tmp_path, cache_env):
    model = save_tiny("llama", tmp_path / "llama", seed=3, ctx=64)
    grid = _run(["runners.grid", "--model", str(model), "--fixture-set", "synthetic", "--seeds", "3", "--steps", "10",
                 "--out", str(tmp_path / "runs"), "-q"], REPO)
    assert grid.returncode == 0, grid.stderr[-3000:]
    assert "perplexity per token" in grid.stdout
    run = (tmp_path / "runs" / "latest").resolve()
    verdict = _run(["validation.verdict", "--run", str(run), "--no-report"], REPO)
    assert verdict.returncode in (0, 1), verdict.stderr[-3000:]
    v = json.loads((run / "verdict.json").read_text())
    assert {"strict", "lenient"} <= set(v["criteria"])


@pytest.mark.slow
def test_both_paths_same_cells_and_verdict(tmp_path, cache_env):
    """The tiny preset's grid and the same base exported to GPT-2 and run with --model agree."""
    from fixtures import load_fixture_set
    from runners.base_model import PRETRAIN_PRESETS, load_or_pretrain
    from runners.hf.export_gpt2 import export_gpt2
    from runners.model import PRESETS

    fs = load_fixture_set("synthetic")
    base = load_or_pretrain(PRESETS["tiny"], PRETRAIN_PRESETS["tiny"], fs.pretrain, fs.pretrain_sha256())
    model = export_gpt2(base.model, tmp_path / "gpt2")
    common = ["--fixture-set", "synthetic", "--seeds", "3", "--steps", "10", "-q"]
    runs = {}
    for name, extra in (("builtin", ["--preset", "tiny"]), ("hf", ["--model", str(model)])):
        out = tmp_path / name
        grid = _run(["runners.grid", *common, *extra, "--out", str(out)], REPO)
        assert grid.returncode == 0, grid.stderr[-3000:]
        runs[name] = (out / "latest").resolve()
        verdict = _run(["validation.verdict", "--run", str(runs[name]), "--no-report"], REPO)
        assert verdict.returncode in (0, 1), verdict.stderr[-3000:]
    a, b = (pl.read_parquet(runs[n] / "cells.parquet").sort(["seed", "adapter", "eval"]) for n in ("builtin", "hf"))
    assert a["n_tokens"].to_list() == b["n_tokens"].to_list() and a["status"].to_list() == b["status"].to_list()
    rel = ((a["nll_sum"] - b["nll_sum"]).abs() / a["nll_sum"]).max()
    assert rel < 1e-4, rel
    va, vb = (json.loads((runs[n] / "verdict.json").read_text()) for n in ("builtin", "hf"))
    assert {k: c["status"] for k, c in va["criteria"].items()} == {k: c["status"] for k, c in vb["criteria"].items()}


def test_a_step_sweep_on_a_checkpoint(bpe_model, tmp_path, cache_env):
    """`--steps 2,3` on a checkpoint: each count's adapters and PEFT folders one `steps-<k>` down."""
    prereg = tmp_path / "prereg.toml"
    prereg.write_text("[steps]\nprimary = 3\n")
    out = tmp_path / "runs"
    args = [a for a in FAST if a not in ("--steps", "3")]
    assert main(args + ["--steps", "2,3", "--model", str(bpe_model), "--context", "32", "--out", str(out),
                        "--prereg", str(prereg)]) == 0
    run = (out / "latest").resolve()
    assert sorted(set(pl.read_parquet(run / "cells.parquet")["steps"])) == [2, 3]
    for k in (2, 3):
        assert (run / f"adapters/seed-0/steps-{k}/user1.safetensors").is_file()
        assert (run / f"peft/seed-0/steps-{k}/user1/adapter_model.safetensors").is_file()
