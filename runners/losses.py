"""Next-token NLL without holding the (rows x context x vocabulary) logits at once.

A model that has `hidden(idx, adapter_idx)` (final hidden states) and `head(h)` (the output
projection, float32 logits) is scored in chunks of `chunk` tokens: each chunk is projected,
its cross-entropy taken and its logits dropped before the next. While a gradient is wanted,
each chunk runs under `torch.utils.checkpoint`, so the backward recomputes one chunk's logits
at a time instead of keeping every chunk's logits, log-softmax and gradient (as Liger's fused
linear cross-entropy and Apple's cut cross-entropy avoid them). With `chunk` at least the number
of tokens (or None), the computation is the plain one, `F.cross_entropy(head(h))`, bit for bit.

A model without `hidden` (e.g. a PEFT model wrapped for a benchmark) is scored from its full
logits, as before.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100  # F.cross_entropy's default; runners.data.IGNORE


def _chunk_nll(head, h: torch.Tensor, y: torch.Tensor, ignore_index: int) -> torch.Tensor:
    return F.cross_entropy(head(h).float(), y, reduction="none", ignore_index=ignore_index)


def token_nll(model, x: torch.Tensor, y: torch.Tensor, adapter_idx: torch.Tensor | None, chunk: int | None = None,
              ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, T) float32 NLL (nats) of targets `y` (B, T) given tokens `x` (B, T) under per-row bank
    entries `adapter_idx` (B,); the logits are formed `chunk` tokens at a time (None: all at once)."""
    if not hasattr(model, "hidden"):
        logits = model(x, adapter_idx)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none",
                               ignore_index=ignore_index).view(y.shape)
    h = model.hidden(x, adapter_idx)  # (B, T, C)
    return nll_from_hidden(model.head, h, y, chunk, ignore_index)


def nll_from_hidden(head, h: torch.Tensor, y: torch.Tensor, chunk: int | None = None,
                    ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, T) NLL of `y` (B, T) from hidden states `h` (B, T, C) through `head`, `chunk` tokens at a time."""
    n = y.numel()
    if chunk is None or chunk >= n:  # the plain computation (what the runner did before chunks existed)
        logits = head(h).float()  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none",
                               ignore_index=ignore_index).view(y.shape)
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 token, got {chunk}")
    hf, yf = h.reshape(n, h.size(-1)), y.reshape(n)
    grad = torch.is_grad_enabled() and hf.requires_grad
    parts = []
    for hs, ys in zip(hf.split(chunk), yf.split(chunk), strict=True):
        if grad:  # the backward recomputes this chunk's logits instead of keeping them
            parts.append(checkpoint(_chunk_nll, head, hs, ys, ignore_index, use_reentrant=False))
        else:
            parts.append(_chunk_nll(head, hs, ys, ignore_index))
    return torch.cat(parts).view(y.shape)
