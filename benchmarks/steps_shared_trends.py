"""Issue 23's check of the step interaction against trends the seeds share: how often each test
rejects a true slope of 0. Run: `python benchmarks/steps_shared_trends.py [--studies 60]
[--cell-sd 0.003 | --doc-sd 0.0212] [--regime seed-dominated] [--seeds 3]`.

`--cell-sd`: an adapter x user x log2(steps) term (mean zero, shared by the seeds and by every
document of a user) added to `simulate_steps`'s tables; issue 23's own check. `--doc-sd`: the same
per adapter and held-out document (`SimParams.doc_trend_sd`), whose only replication is the
documents. 3 users x 50 documents, counts 25-400, seeds [23, i]; docs/methods.md, section 12."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import polars as pl

from validation.calibration.plan import regime_params
from validation.contract.prereg import Prereg
from validation.exploratory.steps import analyze_steps
from validation.simulation.steps import simulate_steps

STEPS = (25, 50, 100, 200, 400)


def with_cell_trends(cells: pl.DataFrame, docs: pl.DataFrame, sd: float, rng: np.random.Generator,
                     users, adapters) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add t[adapter, user] x (log2 steps - mean) to every trained row's log loss (cells and docs alike)."""
    x = np.log2(np.array(STEPS, float))
    xk = dict(zip(STEPS, x - x.mean(), strict=True))
    t = {(a, u): rng.normal(0, sd) for a in adapters if a != "base" for u in users}

    def add(df: pl.DataFrame) -> pl.DataFrame:
        extra = np.array([t.get((a, u), 0.0) * xk[k] for a, u, k in zip(df["adapter"], df["eval"], df["steps"],
                                                                        strict=True)])
        tok = df["n_tokens"].to_numpy()
        nll = df["nll_sum"].to_numpy() + extra * tok
        return df.with_columns(pl.Series("nll_sum", nll), pl.Series("logppl", nll / tok),
                               pl.Series("ppl", np.exp(nll / tok)),
                               pl.Series("bpb", nll / df["n_bytes"].to_numpy() / np.log(2)))
    return add(cells), add(docs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=60)
    ap.add_argument("--cell-sd", type=float, default=0.0)
    ap.add_argument("--doc-sd", type=float, default=0.0)
    ap.add_argument("--regime", default="seed-dominated")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--resamples", type=int, default=300)
    args = ap.parse_args()
    pr = Prereg()
    params = replace(regime_params(args.regime, users=3, n_docs=50), snapshot_sd=0.005, doc_trend_sd=args.doc_sd)
    wald = wald_user = slope = inter = users = 0
    for i in range(args.studies):
        rng = np.random.default_rng([23, i])
        st = simulate_steps(params, pr.lenient_margin, STEPS, args.seeds, rng, slopes=0.0)
        cells, docs = st.data.cells, st.data.docs
        if args.cell_sd > 0:
            cells, docs = with_cell_trends(cells, docs, args.cell_sd, rng, params.users, params.adapters)
        a = analyze_steps(cells, docs, pr, rng=rng, n_resamples=args.resamples, fit=True)
        wald += a.model.p_value < 1 - pr.confidence
        wald_user += sum(not e.ci.contains(0.0) for e in a.model.user_interactions)
        slope += sum(u.trend.direction in ("rises", "falls") for u in a.users)
        inter += a.interaction.direction in ("grows", "shrinks")
        users += len(a.users)
    print(f"{args.regime}, {args.seeds} seeds, cell-sd {args.cell_sd:g}, doc-sd {args.doc_sd:g}, {args.studies} "
          f"studies: overall Wald {wald}/{args.studies}, interaction test {inter}/{args.studies}; per user: Wald "
          f"{wald_user}/{users}, slope intervals {slope}/{users}")


if __name__ == "__main__":
    main()
