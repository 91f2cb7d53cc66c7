"""Per-row norm adapters inside any Hugging Face causal LM.

`find_norms` walks the model and returns every normalization module with trainable parameters,
each classified into one of three parametrizations (verified numerically, never guessed from
the name alone):

- `layernorm`: nn.LayerNorm (GPT-2, GPT-NeoX, OPT, ...): out = layer_norm(x) * w (+ b);
- `rms`: Llama / Qwen2 / Qwen3 (incl. the head-dim q_norm/k_norm) / Mistral RMSNorm:
  out = w * (x * rsqrt(mean(x^2) + eps)).to(dtype of x);
- `rms_1p`: Gemma RMSNorm: out = (norm(x.float()) * (1 + w.float())).type_as(x).

`attach_norm_hooks` gives each such module a forward hook and a (n_adapters, C) bank of copies of
its own parameters (`adapter_weight`, `adapter_bias` only where the module has a bias). While a
`RowRouter` holds a (B,) `adapter_idx`, row b of every norm's input is normalized with bank entry
`adapter_idx[b]` (0 = the module's own parameters, i.e. the base model); OPT's norms, which see a
flattened (B*T, C) input, get the index repeated T times. Without an index the hook does nothing,
so the model is the unchanged base.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

KINDS = ("layernorm", "rms", "rms_1p")
_EPS_ATTRS = ("eps", "variance_epsilon", "epsilon", "layer_norm_eps")


class UnsupportedArchitecture(ValueError):
    """The model's normalization layers cannot be found or are of a form this suite cannot adapt."""


@dataclass
class RowRouter:
    """The per-row bank index of the forward pass in progress (None: the plain base model)."""

    idx: torch.Tensor | None = None


@dataclass(frozen=True)
class NormSpec:
    name: str  # module path in the model, e.g. `model.layers.0.input_layernorm`
    cls: str  # the module's class name
    kind: str  # one of KINDS
    eps: float
    dim: int  # C, the normalized (last) dimension
    has_bias: bool


def _eps(module: nn.Module) -> float | None:
    for a in _EPS_ATTRS:
        v = getattr(module, a, None)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def norm_forward(kind: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, eps: float) -> torch.Tensor:
    """The norm of `x` (..., C) with gain `w` and bias `b` broadcastable to x, as the module computes it."""
    if kind == "layernorm":
        out = F.layer_norm(x, (x.size(-1),), None, None, eps) * w.to(x.dtype)
        return out if b is None else out + b.to(x.dtype)
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if kind == "rms":
        out = w.to(x.dtype) * h.to(x.dtype)
    elif kind == "rms_1p":
        out = (h * (1.0 + w.float())).type_as(x)
    else:
        raise ValueError(f"unknown norm kind {kind!r}")
    return out if b is None else out + b.to(x.dtype)


def _is_candidate(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    if not isinstance(w, nn.Parameter) or w.dim() != 1:
        return False
    if isinstance(module, (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm))):
        return True
    return "norm" in type(module).__name__.lower() and not any(True for _ in module.children())


def _classify(module: nn.Module, name: str, model_cls: str) -> str:
    """Which KIND reproduces `module` (with random gain and bias) on a random input; else refuse."""
    eps = _eps(module)
    if eps is None:
        raise UnsupportedArchitecture(
            f"{model_cls}: normalization module `{name}` ({type(module).__name__}) has no eps attribute "
            f"({', '.join(_EPS_ATTRS)}); this architecture is not supported for norm-only adapters")
    probe = copy.deepcopy(module).to(torch.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in probe.parameters(recurse=False):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + 0.3)
        x = torch.randn(3, 5, probe.weight.numel(), generator=gen) * 2 + 0.5
        want = probe(x)
        b = getattr(probe, "bias", None)
        b = b if isinstance(b, nn.Parameter) else None
        for kind in KINDS:
            got = norm_forward(kind, x, probe.weight, b, eps)
            if got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5):
                return kind
    raise UnsupportedArchitecture(
        f"{model_cls}: normalization module `{name}` ({type(module).__name__}) computes none of the supported "
        f"forms ({', '.join(KINDS)}: LayerNorm, Llama-style RMSNorm, Gemma-style (1 + weight) RMSNorm); "
        "this architecture is not supported for norm-only adapters")


def find_norms(model: nn.Module) -> list[NormSpec]:
    """Every trainable normalization module of `model`, in module order; UnsupportedArchitecture if none."""
    model_cls = type(model).__name__
    specs, kind_of = [], {}
    for name, m in model.named_modules():
        if not _is_candidate(m):
            continue
        cls = type(m)
        if cls not in kind_of:
            kind_of[cls] = _classify(m, name, model_cls)
        b = getattr(m, "bias", None)
        specs.append(NormSpec(name, cls.__name__, kind_of[cls], _eps(m), m.weight.numel(), isinstance(b, nn.Parameter)))
    if not specs:
        raise UnsupportedArchitecture(
            f"{model_cls}: no normalization module with a trainable gain was found (looked for nn.LayerNorm, "
            "nn.RMSNorm and modules whose class name contains 'Norm'); norm-only adapters cannot be trained on it")
    return specs


def _rows(param_rows: torch.Tensor, x: torch.Tensor, B: int) -> torch.Tensor:
    """(B, C) per-row parameters shaped to broadcast against x: (B, 1.., C), or (B*T, C) for a flat x."""
    if x.size(0) != B:
        if x.dim() != 2 or x.size(0) % B:
            raise RuntimeError(f"norm input of shape {tuple(x.shape)} does not start with the batch of {B} rows "
                               "and is not a flattened (B*T, C) input; cannot route per-row adapters")
        return param_rows.repeat_interleave(x.size(0) // B, dim=0)
    return param_rows.view(B, *([1] * (x.dim() - 2)), x.size(-1))


def _hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    idx = module._na_router.idx
    if idx is None:
        return None  # plain base forward
    x = args[0]
    W = module.weight.float()[None]
    if module.adapter_weight is not None:
        W = torch.cat([W, module.adapter_weight])
    b = None
    if module._na_spec.has_bias:
        Bias = module.bias.float()[None]
        if module.adapter_bias is not None:
            Bias = torch.cat([Bias, module.adapter_bias])
        b = _rows(Bias[idx], x, len(idx))
    return norm_forward(module._na_spec.kind, x, _rows(W[idx], x, len(idx)), b, module._na_spec.eps)


def attach_norm_hooks(model: nn.Module, specs: list[NormSpec], router: RowRouter) -> list[nn.Module]:
    """Install the per-row hook on each module of `specs` (no bank yet); returns the modules, same order."""
    modules = dict(model.named_modules())
    out = []
    for s in specs:
        m = modules[s.name]
        m._na_spec, m._na_router = s, router
        m.register_parameter("adapter_weight", None)
        m.register_parameter("adapter_bias", None)
        m.register_forward_hook(_hook)
        out.append(m)
    return out


def attach_bank(module: nn.Module, n_adapters: int) -> None:
    """A fresh float32 bank of `n_adapters` copies of the module's own gain (and bias)."""
    module.adapter_weight = nn.Parameter(module.weight.detach().float().clone().repeat(n_adapters, 1))
    if module._na_spec.has_bias:
        module.adapter_bias = nn.Parameter(module.bias.detach().float().clone().repeat(n_adapters, 1))
