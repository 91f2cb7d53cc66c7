"""Tokenizer-aware data for an HF checkpoint: training streams and disjoint evaluation windows.

The windows, the scoring (`runners.evaluate.doc_nll`) and the training loop
(`runners.train.train_adapters`) are the suite's own; only the encoder differs: the model's
tokenizer with its BOS convention (`runners.hf.tokens`), and padding with a token of its vocabulary.
`n_tokens` per document is the model's count of scored tokens, `n_bytes` its UTF-8 byte count.
"""

from __future__ import annotations

import numpy as np

from fixtures.corpus import Document
from runners.data import EvalWindows, eval_windows, training_stream
from runners.hf.tokens import TokenEncoder


def hf_training_stream(docs: tuple[Document, ...], encoder: TokenEncoder) -> np.ndarray:
    """(N,) int64: each document's tokens (BOS convention included) back to back."""
    return training_stream(docs, encoder)


def hf_eval_windows(docs: tuple[Document, ...], block_size: int, encoder: TokenEncoder) -> EvalWindows:
    """Every scored token of `docs` once, in disjoint windows of `block_size` targets."""
    return eval_windows(docs, block_size, encoder)

