"""Norm-only adapters on real HF architectures (tiny random models built offline from configs).

Per architecture: per-row batched forward == single-adapter forward; batched training == one
adapter trained alone; every non-norm parameter bit-identical after training; PEFT round trip
(PEFT's logits equal the suite's AND differ from the base model's).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from runners.hf.evaluate import hf_training_stream  # noqa: E402
from runners.hf.load import load_checkpoint  # noqa: E402
from runners.hf.norms import UnsupportedArchitecture, find_norms  # noqa: E402
from runners.hf.peft_export import write_peft_adapter  # noqa: E402
from runners.hf.tiny import ARCHS, save_tiny  # noqa: E402
from runners.train import TrainConfig, data_order, train_adapters  # noqa: E402
from tests.support.runs import small_set  # noqa: E402

CTX = 32
EXPECTED = {  # norm modules found, their kind, and whether they have a bias
    "gpt2": (5, "layernorm", True), "llama": (5, "rms", False), "qwen3": (9, "rms", False),
    "gemma": (5, "rms_1p", False), "gpt_neox": (5, "layernorm", True), "opt": (5, "layernorm", True),
}


@pytest.fixture(scope="module", params=ARCHS)
def ckpt(request, tmp_path_factory):
    arch = request.param
    path = save_tiny(arch, tmp_path_factory.mktemp(arch), seed=1, ctx=CTX, perturb_norms=0.1)
    return arch, path, load_checkpoint(path, context=CTX)


@pytest.fixture(scope="module")
def trained(ckpt):
    """3 user adapters trained in one batched loop (and the same adapters' inputs)."""
    arch, path, ck = ckpt
    fs = small_set(3)
    streams = [hf_training_stream(u.train, ck.encoder) for u in fs.users]
    cfg = TrainConfig(steps=4, batch_size=2, lr=5e-2)
    orders = [data_order(7, k, len(s), CTX, cfg) for k, s in enumerate(streams)]
    before = {k: v.clone() for k, v in ck.model.base_state().items()}
    out = train_adapters(ck.model, streams, orders, cfg)
    return streams, orders, cfg, before, out


def _perturbed_bank(model, n: int, seed: int):
    m = copy.deepcopy(model)
    m.attach_adapters(n)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.adapter_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return m


def test_norms_found(ckpt):
    arch, _, ck = ckpt
    n, kind, bias = EXPECTED[arch]
    assert len(ck.model.specs) == n
    assert {s.kind for s in ck.model.specs} == {kind} and {s.has_bias for s in ck.model.specs} == {bias}
    if arch == "qwen3":  # the head-dim q_norm / k_norm are adapted too
        assert any(s.name.endswith("q_norm") and s.dim == 8 for s in ck.model.specs)
    per_norm = sum(s.dim * (2 if s.has_bias else 1) for s in ck.model.specs)
    assert ck.model.n_adapter_params() == per_norm


def test_per_row_forward_equals_single_adapter(ckpt):
    arch, _, ck = ckpt
    base = ck.model
    m = _perturbed_bank(base, 3, seed=2)
    x = torch.randint(0, 256, (5, 12), generator=torch.Generator().manual_seed(3))
    idx = torch.tensor([0, 1, 2, 3, 2])
    seen = []
    hooks = [n.register_forward_pre_hook(lambda mod, a: seen.append(tuple(a[0].shape))) for n in m.norms()]
    with torch.no_grad():
        batched = m(x, idx)
        plain = base(x)
    for h in hooks:
        h.remove()
    if arch == "opt":  # OPT's per-layer final norm sees a flattened (B*T, C) input
        assert (5 * 12, 32) in seen
    assert torch.allclose(batched[0], plain[0], atol=1e-5, rtol=1e-5)  # bank entry 0 is the base model
    for r in range(1, 5):
        k = int(idx[r])
        single = copy.deepcopy(base)
        single.attach_adapters(1)
        single.load_adapter_bank([m.adapter_state(k - 1)])
        with torch.no_grad():
            alone = single(x[r:r + 1], torch.tensor([1]))
        assert torch.allclose(batched[r], alone[0], atol=1e-5, rtol=1e-5), (arch, r)
        assert (batched[r] - plain[r]).abs().max() > 1e-3  # the adapter changes the output


def test_batched_training_equals_alone(ckpt, trained):
    arch, _, ck = ckpt
    streams, orders, cfg, _, out = trained
    for k in (0, 2):
        alone = train_adapters(ck.model, [streams[k]], [orders[k]], cfg)
        np.testing.assert_allclose(out.losses[:, k], alone.losses[:, 0], rtol=1e-5, atol=1e-6)
        for name, t in out.states[k].items():
            assert torch.allclose(t, alone.states[0][name], atol=1e-5, rtol=0), (arch, name)
    init = {f"{s.name}.weight": m.weight.float() for s, m in zip(ck.model.specs, ck.model.norms(), strict=True)}
    assert max((out.states[0][n] - w).abs().max().item() for n, w in init.items()) > 1e-3  # training moved it


def test_only_norms_train(ckpt, trained):
    arch, _, ck = ckpt
    _, _, _, before, out = trained
    after = out.model.base_state()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), (arch, k)  # bit-identical
    assert all(torch.equal(v, before[k]) for k, v in ck.model.base_state().items())  # the base itself untouched
    trainable = {n for n, p in out.model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter_weight" in n or ".adapter_bias" in n for n in trainable)


def test_peft_round_trip(ckpt, trained, tmp_path):
    arch, path, ck = ckpt
    _, _, _, _, out = trained
    k = 1
    adir = write_peft_adapter(tmp_path / "peft", out.states[k], ck.model.specs, str(path))
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(4))
    base = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                             trust_remote_code=False).eval()
    with torch.no_grad():
        base_logits = base(input_ids=x).logits
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = peft.PeftModel.from_pretrained(base, adir).eval()
        peft_logits = pm(input_ids=x).logits
        ours = out.model(x, torch.tensor([k + 1, k + 1]))
    assert torch.allclose(peft_logits, ours, atol=1e-5, rtol=0), (arch, (peft_logits - ours).abs().max())
    assert (peft_logits - base_logits).abs().max() > 1e-3  # PEFT did load the adapter (it only warns otherwise)


def test_unknown_norm_refused_naming_classes():
    class ScaleNorm(nn.Module):  # a norm of a form the suite does not know
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(8))
            self.eps = 1e-6

        def forward(self, x):
            return x / (x.norm(dim=-1, keepdim=True) + self.eps) * self.weight

    class OddLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = ScaleNorm()

    with pytest.raises(UnsupportedArchitecture, match=r"OddLM.*`norm` \(ScaleNorm\)"):
        find_norms(OddLM())
    with pytest.raises(UnsupportedArchitecture, match="Sequential: no normalization module"):
        find_norms(nn.Sequential(nn.Linear(4, 4)))


def test_training_copy_shares_base_weights(ckpt, trained):
    _, _, ck = ckpt
    out = trained[-1]
    ours = dict(out.model.hf.named_parameters())
    for name, p in ck.model.hf.named_parameters():
        assert ours[name] is p  # one copy of the frozen weights in memory
    assert not any(n.endswith("adapter_weight") for n, _ in ck.model.hf.named_parameters())  # no bank on the base
