"""What a reduced `--dtype` costs a `--model` checkpoint's margins, measured before anything trains.

With `--dtype bfloat16` or `float16` and a checkpoint, the grid scores the first window of a few
held-out documents (`CHECK_DOCS`, taken in turn from each user) with the checkpoint in the dtype
and again with its weights in float32 (converted in place and back: bfloat16 and float16 values
are exact in float32, so the model is afterwards what it was, bit for bit), each for the base
(bank entry 0) and for a fixed perturbation of every norm gain and bias (entry 1: gains times
1 + 0.05 N(0, 1), biases plus 0.05 N(0, 1), from a private generator), standing in for an adapter.

A margin of the verdict is a relative perplexity reduction of an adapter over a baseline scored
in the same dtype, i.e. 1 - exp(difference of their mean NLLs per token); a shift that the dtype
gives both sides cancels. What a margin can move by is the change of that difference:
`margin_shift`, the largest over the documents of |(entry 1 - base) in the dtype - (entry 1 -
base) in float32| in nats per token (for the small differences of interest, about the change of
the margin itself). Above `TOLERANCE` (0.002: the 0.2 percentage points of a margin within which
the built-in model's `auto` dtype was accepted, docs/performance.md) the run falls back to float32,
with a warning; `base_shift` (the base's own NLL change, absolute and relative) is recorded beside
it. `--dtype auto` is float32 for a checkpoint, so the check runs only when a narrower dtype is
asked for.

The result is cached per (checkpoint content, dtype, hardware, torch version, documents) under
`cache_root()/dtype-checks/`, like the built-in base model, and recorded in the manifest's
`host.dtype_check`.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from common.cache import cache_root
from common.hashing import sha256_json
from fixtures.corpus import FixtureSet
from runners.data import IGNORE, eval_windows
from runners.losses import token_nll

CHECK_DOCS = 4  # held-out documents whose first window is scored in both dtypes
TOLERANCE = 0.002  # nats per token: the largest margin_shift kept (docs/own_model.md)
PERTURB = 0.05  # the stand-in adapter's perturbation of every norm gain and bias
FORMAT = 1  # bump when the check's meaning changes (the cache key holds it)


@dataclass(frozen=True)
class DtypeCheck:
    """The measured cost of `dtype` against float32 for one checkpoint (see the module doc)."""

    dtype: str
    docs: tuple[str, ...]  # `<user>/<doc_id>` of the documents scored (first window of each)
    tokens: int  # tokens scored per bank entry and dtype
    base_shift: float  # max over docs |mean NLL per token, dtype - float32| of the base, nats
    base_shift_rel: float  # the same, relative to the float32 NLL
    margin_shift: float  # max over docs |(entry 1 - base) in the dtype - in float32|, nats per token
    tolerance: float
    seconds: float  # what the check took when it was measured
    cached: bool = False  # read from the cache in this run

    @property
    def ok(self) -> bool:
        return self.margin_shift <= self.tolerance

    def to_json(self) -> dict:
        return {**asdict(self), "docs": list(self.docs), "ok": self.ok}

    def sentence(self) -> str:
        return (f"{self.dtype} moved a margin by up to {self.margin_shift:.4f} nats per token against float32 "
                f"(tolerance {self.tolerance}; the base's own NLL by up to {self.base_shift:.4f} nats, "
                f"{self.base_shift_rel:.2%}) on the first windows of {len(self.docs)} held-out documents")


def check_documents(fs: FixtureSet, n: int = CHECK_DOCS) -> list[tuple[str, object]]:
    """Up to `n` held-out documents, taken in turn from each user: (`<user>/<doc_id>`, document)."""
    out, depth = [], 0
    while len(out) < n and any(depth < len(u.heldout) for u in fs.users):
        out += [(f"{u.name}/{u.heldout[depth].doc_id}", u.heldout[depth]) for u in fs.users if depth < len(u.heldout)]
        depth += 1
    return out[:n]


def _per_token_nll(model, x: torch.Tensor, y: torch.Tensor, entry: int, device: str) -> np.ndarray:
    """(W,) mean NLL per scored token of each window under bank entry `entry`."""
    idx = torch.full((len(x),), entry, dtype=torch.long, device=device)
    with torch.no_grad():
        nll = token_nll(model, x.to(device), y.to(device), idx, getattr(model, "logit_chunk", None), IGNORE)
    n = (y != IGNORE).sum(dim=1).clamp(min=1)
    return (nll.double().sum(dim=1).cpu() / n).numpy()


def _scores(model, x, y, device) -> tuple[np.ndarray, np.ndarray]:
    return _per_token_nll(model, x, y, 0, device), _per_token_nll(model, x, y, 1, device)


def _to_float32(model) -> dict[int, torch.dtype]:
    """Every floating-point parameter and buffer of `model` in float32, in place; their dtypes before."""
    was = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point() and t.dtype != torch.float32 and id(t) not in was:
            was[id(t)] = t.dtype
            t.data = t.data.float()
    return was


def _restore(model, was: dict[int, torch.dtype]) -> None:
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in was and t.dtype == torch.float32:
            t.data = t.data.to(was[id(t)])


def measure(model, windows: tuple[torch.Tensor, torch.Tensor], dtype: str, docs: tuple[str, ...],
            device: str = "cpu", tolerance: float | None = None) -> DtypeCheck:
    """The check on `model` (a HFAdapterLM held in `dtype`) for `windows` (x, y) of `docs`; the
    model is left as it was (its frozen weights are shared with the copy measured here)."""
    t0 = time.perf_counter()
    tolerance = TOLERANCE if tolerance is None else tolerance
    x, y = windows
    twin = copy.deepcopy(model)  # shares the frozen weights; its own bank
    twin.attach_adapters(1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in twin.norms():
            m.adapter_weight.mul_(1 + PERTURB * torch.randn(m.adapter_weight.shape, generator=g).to(m.adapter_weight))
            if m.adapter_bias is not None:
                m.adapter_bias.add_(PERTURB * torch.randn(m.adapter_bias.shape, generator=g).to(m.adapter_bias))
    base_d, adapted_d = _scores(twin, x, y, device)
    was = _to_float32(twin)
    try:
        base_f, adapted_f = _scores(twin, x, y, device)
    finally:
        _restore(twin, was)
    base_shift = np.abs(base_d - base_f)
    margin_shift = np.abs((adapted_d - base_d) - (adapted_f - base_f))
    return DtypeCheck(dtype, tuple(docs), int((y != IGNORE).sum()), float(base_shift.max()),
                      float((base_shift / np.abs(base_f)).max()), float(margin_shift.max()), tolerance,
                      time.perf_counter() - t0)


def cache_key(model_sha256: str, dtype: str, hardware: str, windows: tuple[torch.Tensor, torch.Tensor]) -> str:
    x, y = windows
    return sha256_json({"format": FORMAT, "model": model_sha256, "dtype": dtype, "hardware": hardware,
                        "torch": torch.__version__, "perturb": PERTURB,
                        "x": x.numpy().tolist(), "y": y.numpy().tolist()})


def cached_measure(ck, fs: FixtureSet, device: str, hardware: str, cache_dir=None) -> DtypeCheck:
    """`measure` for checkpoint `ck` (runners.hf.load.HFCheckpoint) on `fs`'s documents, read from
    or written to the cache (`cache_root()/dtype-checks/<key>.json`)."""
    picked = check_documents(fs)
    T = ck.model.config.block_size
    w = eval_windows(tuple(d for _, d in picked), T, ck.encoder)
    first = [int(np.flatnonzero(w.doc.numpy() == i)[0]) for i in range(len(picked))]
    windows = (w.x[first], w.y[first])
    key = cache_key(ck.sha256, ck.dtype, hardware, windows)
    path = (cache_dir or cache_root() / "dtype-checks") / f"{key}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc.pop("ok", None)  # the measurement is cached; the tolerance is today's
        return DtypeCheck(**{**doc, "docs": tuple(doc["docs"]), "tolerance": TOLERANCE, "cached": True})
    except (OSError, ValueError, TypeError, KeyError):
        pass
    result = measure(ck.model, windows, ck.dtype, tuple(n for n, _ in picked), device)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result.to_json()), encoding="utf-8")
        tmp.replace(path)
    except OSError:  # a read-only cache: measured again next time
        pass
    return result
