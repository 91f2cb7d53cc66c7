"""The dtype policy for frozen base weights (`--dtype`, runners.dtypes): resolution on every kind of
hardware (the capability is passed in, so the CUDA branches run on any machine), the model's
mixed-precision layout, determinism per dtype, bad input, and the run id / manifest."""

from __future__ import annotations

import argparse
import copy
import json
import re

import numpy as np
import pytest
import torch

from runners import dtypes
from runners.dtypes import Capability, DtypeError, resolve
from runners.grid import build_parser, main
from runners.model import GPT, PRESETS
from runners.settings import UsageError, settings_from_args
from runners.train import TrainConfig, data_order, train_adapters

CPU_BF16 = Capability("cpu", bf16=True, fp16=False, what="CPU (AVX512)")
CPU_PLAIN = Capability("cpu", bf16=False, fp16=False, what="CPU (AVX2)")
GPU_BF16 = Capability("cuda", bf16=True, fp16=True, what="GPU NVIDIA H100")
GPU_OLD = Capability("cuda", bf16=False, fp16=True, what="GPU Tesla V100")
FAST = ["--preset", "tiny", "--fixture-set", "synthetic", "--seeds", "1", "--steps", "3", "--fixtures", "2"]


# -- resolution --------------------------------------------------------------------------------

BF16_TABLE = {"tiny": "float32", "cpu": "float32", "gpt30m": "bfloat16"}  # as if gpt30m had been measured


@pytest.mark.parametrize("cap, preset, want", [
    (CPU_BF16, "cpu", "float32"), (CPU_BF16, "tiny", "float32"), (CPU_BF16, "gpt30m", "bfloat16"),
    (CPU_PLAIN, "gpt30m", "float32"),  # the table says bfloat16, the hardware has none: float32, said so
    (CPU_BF16, None, "float32"),  # None: a --model checkpoint
    (GPU_BF16, "cpu", "float32"), (GPU_BF16, "gpt30m", "bfloat16"), (GPU_BF16, None, "float32"),
    (GPU_OLD, "gpt30m", "float32"),  # float16 is never picked automatically
])
def test_auto_resolves_per_hardware_and_preset(monkeypatch, cap, preset, want):
    monkeypatch.setattr(dtypes, "AUTO_CPU", BF16_TABLE)
    monkeypatch.setattr(dtypes, "AUTO_GPU", BF16_TABLE)
    got = resolve("auto", cap, preset)
    assert got.requested == "auto" and got.name == want and got.torch_dtype is dtypes.DTYPES[want]
    assert got.reason.startswith(f"--dtype auto: {want}")
    if cap is CPU_PLAIN:
        assert "has no native bfloat16" in got.reason


def test_auto_follows_the_measured_tables():
    for table, caps in ((dtypes.AUTO_CPU, (CPU_BF16,)), (dtypes.AUTO_GPU, (GPU_BF16,))):
        assert set(table) == set(PRESETS)  # every preset has an entry
        for preset, want in table.items():
            assert all(resolve("auto", cap, preset).name == want for cap in caps)
    # today's measurements (docs/performance.md): bfloat16 where it was faster and passed the
    # accuracy rule on the default study (cpu, gpt30m on a CPU); tiny and every GPU entry stay float32
    assert dtypes.AUTO_CPU == {"tiny": "float32", "cpu": "bfloat16", "gpt30m": "bfloat16"}
    assert set(dtypes.AUTO_GPU.values()) == {"float32"}


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16"])
def test_an_explicit_dtype_is_kept_where_the_hardware_has_it(name):
    assert resolve(name, GPU_BF16).name == name
    assert resolve("float32", CPU_PLAIN).name == "float32"  # float32 is always available


@pytest.mark.parametrize("name, cap, message", [
    ("bfloat16", CPU_PLAIN, r"`--dtype bfloat16`: this CPU \(AVX2\) has no native bfloat16 .* use `--dtype float32`"),
    ("bfloat16", GPU_OLD, r"`--dtype bfloat16`: this GPU Tesla V100 has no native bfloat16 .*`--dtype float16` or "
                          r"`--dtype float32`"),
    ("float16", CPU_BF16, r"`--dtype float16`: this CPU \(AVX512\) has no native float16"),
    ("float64", CPU_BF16, r"`--dtype float64`: use one of float32, bfloat16, float16, auto"),
])
def test_what_the_hardware_lacks_is_refused_never_silently_replaced(name, cap, message):
    with pytest.raises(DtypeError, match=message):
        resolve(name, cap, "cpu")


