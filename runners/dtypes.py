"""The dtype policy for frozen base weights (`--dtype`), shared by the built-in model and `--model`.

Base weights are frozen while adapters train and while anything is scored, so they can be held in
a narrower floating-point type once, when the model is loaded: `bfloat16`, or `float16` on GPUs
without bfloat16. What stays float32 whatever `--dtype` says: the adapter parameters, their
gradients and the optimizer state, the loss and the summed NLLs. The built-in model also keeps its
residual stream, every norm, the (tied) embedding and the output layer in float32: only the matrix
multiplies of the transformer blocks run in the narrow type (`runners.model.GPT.cast_frozen`). A
`--model` checkpoint is loaded whole in the dtype and its norms compute as the checkpoint's own
modules do (docs/own_model.md). Pretraining the built-in base model is always float32: its cache
key and weights do not depend on `--dtype`.

`--dtype auto` picks, per device and preset, the dtype that benchmarks/bench_dtype.py showed to be
both faster and accurate enough (docs/performance.md; bfloat16 for the `cpu` and `gpt30m` presets
on a CPU with native bf16, float32 elsewhere); float32 is always available for exact
reproduction. Asking for a dtype the hardware cannot multiply in natively is refused, never
silently slowed down or replaced.

`resolve` is pure (it takes the hardware's `Capability`), so every branch, the CUDA ones
included, is tested on any machine; `probe` is the only part that asks the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
AUTO = "auto"
CHOICES = (*DTYPES, AUTO)

# What `--dtype auto` resolves to, per device and built-in preset, where the hardware has the dtype
# natively (else float32). An entry becomes bfloat16 only once benchmarks/bench_dtype.py has shown
# it faster AND accurate (`accuracy`: every margin within 0.2 pp, no status changed). So far
# (docs/performance.md, 2026-11-28, quiet machine, AVX512-BF16 CPU): bfloat16 made the `cpu` preset's
# adapter training 1.18x and evaluation 1.96x faster (`bench_dtype.py speed`), and on the default
# study it moved no margin by more than 0.010 pp and changed no status (`bench_dtype.py accuracy
# --seeds 5`): `cpu` and `gpt30m` (1.36-1.54x, measured under load) take bfloat16 where the CPU has
# it natively. `tiny` (per-step overhead, not matmuls) and every GPU entry (nothing measured) stay
# float32. A preset not listed, or a `--model` checkpoint (None), resolves to float32.
AUTO_CPU: dict[str, str] = {"tiny": "float32", "cpu": "bfloat16", "gpt30m": "bfloat16"}
AUTO_GPU: dict[str, str] = {"tiny": "float32", "cpu": "float32", "gpt30m": "float32"}


class DtypeError(ValueError):
    """A `--dtype` the suite or this hardware cannot use: the message names the flag and the fix."""


@dataclass(frozen=True)
class Capability:
    """Which narrow floating-point types `device` multiplies matrices in natively."""

    device: str  # "cpu" or "cuda"
    bf16: bool
    fp16: bool
    what: str  # the hardware in words, for messages and the manifest


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype a run uses for its frozen base weights, and why."""

    requested: str  # what `--dtype` said (one of CHOICES)
    name: str  # what it resolved to (a key of DTYPES)
    reason: str  # one sentence: why this dtype (recorded in the manifest, logged)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.name]


def probe(device: str) -> Capability:
    """This machine's capability for `device` (the only function here that asks the hardware)."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        return Capability("cuda", bool(torch.cuda.is_bf16_supported()), True, f"GPU {name}")
    # oneDNN's own test for its bfloat16 / float16 kernels (AVX-512 core, AVX512-BF16, AMX; Arm BF16):
    # without them torch falls back to slow reference kernels
    try:
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        fp16 = bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN's probes: treat as absent
        bf16 = fp16 = False
    return Capability("cpu", bf16, fp16, f"CPU ({torch.backends.cpu.get_cpu_capability()})")


def check_name(requested: str) -> str:
    """`requested` if it is a known `--dtype` (DtypeError naming the flag otherwise)."""
    if requested not in CHOICES:
        raise DtypeError(f"`--dtype {requested}`: use one of {', '.join(CHOICES)} (no other dtype is known)")
    return requested


def resolve(requested: str, cap: Capability, preset: str | None = None) -> DtypeChoice:
    """The dtype for `--dtype requested` on hardware `cap` (`preset`: the built-in preset, None
    for a `--model` checkpoint). DtypeError when the hardware lacks the requested dtype."""
    check_name(requested)
    if requested == AUTO:
        return _auto(cap, preset)
    if requested == "bfloat16" and not cap.bf16:
        alt = "`--dtype float16` or " if cap.device == "cuda" else ""
        raise DtypeError(f"`--dtype bfloat16`: this {cap.what} has no native bfloat16 matrix multiplies "
                         f"(torch would emulate them, slower than float32); use {alt}`--dtype float32`, or "
                         "`--dtype auto` to take what this hardware does best")
    if requested == "float16" and not cap.fp16:
        raise DtypeError(f"`--dtype float16`: this {cap.what} has no native float16 matrix multiplies "
                         "(torch would emulate them, slower than float32); use `--dtype float32`, or "
                         "`--dtype auto`")
    return DtypeChoice(requested, requested, f"--dtype {requested}, as asked")


def _auto(cap: Capability, preset: str | None) -> DtypeChoice:
    table = AUTO_GPU if cap.device == "cuda" else AUTO_CPU
    pick = table.get(preset, "float32") if preset is not None else "float32"
    if pick == "bfloat16" and not cap.bf16:
        return DtypeChoice(AUTO, "float32", f"--dtype auto: float32, this {cap.what} has no native bfloat16")
    what = f"preset {preset!r}" if preset is not None else "a --model checkpoint"
    if pick == "float32":
        return DtypeChoice(AUTO, pick, f"--dtype auto: float32 for {what} on this {cap.what}: no narrower dtype is "
                                       "measured both faster and accurate there yet (docs/performance.md)")
    return DtypeChoice(AUTO, pick, f"--dtype auto: {pick}, measured faster and accurate for {what} on a "
                                   f"{cap.device.upper()} (docs/performance.md)")


def choose(requested: str, device: str, preset: str | None = None) -> DtypeChoice:
    """`resolve` on this machine's capability for `device`."""
    check_name(requested)
    return resolve(requested, probe(device), preset)
