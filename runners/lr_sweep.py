"""`python -m runners.lr_sweep`: the small learning-rate sweep behind `TrainConfig.lr`.

For each learning rate, train the user adapters and `pooled` (one batched loop, the grid's own
code) for the default steps and seeds, and report, averaged over users and seeds: the held-out
perplexity of each user's own adapter and of `pooled`, relative to the base, the diagonal margin
(own adapter vs the best other one, docs/methods.md) and the count of non-ok adapters. The results table
is what docs/lr_sweep.md quotes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np
import polars as pl
import torch

from common.contract import BASE, OK, POOLED
from runners.base_model import PRETRAIN_PRESETS, load_or_pretrain
from runners.execute import prepare, train_and_score
from runners.settings import load_fixtures
from runners.model import PRESETS
from runners.rundir import cells_from_docs
from runners.train import TrainConfig

log = logging.getLogger("runners.lr_sweep")
DEFAULT_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def sweep_row(cells: pl.DataFrame, lr: float) -> dict:
    """Summary of one learning rate from cells (seed, adapter, eval, ppl, status)."""
    users = sorted(set(cells["eval"]))
    base = {r["eval"]: r["ppl"] for r in cells.filter(pl.col("adapter") == BASE).iter_rows(named=True)}
    own, pooled, margin = [], [], []
    for seed in sorted(set(cells["seed"])):
        c = cells.filter(pl.col("seed") == seed)
        ppl = {(r["adapter"], r["eval"]): r["ppl"] for r in c.iter_rows(named=True)}
        for j in users:
            own.append(ppl[(j, j)] / base[j])
            pooled.append(ppl[(POOLED, j)] / base[j])
            others = [ppl[(i, j)] for i in users if i != j]
            if others:
                margin.append(1 - ppl[(j, j)] / min(others))
    bad = cells.filter((pl.col("status") != OK) & (pl.col("adapter") != BASE))
    return {"lr": lr, "own_vs_base": float(np.mean(own)), "pooled_vs_base": float(np.mean(pooled)),
            "diag_margin": float(np.mean(margin)) if margin else float("nan"),
            "non_ok_adapters": bad.select(["seed", "adapter"]).unique().height}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runners.lr_sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--fixture-set", default="classics")
    p.add_argument("--fixtures", type=int, default=3)
    p.add_argument("--preset", default="cpu", choices=list(PRESETS))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lrs", default=",".join(str(x) for x in DEFAULT_LRS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(os.cpu_count() or 1)
    fs = load_fixtures(args.fixture_set, args.fixtures, {})
    base = load_or_pretrain(PRESETS[args.preset], PRETRAIN_PRESETS[args.preset], fs.pretrain, fs.pretrain_sha256())
    prep = prepare(base.model, fs, "cpu")
    rows = []
    for lr in (float(x) for x in args.lrs.split(",")):
        t0 = time.perf_counter()
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=lr)
        docs = pl.concat([train_and_score(seed, base.model, prep, cfg, "cpu").docs for seed in range(args.seeds)])
        rows.append(sweep_row(cells_from_docs(docs), lr) | {"seconds": time.perf_counter() - t0})
        log.info("%s", rows[-1])
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=50, float_precision=4):
        print(f"fixture set {fs.name}, preset {args.preset}, {args.seeds} seeds, {args.steps} steps, "
              f"batch {args.batch_size}; ratios and margins are plain means over users and seeds")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
