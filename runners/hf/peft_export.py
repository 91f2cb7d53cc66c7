"""Write one norm adapter as a PEFT `LN_TUNING` adapter directory.

PEFT's LayerNorm tuning replaces each target module by a copy whose parameters are the adapter;
it saves them as `base_model.model.<module path>.ln_tuning_layers.<weight|bias>`. The directory
written here (`adapter_config.json` + `adapter_model.safetensors`) is what `save_pretrained` of
such a PeftModel writes, so `PeftModel.from_pretrained(base, dir)` loads it (and so do
lm-evaluation-harness' `peft=` argument and serving stacks that load PEFT adapters).

The suite's adapter parameters are the modules' own parameters (a Gemma gain is the raw `weight`
of its `(1 + weight)` form), so the values are copied unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from common.atomic import atomic_write_text, atomic_write_with
from runners.hf.norms import NormSpec

PEFT_PREFIX = "base_model.model."
PEFT_INFIX = ".ln_tuning_layers."


def peft_state(state: dict[str, torch.Tensor], specs: list[NormSpec]) -> dict[str, torch.Tensor]:
    """The suite's adapter state (`<module>.weight|bias`) under PEFT's LN_TUNING key names."""
    out = {}
    for s in specs:
        for p in ("weight", "bias") if s.has_bias else ("weight",):
            out[f"{PEFT_PREFIX}{s.name}{PEFT_INFIX}{p}"] = state[f"{s.name}.{p}"].detach().float().cpu().contiguous()
    return out


def peft_config(specs: list[NormSpec], base_path: str | None) -> dict:
    try:
        import peft

        version = peft.__version__
    except ImportError:
        version = None
    return {"peft_type": "LN_TUNING", "task_type": "CAUSAL_LM", "target_modules": [s.name for s in specs],
            "exclude_modules": None, "modules_to_save": None, "inference_mode": True,
            "base_model_name_or_path": base_path, "revision": None, "auto_mapping": None, "peft_version": version}


def write_peft_adapter(out_dir: Path, state: dict[str, torch.Tensor], specs: list[NormSpec],
                       base_path: str | None, meta: dict | None = None) -> Path:
    """`out_dir/adapter_config.json` + `out_dir/adapter_model.safetensors` (atomic, weights first)."""
    out_dir = Path(out_dir)
    tensors = peft_state(state, specs)
    metadata = {"format": "pt"} | ({"normadapt": json.dumps(meta)} if meta else {})
    atomic_write_with(out_dir / "adapter_model.safetensors", lambda p: save_file(tensors, p, metadata=metadata))
    atomic_write_text(out_dir / "adapter_config.json", json.dumps(peft_config(specs, base_path), indent=2) + "\n")
    return out_dir
