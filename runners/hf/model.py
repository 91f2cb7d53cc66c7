"""`HFAdapterLM`: a Hugging Face causal LM behind the interface of the built-in `runners.model.GPT`.

It has what `runners.train.train_adapters` and `runners.evaluate` use (`config.block_size`,
`forward(idx, adapter_idx)` -> float32 logits, `attach_adapters`, `adapter_state`,
`load_adapter_bank`, ...), so the batched training loop and the scoring code are the suite's own,
not second versions. The norm adapters are the per-row banks of `runners.hf.norms`; bank entry 0
is the base model, 1..n the adapters, exactly as in the built-in model.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import types
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from runners.hf.norms import NormSpec, RowRouter, attach_bank, attach_norm_hooks, find_norms


@dataclass(frozen=True)
class HFRunConfig:
    block_size: int  # context length in tokens: training window and disjoint evaluation window
    vocab_size: int

    def to_dict(self) -> dict:
        return asdict(self)


def position_limit(hf_config) -> int | None:
    """The model's maximum number of positions, where its config states one."""
    for a in ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx", "seq_length"):
        v = getattr(hf_config, a, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


LOGITS_BUDGET_BYTES = 256 << 20  # float32 logits of one evaluation forward pass at most (without a memory plan)


def _checkpointed_forward(self: nn.Module, *args, **kwargs):
    """A decoder layer's forward under gradient checkpointing (set on the instance by
    `HFAdapterLM.set_checkpointing`): its activations are recomputed in the backward, with the
    per-row adapter index of the forward pass held for the recomputation."""
    forward = type(self).forward
    if not (self._na_checkpoint and torch.is_grad_enabled()):
        return forward(self, *args, **kwargs)
    router = self._na_layer_router
    idx = router.idx

    def run(*a):
        prev, router.idx = router.idx, idx
        try:
            return forward(self, *a, **kwargs)
        finally:
            router.idx = prev

    return checkpoint(run, *args, use_reentrant=False)


def decoder_layers(hf_model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a HF model: its GradientCheckpointingLayer modules, else the children
    of its longest nn.ModuleList."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # an older transformers
        GradientCheckpointingLayer = ()  # noqa: N806
    layers = [m for m in hf_model.modules() if GradientCheckpointingLayer and isinstance(m, GradientCheckpointingLayer)]
    if layers:
        return layers
    lists = [m for m in hf_model.modules() if isinstance(m, nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


class HFAdapterLM(nn.Module):
    """A frozen HF causal LM whose every norm takes per-row adapters (see runners.hf.norms)."""

    def __init__(self, hf_model: nn.Module, block_size: int):
        super().__init__()
        self.hf = hf_model.eval()
        self.specs: list[NormSpec] = find_norms(hf_model)
        self.router = RowRouter()
        self._norms = attach_norm_hooks(hf_model, self.specs, self.router)
        vocab = int(hf_model.get_output_embeddings().weight.shape[0])
        self.config = HFRunConfig(block_size=block_size, vocab_size=vocab)
        # windows per evaluation forward (runners.evaluate.window_nll): bounds the (b, T, V) logits
        self.eval_batch = max(1, min(64, LOGITS_BUDGET_BYTES // (4 * block_size * self.config.vocab_size)))
        self.logit_chunk: int | None = None  # tokens per slice of the logits (runners.losses; the memory plan)
        self.fused_head = self._head_reproduces_logits()

    def _head_reproduces_logits(self) -> bool:
        """Whether `head(hidden(x))` gives the model's own logits (checked on a probe input): then
        the loss is computed from hidden states in chunks. A model that does more after its output
        layer (e.g. logit soft-capping) is scored from its full logits instead."""
        try:
            base, out = self.hf.base_model, self.hf.get_output_embeddings()
        except (AttributeError, NotImplementedError):
            return False
        if base is self.hf or out is None:
            return False
        dev = next(self.hf.parameters()).device
        x = (torch.arange(8, device=dev) % self.config.vocab_size)[None]
        try:
            with torch.no_grad():
                want = self.hf(input_ids=x, use_cache=False).logits.float()
                got = out(base(input_ids=x, use_cache=False).last_hidden_state).float()
        except Exception:  # noqa: BLE001 - any failure: the plain path
            return False
        return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-4, atol=1e-4))

    def __deepcopy__(self, memo: dict) -> HFAdapterLM:
        """A copy that shares the frozen base weights and copies everything else (hooks, banks).

        `runners.train.train_adapters` trains on a deep copy of the base; sharing the base tensors
        (never written: they are frozen, and the optimizer only holds bank parameters) keeps a
        large model's weights in memory once instead of twice.
        """
        for t in itertools.chain(self.hf.named_parameters(), self.hf.named_buffers()):
            name, tensor = t
            if "adapter_" not in name:
                memo[id(tensor)] = tensor
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    # -- what runners.train / runners.evaluate use ---------------------------------------------

    def norms(self) -> list[nn.Module]:
        return list(self._norms)

    def norm_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def forward(self, idx: torch.Tensor, adapter_idx: torch.Tensor | None = None) -> torch.Tensor:
        """float32 logits (B, T, V) for tokens `idx` (B, T); `adapter_idx` (B,) picks each row's norm adapter."""
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence of {idx.size(1)} tokens > context {self.config.block_size}")
        with self.routing(adapter_idx):
            out = self.hf(input_ids=idx, use_cache=False).logits
        return out.float()

    def hidden(self, idx: torch.Tensor, adapter_idx: torch.Tensor | None = None) -> torch.Tensor:
        """What `head` turns into the logits: the final hidden states (B, T, C) where `fused_head`,
        else the float32 logits themselves (runners.losses)."""
        if not self.fused_head:
            return self.forward(idx, adapter_idx)
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence of {idx.size(1)} tokens > context {self.config.block_size}")
        with self.routing(adapter_idx):
            return self.hf.base_model(input_ids=idx, use_cache=False).last_hidden_state

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """float32 logits of `hidden`'s output (the output layer, or nothing where it is not `fused_head`)."""
        return self.hf.get_output_embeddings()(h).float() if self.fused_head else h

    @contextlib.contextmanager
    def routing(self, adapter_idx: torch.Tensor | None):
        """Rows routed to bank entries `adapter_idx` inside the block (nested blocks restore the outer index)."""
        prev, self.router.idx = self.router.idx, adapter_idx
        try:
            yield
        finally:
            self.router.idx = prev

    def set_checkpointing(self, on: bool) -> None:
        """Gradient checkpointing of every decoder layer while training (runners.memory's plan)."""
        for layer in decoder_layers(self.hf):
            layer._na_checkpoint, layer._na_layer_router = bool(on), self.router
            if "forward" not in layer.__dict__:  # a bound method: a deep copy rebinds it to the copied layer
                layer.forward = types.MethodType(_checkpointed_forward, layer)

    def attach_adapters(self, n_adapters: int) -> list[nn.Parameter]:
        """Freeze every base weight; give each norm a bank of `n_adapters`; return the bank params."""
        for p in self.parameters():
            p.requires_grad_(False)
        for m in self.norms():
            attach_bank(m, n_adapters)
        return self.adapter_parameters()

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.norms() for p in (m.adapter_weight, m.adapter_bias) if p is not None]

    def adapter_state(self, k: int) -> dict[str, torch.Tensor]:
        """Adapter `k` (0-based bank entry) as named float32 (C,) tensors, e.g. `model.norm.weight`."""
        out = {}
        for s, m in zip(self.specs, self.norms(), strict=True):
            out[f"{s.name}.weight"] = m.adapter_weight[k].detach().clone()
            if m.adapter_bias is not None:
                out[f"{s.name}.bias"] = m.adapter_bias[k].detach().clone()
        return out

    def load_adapter_bank(self, states: list[dict[str, torch.Tensor]]) -> None:
        """Replace the bank with `states` (as returned by `adapter_state`), in that order."""
        dev = next(self.hf.parameters()).device
        for s, m in zip(self.specs, self.norms(), strict=True):
            m.adapter_weight = nn.Parameter(torch.stack([st[f"{s.name}.weight"] for st in states]).float().to(dev))
            if s.has_bias:
                m.adapter_bias = nn.Parameter(torch.stack([st[f"{s.name}.bias"] for st in states]).float().to(dev))

    def n_adapter_params(self) -> int:
        """Trainable parameters of ONE adapter: gain (+ bias where the module has one) of every norm."""
        return sum(s.dim * (2 if s.has_bias else 1) for s in self.specs)

    def n_base_params(self) -> int:
        seen, n = set(), 0
        for name, p in self.hf.named_parameters(remove_duplicate=True):
            if "adapter_" not in name and id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    def base_state(self) -> dict[str, torch.Tensor]:
        """Every non-adapter parameter and buffer of the HF model (for the norm-only property)."""
        return {k: v for k, v in self.hf.state_dict().items() if "adapter_" not in k}

    def flops_per_token(self, mode: str = "forward") -> float:
        """Model FLOPs per token (matmuls only, as `runners.model.GPT.flops_per_token`).

        forward = 2 * (parameters of every Linear, lm_head included) + 4 * layers * T * attention width.
        """
        n_matmul = sum(m.weight.numel() for m in self.hf.modules()
                       if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D")  # GPT-2's projections
        c = self.hf.config
        layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", 0)
        width = getattr(c, "hidden_size", None) or getattr(c, "n_embd", 0)
        fwd = 2 * n_matmul + 4 * layers * self.config.block_size * width
        return fwd * {"forward": 1.0, "norm_only": 2.0, "full": 3.0}[mode]
