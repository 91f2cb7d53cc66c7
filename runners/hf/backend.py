"""What `runners.execution.execute` needs to run the grid on a Hugging Face checkpoint (`--model DIR`).

The grid itself is unchanged: the checkpoint stands where the built-in pretrained base model
stands (`runners.base_model.BaseModel`, with the checkpoint's content hash as its SHA-256), its
tokenizer encoder replaces the byte encoding, and every adapter of a seed is also written as a PEFT
LN_TUNING directory under `peft/seed-<k>/<adapter>/`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from common.contract import loo_user
from runners.base_model import BaseModel
from runners.hf.load import HFCheckpoint, load_checkpoint
from runners.hf.peft_export import write_peft_adapter


def open_checkpoint(path: Path, dtype: str, device: str, context: int | None) -> HFCheckpoint:
    """The `--model` checkpoint, loaded and checked (HFModelError, a UsageError, on any problem)."""
    return load_checkpoint(path, dtype=dtype, device=device, context=context)


def as_base_model(ck: HFCheckpoint) -> BaseModel:
    """The checkpoint in the built-in base model's place: nothing pretrained, the content hash as SHA-256."""
    return BaseModel(model=ck.model, key=f"hf-{ck.sha256[:24]}", sha256=ck.sha256, path=ck.path.resolve(),
                     pretrain_seconds=0.0, built_now=False)


def run_config_part(ck: HFCheckpoint) -> dict:
    """The checkpoint's part of the run configuration (its hash names the run directory)."""
    ident = {k: v for k, v in ck.identity.items() if k != "sha256"}
    return {"hf_model": ident, "hf_model_sha256": ck.sha256, "dtype": ck.dtype,
            "context": ck.model.config.block_size, "tokens": ck.encoder.describe(),
            "norms": [{"name": s.name, "class": s.cls, "kind": s.kind, "dim": s.dim, "bias": s.has_bias}
                      for s in ck.model.specs]}


def adapter_meta(ck: HFCheckpoint) -> dict:
    """What an adapter file's metadata says about its model (in place of the built-in model config)."""
    return {"hf_model": str(ck.path.resolve()), "hf_model_sha256": ck.sha256, "dtype": ck.dtype,
            "context": ck.model.config.block_size}


def write_peft_adapters(run_dir: Path, seed: int, names: tuple[str, ...], states: list[dict[str, torch.Tensor]],
                        ck: HFCheckpoint, meta: dict, steps_part: str = "") -> list[Path]:
    """`<run_dir>/peft/seed-<seed>/[<steps_part>/]<name>/` (`loo:<user>`: `.../loo/<user>/`): each adapter
    as a PEFT LN_TUNING adapter directory; `steps_part` is `steps-<k>` in a run of several step counts
    (runners.snapshots)."""
    seed_dir = run_dir / "peft" / f"seed-{seed}"  # `loo:<user>` -> loo/<user>/ (no ':' in a path)
    if steps_part:
        seed_dir = seed_dir / steps_part
    def where(name: str) -> Path:
        return seed_dir / ("loo" if loo_user(name) is not None else "") / (loo_user(name) or name)

    return [write_peft_adapter(where(name), st, ck.model.specs, str(ck.path.resolve()), meta={**meta, "adapter": name})
            for name, st in zip(names, states, strict=True)]


def versions() -> dict[str, str]:
    """Versions of the HF packages, for the manifest (`not installed` where absent)."""
    import importlib.metadata as md

    out = {}
    for pkg in ("transformers", "tokenizers", "peft"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
