"""Example studies to render: for the report's tests, the benchmark, and a look at the page.

The numbers come from `validation.simulation.simulate.simulate_study` and are judged by `validation.judge`;
the runner's side tables (train log, manifest) are fabricated in their documented shapes.
Nothing here is a statistic of the report.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from common.contract import CONTROLS, loo_name
from validation.contract.manifest import Manifest, manifest_from_json
from validation.contract.prereg import Prereg
from validation.contract.status import PreregStatus
from validation.inputs.study import StudyData
from validation.judgment.results import Verdict
from validation.judgment.study import judge
from validation.simulation.simulate import cells_from_matrix, simulate_study
from validation.study_verdict import StudyVerdict

USERS = ("alice", "bob", "carol")


def example_train_log(rng: np.random.Generator, seeds: tuple[int, ...], adapters: tuple[str, ...],
                      steps: int = 100, every: int = 1) -> pl.DataFrame:
    """`seed, adapter, step, loss` shaped like the runner's train_log.parquet."""
    step = np.arange(0, steps + 1, every)
    rows = []
    for s in seeds:
        for a in adapters:
            loss = 1.2 + 2.6 * np.exp(-step / (steps / 3)) + rng.normal(0, 0.04, step.size)
            rows.append(pl.DataFrame({"seed": s, "adapter": a, "step": step, "loss": loss}))
    return pl.concat(rows).with_columns(pl.col("seed").cast(pl.Int64), pl.col("step").cast(pl.Int64))


def example_manifest(users: tuple[str, ...], seeds: tuple[int, ...]) -> Manifest:
    """A manifest like the runner's (`runners.provenance.build_manifest`), validated on read."""
    return manifest_from_json({
        "run_id": "20260101-000000-example",
        "created": "2026-01-01T00:00:00+0000",
        "config": {"steps": 100, "batch_size": 16, "lr": 0.003, "block_size": 128},
        "seeds": list(seeds),
        "fixture_set": {
            "name": "synthetic", "description": "generated vocabularies, one per user",
            "users_sha256": "12" * 32, "pretrain_sha256": "34" * 32,
            "users": [{"name": u, "sha256": f"{i:02d}" * 32, "source": f"synthetic vocabulary {i}",
                       "licence": "CC0-1.0", "source_sha256": f"{i + 10:02d}" * 32,
                       "route": "generated (fixtures.synthetic)", "notes": "",
                       "train_bytes": 200_000, "heldout_bytes": 40_000, "n_train_docs": 200,
                       "n_heldout_docs": 50} for i, u in enumerate(users)],
            "leakage": [{"part_a": f"{u}/train", "part_b": f"{u}/heldout",
                         "longest_shared_bytes": 41} for u in users],
        },
        "base_model": {"key": "tiny", "sha256": "ab" * 32, "path": "~/.cache/normadapt/base-models/tiny",
                       "params": 820_000},
        "prereg": {"path": "prereg.toml", "sha256": "cd" * 32},
        "adapter": {"params": 1536, "bytes_fp32": 6144, "file_bytes": 7012, "norm_layers": 9},
        "versions": {"python": "3.11.7", "torch": "2.13.0", "numpy": "2.1.0"},
        "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
        "timings": {"pretrain_s": 41.2, "train_s": 120.5, "eval_s": 12.3},
        "host": {"hostname": "example-host", "cpu_count": 2, "device": "cpu"},
    })


def full_study(seed: int = 0, n_resamples: int | None = None, locked: bool = False,
               personalization: float = 0.15, n_seeds: int = 5, loo: bool = True) -> tuple[Verdict, StudyData]:
    """The default run's shape: 3 users, 5 seeds, base + pooled (+ the leave-one-out controls
    `loo:<user>` unless `loo=False`), documents, train log, manifest."""
    rng = np.random.default_rng(seed)
    data = simulate_study(rng, n_seeds=n_seeds, users=USERS, personalization=personalization,
                          controls=CONTROLS + (tuple(loo_name(u) for u in USERS) if loo else ()), seen=0.08)
    adapters = tuple(a for a in sorted(set(data.cells["adapter"].to_list())) if a != "base")
    data = dataclasses.replace(
        data, train_log=example_train_log(rng, data.seeds, adapters),
        manifest=example_manifest(data.users, data.seeds))
    prereg = Prereg()
    status = PreregStatus(locked, "cd" * 32 if locked else "ef" * 32,
                          "cd" * 32, "prereg.toml",
                          "matches manifest" if locked else "changed since the run")
    verdict = judge(data, prereg, rng=np.random.default_rng(seed + 1), n_resamples=n_resamples,
                    prereg_status=status)
    return verdict, data


