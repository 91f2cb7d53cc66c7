"""The base model: pretrained once per (model config, pretraining corpus, seed, schedule), cached.

Cache entry: `cache_root()/base-models/<key>/` with `model.safetensors` and `meta.json`, which
holds the SHA-256 of the weights file. An entry whose file is missing, unreadable or does not
match that hash is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from tqdm import tqdm

from common.atomic import atomic_write_text, atomic_write_with
from common.cache import cache_root
from common.hashing import sha256_file
from fixtures.corpus import Document
from runners.data import training_stream
from runners.model import GPT, GPTConfig
from runners.train import pretrain

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # bump when the cached layout or the pretraining code changes meaning (2: seeded init)


@dataclass(frozen=True)
class PretrainConfig:
    steps: int  # AdamW steps over random windows of the pretraining corpus
    batch_size: int  # windows per step
    lr: float  # peak learning rate (warm-up 5% of steps, cosine to 10%)
    seed: int = 0  # torch and data-order seed of pretraining

    def to_dict(self) -> dict:
        return asdict(self)


PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    "tiny": PretrainConfig(steps=150, batch_size=16, lr=3e-3),
    "cpu": PretrainConfig(steps=1500, batch_size=32, lr=2e-3),
    "gpt30m": PretrainConfig(steps=5000, batch_size=32, lr=6e-4),
}


@dataclass(frozen=True)
class BaseModel:
    model: GPT  # frozen base weights, eval mode, on CPU
    key: str  # cache key (hash of config, corpus hash, pretraining settings)
    sha256: str  # SHA-256 of the cached weights file
    path: Path  # the cache entry's directory
    pretrain_seconds: float  # wall time of pretraining (as recorded when the entry was built)
    built_now: bool  # False when loaded from the cache


def cache_key(config: GPTConfig, pretrain_cfg: PretrainConfig, corpus_sha256: str) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "model": config.to_dict(), "pretrain": pretrain_cfg.to_dict(),
                       "corpus": corpus_sha256}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _try_load(entry: Path, config: GPTConfig) -> BaseModel | None:
    weights, meta_path = entry / "model.safetensors", entry / "meta.json"
    if not (weights.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        sha = sha256_file(weights)
        if sha != meta["weights_sha256"]:
            log.warning("base model cache entry %s fails its hash (%s != %s): rebuilding", entry, sha,
                        meta["weights_sha256"])
            return None
        model = GPT(config)
        load_model(model, str(weights))
    except Exception as exc:  # a corrupt entry of any kind is rebuilt, never used
        log.warning("base model cache entry %s is unreadable (%s): rebuilding", entry, exc)
        return None
    model.eval()
    return BaseModel(model, entry.name, sha, entry, float(meta.get("pretrain_seconds", 0.0)), False)


def load_or_pretrain(config: GPTConfig, pretrain_cfg: PretrainConfig, corpus: tuple[Document, ...],
                     corpus_sha256: str, *, cache_dir: Path | None = None, device: str = "cpu",
                     dtype: torch.dtype = torch.float32) -> BaseModel:
    """The cached base model for this key, pretraining (and caching) it first when needed.

    Pretraining and the cache entry are always float32; `dtype` (runners.dtypes) is the dtype the
    returned, frozen model holds its blocks' weights in (`GPT.cast_frozen`), for adapter training
    and scoring. `sha256` stays that of the float32 weights file."""
    key = cache_key(config, pretrain_cfg, corpus_sha256)
    entry = Path(cache_dir or cache_root() / "base-models") / key
    found = _try_load(entry, config)
    if found is not None:
        log.info("base model %s loaded from %s", found.sha256[:12], entry)
        found.model.cast_frozen(dtype)
        return found
    log.info("pretraining the base model (%d steps) into %s", pretrain_cfg.steps, entry)
    torch.manual_seed(pretrain_cfg.seed)  # the initial weights too: the entry is reproducible
    model = GPT(config)
    t0 = time.perf_counter()
    with tqdm(total=pretrain_cfg.steps, desc="pretrain base", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
        losses = pretrain(model, training_stream(corpus), seed=pretrain_cfg.seed, steps=pretrain_cfg.steps,
                          batch_size=pretrain_cfg.batch_size, lr=pretrain_cfg.lr, device=device, progress=bar)
    seconds = time.perf_counter() - t0
    model.to("cpu").eval()
    weights = atomic_write_with(entry / "model.safetensors", lambda p: save_model(model, p))
    sha = sha256_file(weights)
    meta = {"key": key, "weights_sha256": sha, "model": config.to_dict(), "pretrain": pretrain_cfg.to_dict(),
            "corpus_sha256": corpus_sha256, "pretrain_seconds": seconds, "device": device,
            "final_loss": float(losses[-max(1, len(losses) // 20):].mean())}
    atomic_write_text(entry / "meta.json", json.dumps(meta, indent=2))
    log.info("base model pretrained in %.1f s, final loss %.3f nats/byte", seconds, meta["final_loss"])
    return BaseModel(model.cast_frozen(dtype), key, sha, entry, seconds, True)
