"""Export the built-in byte-level base model as a Hugging Face GPT-2 checkpoint.

The built-in `runners.model.GPT` is GPT-2's architecture (pre-LayerNorm blocks, learned positions,
exact GELU, tied embeddings) with a 257-token vocabulary: the 256 byte values and BOS (256).
The export writes `config.json`, `model.safetensors` and a byte-level tokenizer whose id of byte
b is b and whose `<|endoftext|>` (256) is BOS and EOS, GPT-2's convention, so the HF path puts
the same BOS in front of a document as the built-in path (`runners.data.encode`).

Both paths parametrize a norm adapter the same way (a LayerNorm gain and bias per norm);
`builtin_adapter_to_hf` renames a built-in adapter state to the HF module names.

    python -m runners.hf.export_gpt2 --preset tiny --out DIR   # the cached base of that preset
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from runners.model import BOS, GPT, LN_EPS

_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # HF GPT-2 Conv1D: weight is (in, out)


def gpt2_config(model: GPT):
    from transformers import GPT2Config

    c = model.config
    return GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                      n_head=c.n_head, activation_function="gelu", layer_norm_epsilon=LN_EPS, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=BOS, eos_token_id=BOS, tie_word_embeddings=True)


def gpt2_state(model: GPT) -> dict[str, torch.Tensor]:
    """The built-in weights under HF GPT-2 names (Linear weights transposed for Conv1D)."""
    if not model.config.bias:
        raise ValueError("the built-in model has no biases (bias=False); GPT-2 always has them: export a preset "
                         "with bias=True")
    out = {"transformer.wte.weight": model.wte.weight, "transformer.wpe.weight": model.wpe.weight,
           "lm_head.weight": model.lm_head.weight}
    for name, p in model.named_parameters():
        if "adapter_" in name or name in ("wte.weight", "wpe.weight", "lm_head.weight"):
            continue
        hf = "transformer." + re.sub(r"^blocks\.", "h.", name)
        if any(f".{lin}.weight" in f".{name}" for lin in _LINEARS):
            p = p.t()
        out[hf] = p
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def builtin_adapter_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A built-in adapter state (`blocks.0.ln_1.weight`, `ln_f.bias`) under HF GPT-2 module names."""
    return {"transformer." + re.sub(r"^blocks\.", "h.", k): v for k, v in state.items()}


def export_gpt2(model: GPT, out_dir: Path) -> Path:
    """Write `model` as an HF GPT-2 checkpoint directory (config, model.safetensors, tokenizer)."""
    from transformers import GPT2LMHeadModel

    from runners.hf.tokens import byte_level_tokenizer

    hf = GPT2LMHeadModel(gpt2_config(model))
    hf.load_state_dict(gpt2_state(model), strict=True)  # every GPT-2 weight, nothing else
    out_dir = Path(out_dir)
    hf.save_pretrained(out_dir)
    tok = byte_level_tokenizer(("<|endoftext|>",), bos="<|endoftext|>", eos="<|endoftext|>")
    assert tok.convert_tokens_to_ids("<|endoftext|>") == BOS
    tok.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    from fixtures import load_fixture_set
    from runners.base_model import PRETRAIN_PRESETS, load_or_pretrain
    from runners.model import PRESETS

    p = argparse.ArgumentParser(prog="python -m runners.hf.export_gpt2", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", help=f"built-in preset: {', '.join(PRESETS)} (default cpu)")
    p.add_argument("--fixture-set", default="classics", help="the set whose pretraining corpus built the base")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    args = p.parse_args(argv)
    if args.preset not in PRESETS:
        print(f"error: `--preset {args.preset}`: use one of {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    fs = load_fixture_set(args.fixture_set)
    base = load_or_pretrain(PRESETS[args.preset], PRETRAIN_PRESETS[args.preset], fs.pretrain, fs.pretrain_sha256())
    print(export_gpt2(base.model, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
