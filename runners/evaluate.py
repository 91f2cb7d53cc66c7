"""Held-out scoring: summed NLL per document for one bank entry (base = 0, adapters 1..A)."""

from __future__ import annotations

import numpy as np
import torch

from runners.data import IGNORE, EvalWindows, sample_offsets, windows_at
from runners.losses import token_nll
from runners.model import GPT

EVAL_BATCH = 64  # windows per forward pass (bounds the (B, T, V) logits in memory)
CHECK_WINDOWS = 32  # training windows for the worse-than-base health check, at most
# tokens of training text each adapter is checked on: 32 windows of the built-in model's 128 tokens;
# a longer context checks as many tokens in fewer windows (at 512 tokens: the first 8 of the 32)
CHECK_TOKENS = 4096
CHECK_SEED = 20240601  # fixed: the check windows are the same for every seed and run


@torch.no_grad()
def window_nll(model: GPT, x: torch.Tensor, y: torch.Tensor, bank_index: int, device: str = "cpu",
               progress=None, tokens: list | None = None) -> np.ndarray:
    """(W,) float64 summed NLL (nats) of each window's non-padding targets under bank entry `bank_index`.

    `model.eval_batch` windows per forward pass (EVAL_BATCH unless the memory plan, runners.memory,
    set fewer) and `model.logit_chunk` tokens per slice of the logits (None: all at once).
    `tokens`: a list that receives each batch's (b, T) float32 per-token NLLs on the CPU (padding 0),
    for the `ens:` rows (runners.routing.ensemble_nll)."""
    out = []
    step = getattr(model, "eval_batch", EVAL_BATCH)
    chunk = getattr(model, "logit_chunk", None)
    for s in range(0, len(x), step):
        xb, yb = x[s:s + step].to(device), y[s:s + step].to(device)  # (b, T)
        idx = torch.full((len(xb),), bank_index, dtype=torch.long, device=device)  # (b,)
        nll = token_nll(model, xb, yb, idx, chunk, IGNORE)  # (b, T)
        if tokens is not None:
            tokens.append(nll.detach().float().view(len(xb), -1).cpu())
        out.append(nll.view(len(xb), -1).double().sum(dim=1).cpu())  # (b,)
        if progress is not None:
            progress.update(len(xb))
    return torch.cat(out).numpy()


def doc_nll(model: GPT, windows: EvalWindows, bank_index: int, device: str = "cpu", progress=None,
            tokens: list | None = None) -> np.ndarray:
    """(D,) float64 summed NLL per document; each token is scored once (tokens == bytes).
    `tokens`: as `window_nll`'s (the per-token NLLs, batch by batch)."""
    per_window = window_nll(model, windows.x, windows.y, bank_index, device, progress, tokens)  # (W,)
    return per_doc(windows, per_window)


def per_doc(windows: EvalWindows, per_window: np.ndarray) -> np.ndarray:
    """(D,) float64 sums of (W,) per-window figures by document."""
    return np.bincount(windows.doc.numpy(), weights=per_window, minlength=len(windows.doc_ids))


def n_check_windows(block_size: int) -> int:
    """Windows of the health check: CHECK_TOKENS tokens' worth, at least one, at most CHECK_WINDOWS
    (32 for the built-in presets' contexts of 64 and 128 tokens; 8 at 512)."""
    return max(1, min(CHECK_WINDOWS, -(-CHECK_TOKENS // block_size)))


def check_windows(stream: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed training windows (n_check_windows, T) for the health check, independent of the seed
    (the first n of the same sequence of offsets, whatever n)."""
    rng = np.random.default_rng(CHECK_SEED)
    n = n_check_windows(block_size)
    return windows_at(stream, sample_offsets(rng, len(stream), block_size, n), block_size)


def mean_check_nll(model: GPT, check: tuple[torch.Tensor, torch.Tensor], bank_index: int, device: str = "cpu") -> float:
    """Mean NLL per token (nats) of bank entry `bank_index` on the check windows."""
    x, y = check
    return float(window_nll(model, x, y, bank_index, device).sum() / y.numel())