def _args(extra: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(FAST + extra)


def test_the_cuda_path_of_the_flags(monkeypatch, tmp_path):
    """`--device cuda` resolved as on a GPU machine: the probe and torch.cuda are the only fakes."""
    prereg = tmp_path / "prereg.toml"
    prereg.write_text("[criteria]\n")
    base = ["--device", "cuda", "--out", str(tmp_path / "runs"), "--prereg", str(prereg)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dtypes, "AUTO_GPU", BF16_TABLE)
    monkeypatch.setattr(dtypes, "probe", lambda device: GPU_BF16 if device == "cuda" else CPU_BF16)
    s = settings_from_args(_args(base + ["--preset", "gpt30m"]))
    assert (s.device, s.dtype, s.dtype_choice.requested) == ("cuda", "bfloat16", "auto")
    monkeypatch.setattr(dtypes, "probe", lambda device: GPU_OLD)
    assert settings_from_args(_args(base)).dtype == "float32"
    assert settings_from_args(_args(base + ["--dtype", "float16"])).dtype == "float16"
    with pytest.raises(UsageError, match=r"`--dtype bfloat16`: this GPU Tesla V100 has no native bfloat16"):
        settings_from_args(_args(base + ["--dtype", "bfloat16"]))


@pytest.mark.parametrize("extra, fake, message", [
    (["--dtype", "float64"], None, r"`--dtype float64`: use one of float32, bfloat16, float16, auto"),
    (["--dtype", "bfloat16"], CPU_PLAIN, r"`--dtype bfloat16`: this CPU \(AVX2\) has no native bfloat16"),
])
def test_bad_dtype_exits_2_and_writes_nothing(monkeypatch, tmp_path, capsys, extra, fake, message):
    if fake is not None:
        monkeypatch.setattr(dtypes, "probe", lambda device: fake)
    prereg = tmp_path / "prereg.toml"
    prereg.write_text("[criteria]\n")
    out = tmp_path / "runs"
    assert main(FAST + ["--out", str(out), "--prereg", str(prereg)] + extra) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists() or not any(out.iterdir())


# -- the model's mixed-precision layout ------------------------------------------------------------

def _tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(PRESETS["tiny"]).eval()


def test_cast_frozen_narrows_only_the_blocks_matmuls():
    m = _tiny().cast_frozen(torch.bfloat16)
    assert m.weights_dtype is torch.bfloat16
    for name, p in m.named_parameters():
        narrow = name.startswith("blocks.") and (".attn." in name or ".mlp." in name)
        assert p.dtype is (torch.bfloat16 if narrow else torch.float32), name
    bank = m.attach_adapters(3)
    assert all(p.dtype is torch.float32 and p.requires_grad for p in bank)
    x = torch.randint(0, 256, (4, 16))
    logits = m(x, torch.tensor([0, 1, 2, 3]))
    assert logits.dtype is torch.float32  # the loss and the NLL sums are float32


def test_float32_cast_is_bit_identical_and_bfloat16_is_close():
    x = torch.randint(0, 256, (4, 32))
    with torch.no_grad():
        ref = _tiny()(x)
        same = _tiny().cast_frozen(torch.float32)(x)
        narrow = _tiny().cast_frozen(torch.bfloat16)(x)
    assert torch.equal(ref, same)
    assert not torch.equal(ref, narrow)  # the cast really changes the arithmetic ...
    assert (narrow - ref).abs().max().item() < 0.05  # ... by bfloat16 rounding only


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_is_deterministic_per_dtype(dtype):
    base = _tiny().cast_frozen(dtype)
    rng = np.random.default_rng(0)
    streams = [rng.integers(0, 256, 2000), rng.integers(0, 256, 3000)]
    cfg = TrainConfig(steps=4, batch_size=2)
    orders = [data_order(0, k, len(s), base.config.block_size, cfg) for k, s in enumerate(streams)]
    a = train_adapters(copy.deepcopy(base), streams, orders, cfg)
    b = train_adapters(copy.deepcopy(base), streams, orders, cfg)
    assert np.array_equal(a.losses, b.losses)
    assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype is torch.float32
               for sa, sb in zip(a.states, b.states, strict=True) for k in sa)
    assert a.model.weights_dtype is dtype


# -- the run: run id, manifest ----------------------------------------------------------------------

@pytest.mark.slow
def test_the_run_id_covers_the_dtype_and_the_manifest_records_it(tmp_path, cache_env):
    prereg = tmp_path / "prereg.toml"
    prereg.write_text("[criteria]\n")
    out = tmp_path / "runs"
    runs = {}
    for name in ("float32", "bfloat16"):
        assert main(FAST + ["--out", str(out), "--prereg", str(prereg), "--dtype", name, "-q"]) == 0
        run = (out / "latest").resolve()
        runs[name] = (run, json.loads((run / "manifest.json").read_text()))
    (r32, m32), (r16, m16) = runs["float32"], runs["bfloat16"]
    assert r32 != r16
    assert "dtype" not in m32["config"] and m16["config"]["dtype"] == "bfloat16"  # float32: the run id of old
    assert (m32["host"]["dtype"], m16["host"]["dtype"]) == ("float32", "bfloat16")
    assert m16["host"]["dtype_requested"] == "bfloat16" and "as asked" in m16["host"]["dtype_reason"]
    assert m32["base_model"]["sha256"] == m16["base_model"]["sha256"]  # one float32 base model, one cache entry
