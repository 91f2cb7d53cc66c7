"""Shared helpers of the runner tests: tiny corpora and settings.

The cache-dir fixtures live in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

from fixtures import synthetic_fixture_set
from runners.base_model import PRETRAIN_PRESETS
from runners.model import PRESETS
from runners.settings import GridSettings
from runners.train import TrainConfig


def small_set(n_users: int = 3):
    """3 synthetic users with little text: the grid runs in about a second on the tiny preset."""
    return synthetic_fixture_set(n_users, train_docs=8, heldout_docs=5, heldout_doc_bytes=(150, 300),
                                 pretrain_bytes=40_000)


def tiny_settings(out: Path, prereg: Path, seeds=(0, 1), steps: int = 6, lr: float = 3e-2) -> GridSettings:
    prereg.write_text("# test pre-registration\n") if not prereg.exists() else None
    from common.hashing import sha256_file
    return GridSettings(preset="tiny", model=PRESETS["tiny"], pretrain=PRETRAIN_PRESETS["tiny"],
                        train=TrainConfig(steps=steps, batch_size=4, lr=lr), seeds=tuple(seeds), device="cpu",
                        out=out, prereg=prereg, prereg_sha256=sha256_file(prereg))
