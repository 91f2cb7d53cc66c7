"""Step counts of a run: where each count's files live, and what of a seed can be kept on resume.

A run evaluates the adapters at every count of `TrainConfig.counts` (`--steps 25,50,100`): one
training to the largest count, the bank snapshotted at each (`runners.train`). A run of one count
keeps the layout of before; a run of several puts each count's files one `steps-<k>` folder down
(docs/formats.md):

    adapters/seed-<s>/<adapter>.safetensors              one count
    adapters/seed-<s>/steps-<k>/<adapter>.safetensors    several counts (likewise peft/seed-<s>/...)
    seeds/seed-<s>/docs.parquet                          one count
    seeds/seed-<s>/steps-<k>/docs.parquet                several counts

Resume, per seed: `done.json` verified -> the seed is kept; else `trained.json` verified (the
adapter files of every count and the training log) -> the training is kept and only the counts
without a verified `steps-<k>.json` are evaluated again, from the adapter files; else the seed is
trained again. Every marker lists the SHA-256 of the files it covers (`rundir.seed_problem`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from common.contract import loo_user
from runners import rundir


def steps_part(k: int, counts: tuple[int, ...]) -> str:
    """The path part of count `k`: "" for a one-count run, `steps-<k>` otherwise."""
    return f"steps-{k}" if len(counts) > 1 else ""


def adapter_file(run_dir: Path, seed: int, name: str, k: int, counts: tuple[int, ...]) -> Path:
    """`adapters/seed-<s>/[steps-<k>/]<user|pooled>.safetensors`; `loo:<user>` one `loo/` folder
    further down (no ':' in a file name: artifact uploaders and some file systems refuse it)."""
    folder = run_dir / "adapters" / f"seed-{seed}"
    if steps_part(k, counts):
        folder = folder / steps_part(k, counts)
    left_out = loo_user(name)
    return folder / "loo" / f"{left_out}.safetensors" if left_out is not None else folder / f"{name}.safetensors"


def seed_dir(run_dir: Path, seed: int) -> Path:
    return run_dir / "seeds" / f"seed-{seed}"


def docs_file(run_dir: Path, seed: int, k: int, counts: tuple[int, ...]) -> Path:
    """The seed's docs.parquet rows at count `k`."""
    folder = seed_dir(run_dir, seed)
    return (folder / steps_part(k, counts) if steps_part(k, counts) else folder) / "docs.parquet"


def count_marker(run_dir: Path, seed: int, k: int) -> Path:
    """Written once count `k` of the seed is evaluated: lists its docs file's SHA-256."""
    return seed_dir(run_dir, seed) / f"steps-{k}.json"


def trained_marker(run_dir: Path, seed: int) -> Path:
    """Written once the seed's adapters (every count) and training log are on disk."""
    return seed_dir(run_dir, seed) / "trained.json"


@dataclass(frozen=True)
class KeptTraining:
    """What `trained.json` records: the statuses per count, and the counts already evaluated."""

    record: dict
    statuses: dict[int, tuple[str, ...]]  # per count, in the bank's adapter order
    evaluated: tuple[int, ...]            # counts whose `steps-<k>.json` verifies


def kept_training(run_dir: Path, seed: int, names: tuple[str, ...], counts: tuple[int, ...],
                  base_sha256: str) -> tuple[KeptTraining | None, str]:
    """The seed's training, if it can be kept: (record, "") or (None, why it cannot)."""
    marker = trained_marker(run_dir, seed)
    if not marker.is_file():
        return None, "no `trained.json` (interrupted during training)"
    record, problem = rundir.seed_problem(run_dir, marker)
    if problem:
        return None, problem
    if record.get("base_model_sha256") != base_sha256:
        return None, (f"trained with base model {str(record.get('base_model_sha256'))[:12]}, now "
                      f"{base_sha256[:12]}")
    if record.get("steps") != list(counts) or record.get("adapters") != list(names):
        return None, (f"`{marker}` records steps {record.get('steps')} and adapters {record.get('adapters')}, "
                      f"this run {list(counts)} and {list(names)}")
    try:
        statuses = {int(k): tuple(v[n] for n in names) for k, v in record["statuses"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, f"`{marker}` has no statuses per step count"
    if sorted(statuses) != list(counts):
        return None, f"`{marker}` has statuses for steps {sorted(statuses)}, not {list(counts)}"
    evaluated = tuple(k for k in counts if count_marker(run_dir, seed, k).is_file()
                      and rundir.seed_problem(run_dir, count_marker(run_dir, seed, k))[1] is None)
    return KeptTraining(record, statuses, evaluated), ""


def load_states(run_dir: Path, seed: int, names: tuple[str, ...], k: int,
                counts: tuple[int, ...]) -> list[dict[str, torch.Tensor]]:
    """The bank at count `k`, read back from the adapter files (verified by `kept_training`)."""
    return [load_file(str(adapter_file(run_dir, seed, n, k, counts))) for n in names]


def marker_record(run_dir: Path, what: dict, files: list[Path]) -> dict:
    return {**what, "files": rundir.file_hashes(run_dir, files)}
