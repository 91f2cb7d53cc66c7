"""A small byte-level decoder-only transformer (after nanoGPT) whose LayerNorms carry per-row adapters.

Every normalization layer holds the base gain/bias (trained only while pretraining) and, once
`GPT.attach_adapters(n)` is called, a bank of `n` adapter gains/biases. A forward pass takes an
`adapter_idx` of shape (B,): row b of the batch is normalized with bank entry `adapter_idx[b]`,
where index 0 is the base model itself and 1..n are the adapters. One forward/backward pass thus
trains or evaluates many norm-only adapters at once (a gather, no Python loop over adapters).

Tokens: the 256 byte values plus BOS (256), prepended to every document, so every byte of a
document is predicted once and tokens == bytes.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

BOS = 256  # beginning-of-document token, after the 256 byte values
LN_EPS = 1e-5


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 128  # context length in tokens (bytes + BOS); also the eval window length
    vocab_size: int = 257  # 256 bytes + BOS
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # residual stream width C
    bias: bool = True  # biases in Linear layers and LayerNorms (LayerNorm biases are adapter params too)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, GPTConfig] = {
    # tests / CI: trains in seconds
    "tiny": GPTConfig(block_size=64, n_layer=2, n_head=2, n_embd=32),
    # the default: the 5-minute grid target on a 2-core CPU (see benchmarks/bench_grid.py)
    "cpu": GPTConfig(block_size=128, n_layer=4, n_head=4, n_embd=128),
    # ~30M parameters, mirroring the study's model; for --device cuda
    "gpt30m": GPTConfig(block_size=512, n_layer=10, n_head=8, n_embd=512),
}


class AdapterLayerNorm(nn.Module):
    """LayerNorm with a base gain/bias and an optional bank of per-row adapter gains/biases."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.adapter_weight: nn.Parameter | None = None  # (n_adapters, C)
        self.adapter_bias: nn.Parameter | None = None  # (n_adapters, C)

    def attach(self, n_adapters: int) -> None:
        """A fresh bank of `n_adapters` entries, each a copy of the base gain/bias."""
        self.adapter_weight = nn.Parameter(self.weight.detach().clone().repeat(n_adapters, 1))
        if self.bias is not None:
            self.adapter_bias = nn.Parameter(self.bias.detach().clone().repeat(n_adapters, 1))

    def forward(self, x: torch.Tensor, adapter_idx: torch.Tensor | None) -> torch.Tensor:
        C = x.size(-1)
        if adapter_idx is None:
            return F.layer_norm(x, (C,), self.weight, self.bias, LN_EPS)
        xn = F.layer_norm(x, (C,), None, None, LN_EPS)  # (B, T, C)
        w = self.weight[None] if self.adapter_weight is None else torch.cat([self.weight[None], self.adapter_weight])
        out = xn * w[adapter_idx][:, None, :]  # (B, T, C) * (B, 1, C)
        if self.bias is not None:
            b = self.bias[None] if self.adapter_bias is None else torch.cat([self.bias[None], self.adapter_bias])
            out = out + b[adapter_idx][:, None, :]
        return out


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = AdapterLayerNorm(config.n_embd, config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = AdapterLayerNorm(config.n_embd, config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, adapter_idx: torch.Tensor | None) -> torch.Tensor:
        dt = self.attn.c_attn.weight.dtype  # the blocks' matmul dtype (GPT.cast_frozen); float32: no cast
        x = x + self.attn(self.ln_1(x, adapter_idx).to(dt))  # (B, T, C), float32 residual stream
        x = x + self.mlp(self.ln_2(x, adapter_idx).to(dt))  # (B, T, C)
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = AdapterLayerNorm(config.n_embd, config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT
        self.checkpoint_blocks = False  # gradient checkpointing of the blocks (runners.memory's plan)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # scaled residual projections (GPT-2)
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def norms(self) -> list[AdapterLayerNorm]:
        """Every normalization layer, in a fixed order (ln_1, ln_2 per block, then ln_f)."""
        return [m for b in self.blocks for m in (b.ln_1, b.ln_2)] + [self.ln_f]

    def norm_names(self) -> list[str]:
        """The names of `norms()`, same order, e.g. `blocks.0.ln_1`."""
        return [f"blocks.{i}.{ln}" for i in range(self.config.n_layer) for ln in ("ln_1", "ln_2")] + ["ln_f"]

    def forward(self, idx: torch.Tensor, adapter_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for tokens `idx` (B, T); `adapter_idx` (B,) picks each row's norm adapter."""
        return self.head(self.hidden(idx, adapter_idx))  # (B, T, V)

    def hidden(self, idx: torch.Tensor, adapter_idx: torch.Tensor | None = None) -> torch.Tensor:
        """The final hidden states (B, T, C), float32, that `head` turns into logits (runners.losses
        projects them in chunks of tokens, so the (B, T, V) logits are never held at once)."""
        B, T = idx.size()
        assert T <= self.config.block_size, f"sequence of {T} tokens > block_size {self.config.block_size}"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for block in self.blocks:
            if self.checkpoint_blocks and torch.is_grad_enabled():  # activations recomputed in the backward
                x = checkpoint(block, x, adapter_idx, use_reentrant=False)
            else:
                x = block(x, adapter_idx)  # (B, T, C)
        return self.ln_f(x, adapter_idx)  # (B, T, C)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (..., V) of hidden states `h` (..., C): the (tied) output layer."""
        return self.lm_head(h)

    def routing(self, adapter_idx: torch.Tensor | None):
        """A forward and its backward route rows by `adapter_idx` (an argument here: nothing to hold)."""
        return contextlib.nullcontext()

    def set_checkpointing(self, on: bool) -> None:
        """Gradient checkpointing of the blocks while training (runners.memory's plan)."""
        self.checkpoint_blocks = bool(on)

    # -- adapters ---------------------------------------------------------------------------

    def attach_adapters(self, n_adapters: int) -> list[nn.Parameter]:
        """Freeze every base weight; give each norm a bank of `n_adapters`; return the bank params."""
        for p in self.parameters():
            p.requires_grad_(False)
        for norm in self.norms():
            norm.attach(n_adapters)
        return self.adapter_parameters()

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for n in self.norms() for p in (n.adapter_weight, n.adapter_bias) if p is not None]

    def adapter_state(self, k: int) -> dict[str, torch.Tensor]:
        """Adapter `k` (0-based bank entry) as named (C,) tensors, e.g. `blocks.0.ln_1.weight`."""
        out = {}
        for name, norm in zip(self.norm_names(), self.norms(), strict=True):
            out[f"{name}.weight"] = norm.adapter_weight[k].detach().clone()
            if norm.adapter_bias is not None:
                out[f"{name}.bias"] = norm.adapter_bias[k].detach().clone()
        return out

    def load_adapter_bank(self, states: list[dict[str, torch.Tensor]]) -> None:
        """Replace the bank with `states` (as returned by `adapter_state`), in that order."""
        for name, norm in zip(self.norm_names(), self.norms(), strict=True):
            norm.adapter_weight = nn.Parameter(torch.stack([s[f"{name}.weight"] for s in states]))
            if norm.bias is not None:
                norm.adapter_bias = nn.Parameter(torch.stack([s[f"{name}.bias"] for s in states]))

    def cast_frozen(self, dtype: torch.dtype) -> GPT:
        """Hold the blocks' Linear weights and biases in `dtype` (runners.dtypes); returns self.

        Only for a frozen model (adapter training, scoring): the norms with their adapter banks, the
        residual stream, the tied embedding / output layer and the position embedding stay float32,
        so norm arithmetic, logits and the loss are float32; each block casts its normalized input
        to `dtype` for its matmuls and adds their output back to the float32 residual stream.
        Casting once here means no per-step cast of any weight.
        """
        for block in self.blocks:
            for lin in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                lin.to(dtype)
        return self

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype of the blocks' matmul weights (float32 unless `cast_frozen`)."""
        return self.blocks[0].attn.c_attn.weight.dtype

    def n_adapter_params(self) -> int:
        """Trainable parameters of ONE adapter: gain (+ bias) of every norm."""
        per_norm = self.config.n_embd * (2 if self.config.bias else 1)
        return per_norm * (2 * self.config.n_layer + 1)

    def n_base_params(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if "adapter_" not in n)

    def flops_per_token(self, mode: str = "forward") -> float:
        """Model FLOPs per token for `mode` in {"forward", "norm_only", "full"} (training modes).

        Matmuls only (PaLM appendix B): forward = 2 * N_matmul + 4 * L * T * C (causal attention
        counted in full, as nanoGPT's `estimate_mfu`). Backward costs one more forward for the input
        gradients, and one more again for the weight gradients, which norm-only training skips
        (frozen weights need no gradient), so norm_only = 2x forward and full = 3x forward.
        """
        c = self.config
        n_matmul = c.n_layer * 12 * c.n_embd**2 + c.n_embd * c.vocab_size
        fwd = 2 * n_matmul + 4 * c.n_layer * c.block_size * c.n_embd
        return fwd * {"forward": 1.0, "norm_only": 2.0, "full": 3.0}[mode]
