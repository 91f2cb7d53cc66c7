"""Documents to tokens with a Hugging Face tokenizer and the model's BOS convention.

The convention: a document starts with the special tokens the tokenizer itself puts in front of a
text (Llama's `<s>`, OPT's `</s>`); where it puts none, with its `bos_token` (GPT-2's
`<|endoftext|>`), else its `eos_token` (the document separator of GPT-2-style training); where the
tokenizer has neither, with nothing, and then a document's first token is not scored. Every other
token is predicted exactly once, so `n_tokens` is the model's own count of scored tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fixtures.corpus import Document


@dataclass(frozen=True)
class TokenEncoder:
    tokenizer: object  # a transformers PreTrainedTokenizer(Fast)
    prefix: tuple[int, ...]  # token ids in front of every document
    pad: int  # input id at padding positions of evaluation windows (never scored)

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def __call__(self, doc: Document) -> np.ndarray:
        """(len(prefix) + n,) int64 tokens of one document."""
        return np.asarray(list(self.prefix) + self.ids(doc.text), dtype=np.int64)

    def describe(self) -> dict:
        return {"class": type(self.tokenizer).__name__, "prefix": list(self.prefix), "pad": self.pad,
                "vocab": len(self.tokenizer)}


def bos_prefix(tokenizer) -> tuple[int, ...]:
    """The ids the model expects in front of a document (see the module doc)."""
    probe = "a"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    starts = [i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain]
    if starts and starts[0] > 0:  # specials in front (an appended EOS is not part of the start)
        return tuple(full[: starts[0]])
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return (int(tid),)
    return ()


def make_encoder(tokenizer) -> TokenEncoder:
    prefix = bos_prefix(tokenizer)
    pad = prefix[0] if prefix else (tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    return TokenEncoder(tokenizer, prefix, int(pad))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the ByteLevel pre-tokenizer's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def byte_level_tokenizer(specials: tuple[str, ...] = ("<|endoftext|>",), *, bos: str | None = None,
                         eos: str | None = None, pad: str | None = None, prepend_bos: bool = False):
    """A tokenizer whose id of UTF-8 byte b is b, then `specials` as ids 256, 257, ... (built offline).

    `prepend_bos`: the tokenizer itself puts `bos` in front of a text (Llama's convention); without
    it the model's convention is GPT-2's (see `bos_prefix`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(specials))
    if prepend_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   model_max_length=1 << 30)
