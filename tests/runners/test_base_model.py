"""The base-model cache: built once, reused, and a corrupt entry rebuilt, never used."""

from __future__ import annotations

import json

from runners.base_model import PRETRAIN_PRESETS, cache_key, load_or_pretrain
from runners.model import PRESETS
from tests.support.runs import small_set

CFG, PRE = PRESETS["tiny"], PRETRAIN_PRESETS["tiny"]


def test_cache_is_built_once_then_reused_and_rebuilt_when_corrupt(tmp_path, caplog):
    fs = small_set()
    first = load_or_pretrain(CFG, PRE, fs.pretrain, fs.pretrain_sha256(), cache_dir=tmp_path)
    assert first.built_now and first.path.name == cache_key(CFG, PRE, fs.pretrain_sha256())
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["weights_sha256"] == first.sha256 and meta["model"] == CFG.to_dict()

    again = load_or_pretrain(CFG, PRE, fs.pretrain, fs.pretrain_sha256(), cache_dir=tmp_path)
    assert not again.built_now and again.sha256 == first.sha256

    weights = first.path / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF  # flip bits in the last weight bytes
    weights.write_bytes(bytes(raw))
    rebuilt = load_or_pretrain(CFG, PRE, fs.pretrain, fs.pretrain_sha256(), cache_dir=tmp_path)
    assert rebuilt.built_now and "fails its hash" in caplog.text
    assert rebuilt.sha256 == first.sha256  # pretraining is deterministic on CPU

    (first.path / "meta.json").write_text("{not json")
    assert load_or_pretrain(CFG, PRE, fs.pretrain, fs.pretrain_sha256(), cache_dir=tmp_path).built_now


def test_key_covers_config_corpus_and_schedule():
    k = cache_key(CFG, PRE, "a" * 64)
    assert k != cache_key(CFG, PRE, "b" * 64)
    assert k != cache_key(PRESETS["cpu"], PRE, "a" * 64)
    assert k != cache_key(CFG, type(PRE)(steps=PRE.steps + 1, batch_size=PRE.batch_size, lr=PRE.lr), "a" * 64)
    assert k != cache_key(CFG, type(PRE)(steps=PRE.steps, batch_size=PRE.batch_size, lr=PRE.lr, seed=1), "a" * 64)
