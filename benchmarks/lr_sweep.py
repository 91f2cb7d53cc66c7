"""`python benchmarks/lr_sweep.py`: the small learning-rate sweep behind `TrainConfig.lr`.

For each learning rate, train the user adapters and `pooled` (one batched loop, the grid's own
code, `runners.execution.execute.train_and_score`) for the default steps and seeds, then score the cells
with the verdict's own code (`validation.judge`, point estimates): per cell the geometric mean of
perplexity over seeds, then over users the geometric mean of `own / base` and `pooled / base`,
the mean diagonal margin (own adapter vs the best other one, docs/methods.md) and the count of
non-ok adapters. The results table is what docs/lr_sweep.md quotes. It lives in benchmarks/
because it spans the runner and the validation layer, which never import each other.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from common.contract import BASE, OK, POOLED  # noqa: E402
from runners.base_model import PRETRAIN_PRESETS, load_or_pretrain  # noqa: E402
from runners.execution.execute import prepare, train_and_score  # noqa: E402
from runners.model import PRESETS  # noqa: E402
from runners.rundir import cells_from_docs  # noqa: E402
from runners.settings import load_fixtures  # noqa: E402
from runners.train import TrainConfig  # noqa: E402
from validation import StudyData, judge, normalize_cells  # noqa: E402

log = logging.getLogger("lr_sweep")
DEFAULT_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def sweep_row(cells: pl.DataFrame, lr: float, docs: pl.DataFrame | None = None) -> dict:
    """Summary of one learning rate, scored by `validation.judge` (point estimates only). `docs`:
    the per-document rows, so that one seed is judged too (the verdict refuses one seed without
    them: nothing to resample)."""
    data = StudyData(cells=normalize_cells(cells.drop("steps", strict=False), "<lr sweep>"),
                     docs=None if docs is None else docs.drop("steps", strict=False))
    v = judge(data, rng=np.random.default_rng(0), n_resamples=2, fit=False)
    m = {(r["adapter"], r["eval"]): r["log_ppl"] for r in v.matrix.iter_rows(named=True)}
    users = [u.user for u in v.users]
    own = [m[(j, j)] - m[(BASE, j)] for j in users]
    pooled = [m[(POOLED, j)] - m[(BASE, j)] for j in users]
    bad = cells.filter((pl.col("status") != OK) & (pl.col("adapter") != BASE))
    return {"lr": lr, "own_vs_base": float(np.exp(np.mean(own))), "pooled_vs_base": float(np.exp(np.mean(pooled))),
            "diag_margin": float(np.mean([u.margin for u in v.users])),
            "non_ok_adapters": bad.select(["seed", "adapter"]).unique().height}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/lr_sweep.py", description=__doc__.split("\n\n")[0])
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
        rows.append(sweep_row(cells_from_docs(docs), lr, docs) | {"seconds": time.perf_counter() - t0})
        log.info("%s", rows[-1])
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=50, float_precision=4):
        print(f"fixture set {fs.name}, preset {args.preset}, {args.seeds} seeds, {args.steps} steps, "
              f"batch {args.batch_size}; ratios are geometric means over seeds and users, margins the "
              "verdict's per-user point estimates averaged over users")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
