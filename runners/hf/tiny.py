"""Small randomly initialized checkpoints of real HF architectures, built offline from configs.

No model hub is reachable here or in CI, so tests and benchmarks build their checkpoints from
transformers configs (random weights, seeded) with a byte-level tokenizer (`tokens.byte_level_tokenizer`)
and save both with `save_pretrained`: a real checkpoint directory, as a user's would be.
Each architecture keeps its own tokenizer convention (Llama / Gemma / OPT: the tokenizer puts a BOS
in front; GPT-2 / GPT-NeoX: `<|endoftext|>` as BOS; Qwen3: no BOS, `<|endoftext|>` as EOS).
"""

from __future__ import annotations

from pathlib import Path

import torch

from runners.hf.tokens import byte_level_tokenizer

ARCHS = ("gpt2", "llama", "qwen3", "gemma", "gpt_neox", "opt")


def _config_and_tokenizer(arch: str, ctx: int, width: int, layers: int, heads: int):
    import transformers as tf

    ff = 2 * width
    if arch == "gpt2":
        tok = byte_level_tokenizer(("<|endoftext|>",), bos="<|endoftext|>", eos="<|endoftext|>")
        cfg = tf.GPT2Config(vocab_size=len(tok), n_positions=ctx, n_embd=width, n_layer=layers, n_head=heads,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=256, eos_token_id=256)
    elif arch in ("llama", "gemma"):
        tok = byte_level_tokenizer(("<s>", "</s>", "<pad>"), bos="<s>", eos="</s>", pad="<pad>", prepend_bos=True)
        kw = dict(vocab_size=len(tok), hidden_size=width, intermediate_size=ff, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=ctx,
                  bos_token_id=256, eos_token_id=257, pad_token_id=258, head_dim=width // heads)
        cfg = tf.LlamaConfig(**kw) if arch == "llama" else tf.GemmaConfig(**kw)
    elif arch == "qwen3":
        tok = byte_level_tokenizer(("<|endoftext|>",), eos="<|endoftext|>")
        cfg = tf.Qwen3Config(vocab_size=len(tok), hidden_size=width, intermediate_size=ff, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=width // heads,
                             max_position_embeddings=ctx, eos_token_id=256, tie_word_embeddings=True)
    elif arch == "gpt_neox":
        tok = byte_level_tokenizer(("<|endoftext|>",), bos="<|endoftext|>", eos="<|endoftext|>")
        cfg = tf.GPTNeoXConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=ff, num_hidden_layers=layers,
                               num_attention_heads=heads, max_position_embeddings=ctx, rotary_pct=0.25,
                               bos_token_id=256, eos_token_id=256, hidden_dropout=0.0, attention_dropout=0.0)
    elif arch == "opt":
        tok = byte_level_tokenizer(("<pad>", "</s>"), bos="</s>", eos="</s>", pad="<pad>", prepend_bos=True)
        cfg = tf.OPTConfig(vocab_size=len(tok), hidden_size=width, ffn_dim=ff, num_hidden_layers=layers,
                           num_attention_heads=heads, max_position_embeddings=ctx, word_embed_proj_dim=width,
                           dropout=0.0, attention_dropout=0.0, pad_token_id=256, bos_token_id=257, eos_token_id=257)
    else:
        raise ValueError(f"unknown architecture {arch!r}; one of {', '.join(ARCHS)}")
    return cfg, tok


def save_tiny(arch: str, out_dir: Path, *, seed: int = 0, ctx: int = 64, width: int = 32, layers: int = 2,
              heads: int = 4, perturb_norms: float = 0.0) -> Path:
    """Write a random `arch` checkpoint (config, model.safetensors, tokenizer) to `out_dir`.

    `perturb_norms`: add N(0, perturb_norms) to every norm gain/bias, so that a norm's parameters
    matter in a test (a fresh init has gains of one and biases of zero everywhere).
    """
    import transformers as tf

    cfg, tok = _config_and_tokenizer(arch, ctx, width, layers, heads)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    if perturb_norms:
        from runners.hf.norms import find_norms

        modules = dict(model.named_modules())
        with torch.no_grad():
            for s in find_norms(model):
                for p in modules[s.name].parameters(recurse=False):
                    p.add_(torch.randn_like(p) * perturb_norms)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


# SmolLM-135M's shape (Llama-style): 30 layers of width 576, 9 heads (3 KV heads), tied 49152-token embeddings
SMOLLM_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                   num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True,
                   rms_norm_eps=1e-5, rope_theta=10000.0)


def bpe_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained here on `texts` (`<s>` prepended, as Llama's), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   model_max_length=1 << 30)


def save_llama_135m(out_dir: Path, texts: list[str], *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """A random Llama-style model of SmolLM-135M's shape with a BPE tokenizer trained on `texts`."""
    import transformers as tf

    tok = bpe_tokenizer(texts, SMOLLM_135M["vocab_size"])
    cfg = tf.LlamaConfig(**SMOLLM_135M, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
