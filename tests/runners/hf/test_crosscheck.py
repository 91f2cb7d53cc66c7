"""Two paths, one answer: the built-in tiny base exported as an HF GPT-2 checkpoint scores the same.

Per-document NLLs of the held-out documents agree (1e-4 relative) through the built-in path and
the HF path, for the base model and for adapters trained by the built-in path and loaded into the
HF path; the HF path counts the same tokens (bytes) and puts the same BOS in front.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from runners.base_model import PRETRAIN_PRESETS, load_or_pretrain  # noqa: E402
from runners.data import encode, eval_windows, training_stream  # noqa: E402
from runners.evaluate import doc_nll  # noqa: E402
from runners.hf.evaluate import hf_eval_windows, hf_training_stream  # noqa: E402
from runners.hf.export_gpt2 import builtin_adapter_to_hf, export_gpt2  # noqa: E402
from runners.hf.load import load_checkpoint  # noqa: E402
from runners.model import PRESETS  # noqa: E402
from runners.train import TrainConfig, data_order, train_adapters  # noqa: E402
from tests.support.runs import small_set  # noqa: E402


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    fs = small_set(2)
    base = load_or_pretrain(PRESETS["tiny"], PRETRAIN_PRESETS["tiny"], fs.pretrain, fs.pretrain_sha256(),
                            cache_dir=cache)
    path = export_gpt2(base.model, tmp_path_factory.mktemp("gpt2"))
    ck = load_checkpoint(path)
    return fs, base.model, ck


def test_same_tokens_and_windows(both):
    fs, builtin, ck = both
    T = builtin.config.block_size
    assert ck.model.config.block_size == T  # default context: the exported position limit
    for d in fs.users[0].heldout + fs.users[1].train:
        assert np.array_equal(ck.encoder(d), encode(d))
    a, b = eval_windows(fs.users[0].heldout, T), hf_eval_windows(fs.users[0].heldout, T, ck.encoder)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert b.n_tokens == b.n_bytes == a.n_bytes
    assert np.array_equal(hf_training_stream(fs.users[1].train, ck.encoder), training_stream(fs.users[1].train))


def test_base_nll_agrees(both):
    fs, builtin, ck = both
    T = builtin.config.block_size
    for u in fs.users:
        ours = doc_nll(builtin, eval_windows(u.heldout, T), 0)
        theirs = doc_nll(ck.model, hf_eval_windows(u.heldout, T, ck.encoder), 0)
        np.testing.assert_allclose(theirs, ours, rtol=1e-4)
        assert np.all(ours > 0)


def test_adapter_nll_agrees(both):
    fs, builtin, ck = both
    T = builtin.config.block_size
    cfg = TrainConfig(steps=8, batch_size=4, lr=5e-2)
    streams = [training_stream(u.train) for u in fs.users]
    trained = train_adapters(builtin, streams, [data_order(0, k, len(s), T, cfg) for k, s in enumerate(streams)], cfg)
    hf = copy.deepcopy(ck.model)
    hf.attach_adapters(len(streams))
    hf.load_adapter_bank([builtin_adapter_to_hf(s) for s in trained.states])
    for k in (1, 2):
        for u in fs.users:
            ours = doc_nll(trained.model, eval_windows(u.heldout, T), k)
            theirs = doc_nll(hf, hf_eval_windows(u.heldout, T, ck.encoder), k)
            np.testing.assert_allclose(theirs, ours, rtol=1e-4)
            base = doc_nll(trained.model, eval_windows(u.heldout, T), 0)
            assert np.abs(ours - base).max() > 1e-3  # the adapters changed the NLLs being compared
