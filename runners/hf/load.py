"""Load a local Hugging Face causal-LM checkpoint offline, refuse bad ones, and fingerprint it.

`load_checkpoint(path, dtype=..., device=..., context=...)` returns an `HFCheckpoint`: the model
behind the suite's adapter interface (`HFAdapterLM`), its tokenizer encoder (BOS convention
included) and its identity (path, config, SHA-256 of every weight file, tokenizer hash,
transformers version), whose `sha256` plays the role of the built-in base model's weights hash.

Every problem raises `HFModelError`, whose message names the path or the flag and the fix.
Nothing is downloaded: `local_files_only=True` throughout (HF_HUB_OFFLINE is set as well).
No checkpoint runs code of its own: every read passes `trust_remote_code=False`, and a directory
whose JSON files map an Auto class to a module (`auto_map`) or name a tokenizer class by module path
is refused by `refuse_own_code` before transformers opens it (docs/own_model.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from common.hashing import sha256_file, sha256_json
from runners.dtypes import DTYPES, DtypeError, choose
from runners.hf.model import HFAdapterLM, position_limit
from runners.hf.norms import UnsupportedArchitecture
from runners.hf.tokens import TokenEncoder, make_encoder
from runners.settings import UsageError

CPU_CONTEXT_CAP = 512  # default --context on CPU when the model allows more (a 2-core CPU)
GPU_CONTEXT_CAP = 2048
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model", "chat_template.jinja")
INSTALL_HINT = "pip install -e '.[hf]'"
# transformers' own refusal of custom code advises `trust_remote_code=True`, a flag this suite does not have
NO_OWN_CODE = ("this suite never runs a checkpoint's own Python code (there is no flag to allow it); use a "
               "checkpoint of an architecture transformers ships, saved with `save_pretrained`")


class HFModelError(UsageError):
    """A bad `--model` directory or HF flag: the message names the path/flag and the fix (exit 2)."""


def require_transformers():
    """The `transformers` module, or HFModelError telling how to install the optional extra."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise HFModelError(f"`--model` needs the optional dependency `transformers`, which is not installed; "
                           f"install the extra with `{INSTALL_HINT}`") from None
    return transformers


def check_dtype(dtype: str, device: str) -> torch.dtype:
    """The torch dtype for `--dtype` (auto resolved by the shared policy, runners.dtypes), after
    checking that `device` has it natively and can multiply matrices in it."""
    try:
        td = choose(dtype, device).torch_dtype
    except DtypeError as exc:
        raise HFModelError(str(exc)) from None
    try:
        a = torch.ones(4, 4, dtype=td, device=device)
        (a @ a).sum().item()
    except (RuntimeError, TypeError) as exc:
        raise HFModelError(f"`--dtype {dtype}`: not supported on `--device {device}` by this torch ({exc}); "
                           "use `--dtype float32`") from None
    return td


def weight_files(path: Path) -> list[Path]:
    """The checkpoint's safetensors files (HFModelError when there are none)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        found = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        extra = (f" (found {', '.join(found)}: convert them with `model.save_pretrained(dir, safe_serialization=True)`)"
                 if found else "")
        raise HFModelError(f"`--model {path}`: no *.safetensors weight files{extra}; save the model with "
                           "`save_pretrained` into that directory")
    return files


def identity(path: Path) -> dict:
    """What names the base model: path, config, weight hashes, tokenizer hash, transformers version."""
    transformers = require_transformers()
    config = json.loads((path / "config.json").read_text())
    weights = {p.name: sha256_file(p) for p in weight_files(path)}
    tok_files = {name: sha256_file(path / name) for name in TOKENIZER_FILES if (path / name).is_file()}
    content = {"config": config, "weights_sha256": weights, "tokenizer_sha256": sha256_json(tok_files)}
    sha = sha256_json(content)
    return {"path": str(path.resolve()), **content, "tokenizer_files": sorted(tok_files),
            "transformers": transformers.__version__, "sha256": sha}


@dataclass(frozen=True)
class HFCheckpoint:
    model: HFAdapterLM  # frozen base, every norm hooked for per-row adapters, on `device`
    encoder: TokenEncoder  # document -> tokens with the model's BOS convention
    identity: dict  # see `identity`
    dtype: str
    path: Path

    @property
    def sha256(self) -> str:
        return self.identity["sha256"]


def default_context(hf_config, device: str) -> int:
    limit = position_limit(hf_config)
    cap = GPU_CONTEXT_CAP if device == "cuda" else CPU_CONTEXT_CAP
    return min(limit, cap) if limit else cap


def _module_refs(value) -> list[str]:
    """The `module.Class` references of an `auto_map` value (a string, or a list such as
    `[slow, fast]` with None for an absent class)."""
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, str)]


def _module_file(path: Path, ref: str) -> str:
    """The file a `module.Class` (or `repo--module.Class`) reference would import, and whether it is there."""
    module = ref.split("--")[-1].rsplit(".", 1)[0]
    f = path / (module.replace(".", "/") + ".py")
    return f"{f.name}, in the directory" if f.is_file() else f"{f.name}, not in the directory (fetched from a hub)"


def own_code(path: Path) -> str | None:
    """Why the checkpoint in `path` would run its own code, or None: an `auto_map` entry in any JSON
    file of the directory, or a `tokenizer_class` named by module path (`module.Class`).

    Read as plain JSON, before transformers opens anything, so no prompt can be answered and nothing
    is imported."""
    for f in sorted(path.glob("*.json")):
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # an unreadable config.json is named by check_dir; other files transformers ignores
        if not isinstance(doc, dict):
            continue
        amap = doc.get("auto_map")
        if amap is not None:
            entries = amap.items() if isinstance(amap, dict) else [("", amap)]
            shown = [f"{k}: {ref} ({_module_file(path, ref)})" if k else f"{ref} ({_module_file(path, ref)})"
                     for k, v in entries for ref in _module_refs(v)] or [json.dumps(amap)[:200]]
            return f"{f} has `auto_map` {{{'; '.join(shown)}}}"
        cls = doc.get("tokenizer_class")
        if isinstance(cls, str) and ("." in cls or "--" in cls):
            return f"{f} has `tokenizer_class` {cls} ({_module_file(path, cls)})"
    return None


def refuse_own_code(path: Path) -> None:
    """HFModelError when the checkpoint would need its own Python code (see `own_code`)."""
    why = own_code(path)
    if why is not None:
        raise HFModelError(f"`--model {path}`: {why}: the checkpoint needs its own Python code, and {NO_OWN_CODE}")


def _their_words(exc: BaseException) -> str:
    """transformers' message, without its advice to pass `trust_remote_code=True` (which the suite never does)."""
    text = f"{type(exc).__name__}: {exc}"
    if "trust_remote_code" in text or "custom code" in text:
        return f"transformers says it would have to run custom code from the directory; {NO_OWN_CODE}"
    return text


