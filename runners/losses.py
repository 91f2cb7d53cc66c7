"""Next-token NLL without holding the (rows x context x vocabulary) logits at once.

A model that has `hidden(idx, adapter_idx)` (final hidden states) and `head(h)` (the output
projection, float32 logits) is scored in chunks of `chunk` tokens: each chunk is projected,
its cross-entropy taken and its logits dropped before the next. While a gradient is wanted, the
gradient of each token's NLL with respect to its hidden state is computed in the same pass, chunk
by chunk (`ChunkedNLL`, as Liger Kernel's fused linear cross-entropy does): a token's logits
depend on its own hidden state only, so the backward is that gradient times the token's incoming
weight, and neither the logits, their log-softmax nor their gradient is kept for the backward,
at no extra matrix multiply. With `chunk` at least the number of tokens (or None), the
computation is the plain one, `F.cross_entropy(head(h))`, bit for bit.

A model without `hidden` (e.g. a PEFT model wrapped for a benchmark) is scored from its full
logits, as before.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

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
    if torch.is_grad_enabled() and hf.requires_grad:
        return ChunkedNLL.apply(hf, yf, head, chunk, ignore_index).view(y.shape)
    return torch.cat([_chunk_nll(head, hs, ys, ignore_index)
                      for hs, ys in zip(hf.split(chunk), yf.split(chunk), strict=True)]).view(y.shape)


class ChunkedNLL(torch.autograd.Function):
    """(N,) NLL of targets `y` (N,) from hidden states `h` (N, C) through a per-token `head`, `chunk`
    tokens at a time; the forward keeps d nll_i / d h_i (N, C) for the backward and nothing else."""

    @staticmethod
    def forward(ctx, h, y, head, chunk, ignore_index):
        nll, grads = [], []
        for hs, ys in zip(h.split(chunk), y.split(chunk), strict=True):
            with torch.enable_grad():
                leaf = hs.detach().requires_grad_(True)
                part = _chunk_nll(head, leaf, ys, ignore_index)  # (c,)
                (g,) = torch.autograd.grad(part.sum(), leaf)  # row i: d nll_i / d h_i (rows are independent)
            nll.append(part.detach())
            grads.append(g)
        ctx.save_for_backward(torch.cat(grads))
        return torch.cat(nll)

    @staticmethod
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return (grad_out[:, None] * g.float()).to(g.dtype), None, None, None, None
