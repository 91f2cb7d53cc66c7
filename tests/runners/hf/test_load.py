"""Loading a `--model` checkpoint: bad input names the path or flag and the fix; identity is content."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

transformers = pytest.importorskip("transformers")

from runners.hf.load import HFModelError, check_dtype, identity, load_checkpoint  # noqa: E402
from runners.hf.tiny import save_tiny  # noqa: E402


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("llama"), ctx=64)


def _copy(good, tmp_path):
    return shutil.copytree(good, tmp_path / "m")


def test_loads(good):
    ck = load_checkpoint(good)
    assert ck.model.config.block_size == 64  # the model's limit (under the CPU cap)
    assert ck.encoder.prefix == (256,)  # the tokenizer puts <s> in front
    assert load_checkpoint(good, context=16).model.config.block_size == 16


@pytest.mark.parametrize("breakage, pattern", [
    ("file", r"`--model .*/m`: not a directory"),
    ("no_config", r"no config.json; save the model there"),
    ("not_causal", r"ViTConfig .* is not a causal language model"),
    ("no_weights", r"no \*.safetensors weight files; save the model with `save_pretrained`"),
    ("bin_only", r"found pytorch_model.bin: convert them"),
    ("mismatch", r"do not (match config.json|load into its config).*re-save"),
    ("no_tokenizer", r"no tokenizer files .*tokenizer.save_pretrained"),
])
def test_bad_directories(good, tmp_path, breakage, pattern):
    m = _copy(good, tmp_path)
    if breakage == "file":
        shutil.rmtree(m)
        m.write_text("not a model")
    elif breakage == "no_config":
        (m / "config.json").unlink()
    elif breakage == "not_causal":
        transformers.ViTConfig().save_pretrained(m)
    elif breakage in ("no_weights", "bin_only"):
        (m / "model.safetensors").rename(m / "pytorch_model.bin")
        if breakage == "no_weights":
            (m / "pytorch_model.bin").unlink()
    elif breakage == "mismatch":
        cfg = json.loads((m / "config.json").read_text())
        cfg["num_hidden_layers"] += 1  # a layer the weights do not have
        (m / "config.json").write_text(json.dumps(cfg))
    elif breakage == "no_tokenizer":
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (m / f).unlink(missing_ok=True)
    with pytest.raises(HFModelError, match=pattern):
        load_checkpoint(m)


def test_mismatched_shapes(good, tmp_path):
    m = _copy(good, tmp_path)
    cfg = json.loads((m / "config.json").read_text())
    cfg["intermediate_size"] *= 2  # same keys, wrong shapes
    (m / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFModelError, match=r"`--model .*`: the weight"):
        load_checkpoint(m)


def test_bad_flags(good):
    limit = r"`--context 65`: longer than the model's position limit of 64 .*--context 64"
    with pytest.raises(HFModelError, match=limit):
        load_checkpoint(good, context=65)
    with pytest.raises(HFModelError, match=r"`--dtype float64`: use one of float32, bfloat16, float16"):
        load_checkpoint(good, dtype="float64")
    with pytest.raises(HFModelError, match=r"`--context 1`"):
        load_checkpoint(good, context=1)


def test_dtype_probe_refuses_what_the_device_cannot_do(monkeypatch):
    import torch

    real = torch.ones

    def failing(*a, dtype=None, **kw):
        if dtype is torch.bfloat16:
            raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'BFloat16'")
        return real(*a, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "ones", failing)
    with pytest.raises(HFModelError, match=r"`--dtype bfloat16`: not supported on `--device cpu`.*--dtype float32"):
        check_dtype("bfloat16", "cpu")
    assert check_dtype("float32", "cpu") is torch.float32


def test_transformers_missing(good, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(HFModelError, match=r"`--model` needs the optional dependency `transformers`.*\.\[hf\]"):
        load_checkpoint(good)


def test_bfloat16_loads(good):
    import torch

    ck = load_checkpoint(good, dtype="bfloat16")
    assert next(ck.model.hf.parameters()).dtype is torch.bfloat16
    x = torch.randint(0, 256, (2, 8))
    ck.model.attach_adapters(1)
    assert ck.model(x, torch.tensor([0, 1])).dtype is torch.float32  # float32 logits for the NLL sums


def test_identity_is_content(good, tmp_path):
    a = identity(good)
    assert set(a) >= {"path", "config", "weights_sha256", "tokenizer_sha256", "transformers", "sha256"}
    assert list(a["weights_sha256"]) == ["model.safetensors"] and len(a["sha256"]) == 64
    m = _copy(good, tmp_path)
    assert identity(m)["sha256"] == a["sha256"] and identity(m)["path"] != a["path"]  # moved: same content
    tc = json.loads((m / "tokenizer_config.json").read_text())
    tc["model_max_length"] = 7
    (m / "tokenizer_config.json").write_text(json.dumps(tc))
    b = identity(m)
    assert b["tokenizer_sha256"] != a["tokenizer_sha256"] and b["sha256"] != a["sha256"]
    save_tiny("llama", tmp_path / "other", seed=5, ctx=64)
    assert identity(tmp_path / "other")["weights_sha256"] != a["weights_sha256"]