def check_dir(path: Path):
    """The checkpoint's config after the cheap checks (directory, config, causal LM, weights, tokenizer)."""
    transformers = require_transformers()
    path = Path(path)
    if not path.is_dir():
        raise HFModelError(f"`--model {path}`: not a directory; pass a checkpoint directory saved with "
                           "`save_pretrained` (config.json, *.safetensors, tokenizer files)")
    if not (path / "config.json").is_file():
        raise HFModelError(f"`--model {path}`: no config.json; save the model there with `model.save_pretrained(dir)`")
    refuse_own_code(path)
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise HFModelError(f"`--model {path}`: config.json cannot be read as a transformers config "
                           f"({_their_words(exc)}); fix or re-save it with `model.save_pretrained(dir)`") from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise HFModelError(f"`--model {path}`: {type(config).__name__} (model_type {config.model_type!r}) is not a "
                           "causal language model; pass a decoder-only checkpoint (AutoModelForCausalLM)")
    weight_files(path)
    if not any((path / n).is_file() for n in TOKENIZER_FILES):
        raise HFModelError(f"`--model {path}`: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); save the "
                           "model's tokenizer beside it with `tokenizer.save_pretrained(dir)`")
    return config


def load_checkpoint(path: Path | str, *, dtype: str = "float32", device: str = "cpu",
                    context: int | None = None) -> HFCheckpoint:
    """Load `path` offline as a frozen base with per-row norm adapters (HFModelError on any problem)."""
    transformers = require_transformers()
    transformers.utils.logging.set_verbosity_error()  # its load report and progress bars: errors are ours
    transformers.utils.logging.disable_progress_bar()
    path = Path(path)
    config = check_dir(path)
    td = check_dtype(dtype, device)
    limit = position_limit(config)
    if context is None:
        context = default_context(config, device)
    elif context < 2:
        raise HFModelError(f"`--context {context}`: must be at least 2 tokens")
    elif limit is not None and context > limit:
        raise HFModelError(f"`--context {context}`: longer than the model's position limit of {limit} tokens "
                           f"({path / 'config.json'}); pass `--context {limit}` or less")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise HFModelError(f"`--model {path}`: the tokenizer cannot be loaded ({_their_words(exc)}); save the "
                           "model's tokenizer beside it with `tokenizer.save_pretrained(dir)`") from None
    try:
        hf, info = transformers.AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=td, output_loading_info=True, trust_remote_code=False)
    except Exception as exc:
        raise HFModelError(f"`--model {path}`: the weights do not load into its config "
                           f"({_their_words(exc)[:500]}); re-save the checkpoint with `save_pretrained`") from None
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if bad:
        listed = "; ".join(f"{k}: {', '.join(map(str, sorted(v)[:5]))}{' ...' if len(v) > 5 else ''}"
                           for k, v in bad.items())
        raise HFModelError(f"`--model {path}`: the weight files do not match config.json ({listed}); "
                           "re-save the checkpoint with `save_pretrained` so weights and config agree")
    if len(tokenizer) > hf.get_output_embeddings().weight.shape[0]:
        raise HFModelError(f"`--model {path}`: the tokenizer has {len(tokenizer)} tokens but the model's output layer "
                           f"only {hf.get_output_embeddings().weight.shape[0]}; save the matching tokenizer beside it")
    try:
        model = HFAdapterLM(hf, context)
    except UnsupportedArchitecture as exc:
        raise HFModelError(f"`--model {path}`: {exc}") from None
    model.to(device)
    name = next(k for k, v in DTYPES.items() if v is td)  # `auto` resolved
    return HFCheckpoint(model, make_encoder(tokenizer), identity(path), name, path)
