"""The model and adapter training: shapes, the per-row gather, norm-only training, batched == sequential."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures import Document
from runners.data import IGNORE, encode, eval_windows, training_stream
from runners.model import BOS, GPT, PRESETS
from runners.train import TrainConfig, data_order, train_adapters

CFG = PRESETS["tiny"]


def _model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CFG).eval()


def _perturbed_bank(model: GPT, n: int, seed: int = 1) -> None:
    model.attach_adapters(n)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_logits_shape_and_sizes():
    m = _model()
    x = torch.randint(0, 257, (3, 17))
    assert m(x).shape == (3, 17, 257)
    assert m(x, torch.zeros(3, dtype=torch.long)).shape == (3, 17, 257)
    # gain + bias of 2 norms per block + the final norm
    assert m.n_adapter_params() == 2 * CFG.n_embd * (2 * CFG.n_layer + 1)
    m.attach_adapters(4)
    assert sum(p.numel() for p in m.adapter_parameters()) == 4 * m.n_adapter_params()
    assert set(m.adapter_state(2)) == {f"blocks.{i}.{ln}.{w}" for i in range(CFG.n_layer) for ln in ("ln_1", "ln_2")
                                       for w in ("weight", "bias")} | {"ln_f.weight", "ln_f.bias"}


# The preset table of docs/methods.md, section 4 (layers, d, ctx, base params, adapter params), checked against the
# parameters of each model as built, counted tensor by tensor.
@pytest.mark.parametrize("name, n_layer, n_embd, block, base_params, adapter_params", [
    ("tiny", 2, 32, 64, 35_744, 320),
    ("cpu", 4, 128, 128, 842_624, 2_304),
    ("gpt30m", 10, 512, 512, 31.9e6, 21_504),
])
def test_presets_match_the_readme_table(name, n_layer, n_embd, block, base_params, adapter_params):
    with torch.device("meta"):  # shapes only: nothing allocated
        m = GPT(PRESETS[name])
    c = m.config
    assert (c.n_layer, c.n_embd, c.block_size, c.vocab_size) == (n_layer, n_embd, block, BOS + 1)
    counted = sum(p.numel() for p in m.parameters())
    assert counted == pytest.approx(base_params, abs=0.05e6 if name == "gpt30m" else 0)  # "31.9 M"
    assert m.n_base_params() == counted
    m.attach_adapters(1)
    assert sum(p.numel() for p in m.adapter_parameters()) == adapter_params == m.n_adapter_params()


def test_base_index_equals_plain_forward():
    m = _model()
    x = torch.randint(0, 257, (2, 20))
    plain = m(x)
    _perturbed_bank(m, 3)
    assert torch.allclose(m(x, torch.zeros(2, dtype=torch.long)), plain, atol=1e-6)


def test_per_row_gather_equals_separate_runs():
    m = _model()
    _perturbed_bank(m, 3)
    x = torch.randint(0, 257, (5, 24))
    idx = torch.tensor([2, 0, 3, 1, 2])
    batched = m(x, idx)
    for r in range(5):
        alone = m(x[r:r + 1], idx[r:r + 1])
        assert torch.allclose(batched[r:r + 1], alone, atol=1e-6), f"row {r}"
    # the adapters really differ, so the gather is not vacuous
    assert not torch.allclose(m(x[:1], torch.tensor([1])), m(x[:1], torch.tensor([2])), atol=1e-3)


def _streams(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [training_stream(tuple(Document(f"d{k}.{i}", "".join(chr(97 + c) for c in rng.integers(0, 6 + 4 * k, 300)))
                                  for i in range(3))) for k in range(n)]


def test_norm_only_training_leaves_every_other_parameter_bit_identical():
    base = _model()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    streams = _streams(2)
    cfg = TrainConfig(steps=5, batch_size=3, lr=5e-2)
    orders = [data_order(0, k, len(s), CFG.block_size, cfg) for k, s in enumerate(streams)]
    trained = train_adapters(base, streams, orders, cfg)
    after = {k: v for k, v in trained.model.state_dict().items() if "adapter_" not in k}
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k  # frozen base weights, base norm gains included
        assert torch.equal(base.state_dict()[k], v), k  # and the caller's model is untouched
    for a in range(2):  # the adapters did move
        assert not torch.equal(trained.states[a]["blocks.0.ln_1.weight"], before["blocks.0.ln_1.weight"])


def test_batched_training_equals_one_at_a_time():
    base = _model()
    streams = _streams(3)
    cfg = TrainConfig(steps=8, batch_size=3, lr=3e-2)
    orders = [data_order(4, k, len(s), CFG.block_size, cfg) for k, s in enumerate(streams)]
    batched = train_adapters(base, streams, orders, cfg)
    for a in range(3):
        alone = train_adapters(base, [streams[a]], [orders[a]], cfg)
        np.testing.assert_allclose(alone.losses[:, 0], batched.losses[:, a], rtol=0, atol=1e-5)
        for k, v in alone.states[0].items():
            assert (v - batched.states[a][k]).abs().max().item() <= 1e-5, k


def test_data_order_is_deterministic_and_seeded():
    cfg = TrainConfig(steps=4, batch_size=2)
    a, b = data_order(3, 1, 1000, 64, cfg), data_order(3, 1, 1000, 64, cfg)
    assert a.shape == (4, 2) and np.array_equal(a, b)
    assert not np.array_equal(a, data_order(4, 1, 1000, 64, cfg))


def test_eval_windows_score_every_byte_once():
    docs = (Document("a", "x" * 150), Document("b", "héllo"))
    w = eval_windows(docs, block_size=64)
    assert w.x.shape[1] == 64 and len(w.x) == 3 + 1
    assert int((w.y != IGNORE).sum()) == sum(d.n_bytes for d in docs) == sum(w.n_bytes)
    assert w.x[0, 0].item() == BOS and encode(docs[1])[0] == BOS
    assert w.doc.tolist() == [0, 0, 0, 1]