def external_matrix(seed: int = 0) -> tuple[Verdict, StudyData]:
    """An external single-seed matrix given with --cells: no documents, no controls, no manifest."""
    rng = np.random.default_rng(seed)
    ppl = 16.0 + rng.normal(0, 0.3, size=(3, 3))
    ppl[np.arange(3), np.arange(3)] *= np.array([0.85, 0.97, 1.03])  # one clear, one weak, one inverted
    data = cells_from_matrix(ppl, USERS, USERS)
    verdict = judge(data, Prereg(), rng=np.random.default_rng(seed + 1))
    return verdict, data


def many_users_study(n_users: int = 50, seed: int = 0, n_seeds: int = 3, n_docs: int = 12,
                     n_resamples: int = 200, fit: bool = False) -> tuple[StudyVerdict, StudyData]:
    """A population-sized study: `n_users` users in 5 planted domain groups (so the matrix has a
    structure to order), per-user personalization drawn around 12% (a few users near 0), 3 seeds,
    base + pooled + `loo:<user>`, documents, train log and manifest; judged and with similarity.
    The population models are fitted; `validation.stats.mixed_model`'s seed-grouped model only with `fit=True`
    (statsmodels needs minutes for it at 50 users)."""
    from validation.exploratory.similarity import similarity_for_verdict

    rng = np.random.default_rng(seed)
    users = tuple(f"user{k:02d}" for k in range(n_users))
    pers = np.clip(rng.normal(0.12, 0.05, size=n_users), -0.02, None)
    data = simulate_study(rng, n_seeds=n_seeds, users=users, n_docs=n_docs, personalization=pers,
                          controls=CONTROLS + tuple(loo_name(u) for u in users),
                          groups=tuple(k % 5 for k in range(n_users)), group_penalty=0.08)
    adapters = tuple(a for a in sorted(set(data.cells["adapter"].to_list())) if a != "base")
    data = dataclasses.replace(data, train_log=example_train_log(rng, data.seeds, adapters, every=10),
                               manifest=example_manifest(data.users, data.seeds))
    status = PreregStatus(True, "cd" * 32, "cd" * 32, "prereg.toml", "matches manifest")
    verdict = judge(data, Prereg(), rng=np.random.default_rng(seed + 1), n_resamples=n_resamples,
                    prereg_status=status, fit=fit, fit_population=True)
    return StudyVerdict(verdict, similarity=similarity_for_verdict(verdict, data, None)), data


def seal_folder(run) -> None:
    """Give a hand-made run folder (cells, docs, manifest) the records the runner writes and seal it
    (common.seal), so tests of a pre-registered verdict need no real grid run: `config.json` (the
    manifest's config plus the prereg hash, seeds and users; its hash becomes the run id's suffix),
    each seed's own document table and `done.json`, then `seal.json`. A folder without a seal is
    judged NOT PRE-REGISTERED, and one with a seal but not these records is refused (docs/gate.md, 4)."""
    import json
    from pathlib import Path

    from common import seal as sealing
    from common.hashing import sha256_file, sha256_json

    run = Path(run)
    cells = pl.read_parquet(run / "cells.parquet")
    docs = pl.read_parquet(run / "docs.parquet")
    manifest = json.loads((run / "manifest.json").read_text())
    users = sorted(set(cells["eval"].to_list()))
    seeds = sorted(set(cells["seed"].to_list()))
    steps = sorted(set(cells["steps"].to_list())) if "steps" in cells.columns else []
    prereg = manifest.get("prereg") or {}
    config = {**(manifest.get("config") or {}), "prereg_sha256": prereg.get("sha256"), "seeds": seeds,
              "users": users}
    if steps:
        config["train"] = {**(config.get("train") or {}), "steps_list": steps}
    run_id = f"{run.name}-{sha256_json(config, 12)}"
    manifest.update(config=config, run_id=run_id)
    (run / "config.json").write_text(json.dumps(config))
    (run / "manifest.json").write_text(json.dumps(manifest))
    for seed in seeds:
        folder = run / "seeds" / f"seed-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        mine = docs.filter(pl.col("seed") == seed)
        mine.write_parquet(folder / "docs.parquet")
        status = lambda d: {a: st for a, st in d.filter(pl.col("adapter") != "base")  # noqa: E731
                            .group_by("adapter").agg(pl.col("status").first()).iter_rows()}
        record = {"seed": seed, "steps": steps, "statuses": status(mine),
                  "statuses_by_steps": {str(k): status(mine.filter(pl.col("steps") == k)) for k in steps},
                  "files": {f"seeds/seed-{seed}/docs.parquet": sha256_file(folder / "docs.parquet")}}
        (folder / "done.json").write_text(json.dumps(record))
    heldout = {u: docs.filter(pl.col("eval") == u)["doc_id"].cast(pl.Utf8).unique().sort().to_list() for u in users}
    facts = sealing.seal_facts(
        run_id=run_id, seeds=seeds, steps=steps, users=users,
        adapters=sorted(set(cells["adapter"].to_list()) - {"base"}), heldout=heldout,
        prereg_sha256=prereg.get("sha256"), prereg_settings=prereg.get("settings"))
    sealing.write_seal(run, facts)
