"""Bytes in: documents to token streams, training batches and disjoint evaluation windows.

Every document is encoded as [BOS] + its UTF-8 bytes. Training samples random windows of
`block_size + 1` tokens from the concatenation of a user's training documents; evaluation cuts
each held-out document into disjoint windows of `block_size` predicted tokens, so every byte is
scored exactly once (the BOS predicts the first byte; a window after the first starts cold).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fixtures.corpus import Document
from runners.model import BOS

IGNORE = -100  # target value of padding positions (F.cross_entropy's ignore_index)


def encode(doc: Document) -> np.ndarray:
    """(n_bytes + 1,) int64 tokens: BOS then the document's UTF-8 bytes."""
    raw = np.frombuffer(doc.text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    return np.concatenate([np.array([BOS], dtype=np.int64), raw])


Encoder = Callable[[Document], np.ndarray]  # a document to its (n,) int64 tokens, BOS convention included


def training_stream(docs: tuple[Document, ...], encoder: Encoder = encode) -> np.ndarray:
    """(N,) int64: the documents' token sequences back to back."""
    return np.concatenate([encoder(d) for d in docs])


def sample_offsets(rng: np.random.Generator, stream_len: int, block_size: int, n: int) -> np.ndarray:
    """(n,) start offsets of windows of `block_size + 1` tokens, uniform over the stream."""
    if stream_len < block_size + 2:
        raise ValueError(f"training text of {stream_len} tokens is shorter than one window of {block_size + 1}")
    return rng.integers(0, stream_len - block_size - 1, size=n)


def windows_at(stream: np.ndarray, offsets: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (n, block_size) for windows starting at `offsets`."""
    idx = offsets[:, None] + np.arange(block_size + 1)[None, :]  # (n, T+1)
    w = torch.from_numpy(stream[idx])  # (n, T+1)
    return w[:, :-1], w[:, 1:]


@dataclass(frozen=True)
class EvalWindows:
    """Every held-out token of a list of documents, in disjoint windows.

    x, y: (W, T) inputs and targets (targets IGNORE at padding); doc: (W,) index of each window's
    document in `doc_ids`; doc_ids / n_bytes: per document.
    """

    x: torch.Tensor
    y: torch.Tensor
    doc: torch.Tensor
    doc_ids: tuple[str, ...]
    n_bytes: tuple[int, ...]

    @property
    def n_tokens(self) -> tuple[int, ...]:
        """Scored (non-padding) targets per document: the bytes for the built-in model."""
        per_window = (self.y != IGNORE).sum(dim=1)
        return tuple(int(n) for n in torch.bincount(self.doc, weights=per_window, minlength=len(self.doc_ids)).long())


def eval_windows(docs: tuple[Document, ...], block_size: int, encoder: Encoder = encode) -> EvalWindows:
    """Disjoint windows over each document's `encoder` tokens; inputs past a document's end are the
    encoder's `pad` token (BOS for the bytes)."""
    pad = getattr(encoder, "pad", BOS)
    xs, ys, owner = [], [], []
    for d_i, doc in enumerate(docs):
        toks = encoder(doc)
        inp, tgt = toks[:-1], toks[1:]  # each (n_tokens,)
        for s in range(0, len(tgt), block_size):
            x = np.full(block_size, pad, dtype=np.int64)
            y = np.full(block_size, IGNORE, dtype=np.int64)
            chunk = slice(s, min(s + block_size, len(tgt)))
            x[: chunk.stop - s] = inp[chunk]
            y[: chunk.stop - s] = tgt[chunk]
            xs.append(x), ys.append(y), owner.append(d_i)
    return EvalWindows(
        x=torch.from_numpy(np.stack(xs)),
        y=torch.from_numpy(np.stack(ys)),
        doc=torch.tensor(owner, dtype=torch.long),
        doc_ids=tuple(d.doc_id for d in docs),
        n_bytes=tuple(d.n_bytes for d in docs),
    )
