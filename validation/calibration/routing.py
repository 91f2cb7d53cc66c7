"""Calibration of the routing criteria ROUTING, AVERAGING and NOISE (docs/routing.md, issue 25).

`python -m validation.calibrate --study routing [--seeds 3,5] [--regime ...] [--docs 50]
[--experiments N] [--resamples B] [--rng-seed S] [--out DIR]` writes `calibration_routing.json`
and prints one table (the rows of `validation.calibration.figures.FigureRow`).

Every experiment is one study of `validation.simulation.simulate.simulate_experiment` (3 users, a
noise regime of `validation.calibration.plan.REGIMES`, every user's true margin far above the STRICT
bar) with the routing rows added as rows of the same model (`rows=`): `ens:<u>` for every user,
`avg:<a>+<b>` for every pair and `noise:<u>@<noise_sigma>` for every user, each a trained row with
seed, seed x adapter, cell, document x adapter and document noise terms of its own (the seed and
document terms shared with the other rows), whose expected cells are set so that each criterion's
figures have known true values (`planted_rows`):

- ROUTING: 1 - ppl(own) / ppl(`ens:<u>`) on u's text (`base` is far below the own adapter);
- AVERAGING: 1 - ppl(c's own) / ppl(`avg:<a>+<b>`) on contributor c's text;
- NOISE: 1 - ppl(`noise:<u>@<sigma>`) / ppl(best other user adapter) on u's text.

Two scenarios, judged by `validation.judge` (the verdict's own code path and interval method):
**boundary**, each criterion at its least-favourable boundary (one figure exactly at its bar,
`routing_margin`, `averaging_margin` or `strict_margin`, every other far above): a PASS is false,
target at most alpha / 2 = (1 - confidence) / 2 plus Monte Carlo error (2 se at the nominal rate);
**power**, every figure of every criterion `POWER_STEP` above its bar: the PASS rate, no target.
Beside them, the coverage of the at-bar figure's interval (target: the level). The three
criteria share each experiment (they read different figures).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

from common.contract import avg_name, ens_name, noise_name
from validation.calibration.figures import FigureRow, FiguresCalibration, _design, _rng, write_figures_calibration
from validation.calibration.plan import FAR_ABOVE, regime_params
from validation.contract.prereg import Prereg

SCHEMA = "normadapt-calibration-routing/1"
FILENAME = "calibration_routing.json"
POWER_STEP = 0.05          # the power scenario: every figure this far above its bar
CRITERIA = ("routing", "averaging", "noise")


@dataclass(frozen=True)
class RoutingTargets:
    """True figures of one scenario: per user the ROUTING and NOISE figures, per (pair, contributor)
    the AVERAGING figure (relative perplexity reductions)."""

    routing: tuple[float, ...]                       # own vs ens:<u>, per user
    averaging: dict[tuple[int, int, int], float]     # (a, b, contributor) -> own vs avg:a+b
    noise: tuple[float, ...]                         # noisy margin, per user
    margin: float                                    # every user's own margin


def targets(prereg: Prereg, n_users: int, scenario: str) -> RoutingTargets:
    """`boundary`: user 0's figures (and contributor 0 of pair (0, 1)) at the bars, the rest
    FAR_ABOVE them; `power`: every figure POWER_STEP above its bar."""
    if scenario not in ("boundary", "power"):
        raise ValueError(f"scenario must be `boundary` or `power`; got {scenario!r}")
    bars = {"routing": prereg.routing_margin, "averaging": prereg.averaging_margin, "noise": prereg.strict_margin}
    step = FAR_ABOVE if scenario == "boundary" else POWER_STEP

    def values(name: str, k: int) -> tuple[float, ...]:
        return tuple(bars[name] + (0.0 if scenario == "boundary" and i == 0 else step) for i in range(k))
    pairs = [(a, b, c) for a in range(n_users) for b in range(a + 1, n_users) for c in (a, b)]
    avg = dict(zip(pairs, values("averaging", len(pairs)), strict=True))
    return RoutingTargets(values("routing", n_users), avg, values("noise", n_users),
                          prereg.strict_margin + FAR_ABOVE)


def planted_rows(users: tuple[str, ...], sigma: float, t: RoutingTargets):
    """The `rows` callable of `simulate_experiment`: expected cells (J,) of every routing row, from
    the study's expected cells E (A, J; users first, then `base`, `pooled`) and the targets. Off the
    figures' columns: `ens:` and `avg:` rows as `pooled`, a noisy adapter as its user's own row."""
    J = len(users)

    def rows(E: np.ndarray) -> dict[str, np.ndarray]:
        pooled = E[J + 1]
        out: dict[str, np.ndarray] = {}
        for j, u in enumerate(users):
            r = pooled.copy()
            r[j] = E[j, j] - math.log1p(-t.routing[j])
            out[ens_name(u)] = r
        for (a, b, c), v in t.averaging.items():
            r = out.setdefault(avg_name(users[a], users[b]), pooled.copy())
            r[c] = E[c, c] - math.log1p(-v)
        for j, u in enumerate(users):
            r = E[j].copy()
            others = np.delete(E[:J, j], j)
            r[j] = others.min() + math.log1p(-t.noise[j])
            out[noise_name(u, sigma)] = r
        return out
    return rows


def true_figures(E: np.ndarray, adapters: tuple[str, ...], users: tuple[str, ...], sigma: float) -> dict:
    """The at-bar figures recomputed from the expected cells (a check of `planted_rows`):
    {"routing": user 0 vs ens, "averaging": contributor 0 of pair (0, 1), "noise": user 0's noisy margin}."""
    row = {a: k for k, a in enumerate(adapters)}
    J = len(users)
    return {"routing": 1 - math.exp(E[0, 0] - E[row[ens_name(users[0])], 0]),
            "averaging": 1 - math.exp(E[0, 0] - E[row[avg_name(users[0], users[1])], 0]),
            "noise": 1 - math.exp(E[row[noise_name(users[0], sigma)], 0] - E[1:J, 0].min())}


def _at_bar_intervals(v, users: tuple[str, ...], prereg: Prereg) -> dict:
    """The verdict's intervals of the at-bar figures (as in `true_figures`)."""
    r = v.routing
    ens = next(c for c in r.generic if c.user == users[0] and c.against == ens_name(users[0]))
    pair = next(p for p in r.pairs if (p.a, p.b) == (users[0], users[1]))
    noise = next(c for c in r.curve if c.user == users[0] and c.row == noise_name(users[0], prereg.noise_sigma))
    return {"routing": ens.ci, "averaging": pair.own_vs_average[0].ci, "noise": noise.ci}


def routing_rows(prereg: Prereg, *, n_seeds: int, regime: str, n_docs: int, n_experiments: int,
                 n_resamples: int, rng_seed: int) -> list[FigureRow]:
    """Per criterion: false PASS at the boundary, the at-bar figure's coverage, and power."""
    from validation.judgment.study import judge
    from validation.simulation.simulate import simulate_experiment
    params = regime_params(regime, users=3, n_docs=n_docs)
    design = _design(n_seeds, params, regime)
    alpha2 = (1 - prereg.confidence) / 2
    out: list[FigureRow] = []
    for k, scenario in enumerate(("boundary", "power")):
        t = targets(prereg, len(params.users), scenario)
        rows = planted_rows(params.users, prereg.noise_sigma, t)
        status = {c: [] for c in CRITERIA}
        covered = {c: 0 for c in CRITERIA}
        for i in range(n_experiments):
            rng = _rng(rng_seed, 25, n_seeds, n_docs, k, i)
            study = simulate_experiment(params, t.margin, n_seeds, rng, rows=rows)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v = judge(study.data, prereg, rng=rng, n_resamples=n_resamples, fit=False)
            for c in v.routing.criteria:
                status[c.name].append(c.status_text)
            if scenario == "boundary":
                names = params.adapters + tuple(rows(study.truth.expected[:len(params.adapters)]))
                truth = true_figures(study.truth.expected, names, params.users, prereg.noise_sigma)
                for c, ci in _at_bar_intervals(v, params.users, prereg).items():
                    covered[c] += bool(ci.contains(truth[c]))
        for c in CRITERIA:
            st = status[c]
            shares = (f"fail {st.count('FAIL') / len(st):.3f}, inconclusive "
                      f"{st.count('INCONCLUSIVE') / len(st):.3f}, n/a {st.count('NOT_APPLICABLE') / len(st):.3f}")
            if scenario == "boundary":
                out.append(FigureRow(f"{c.upper()}: false PASS at the least-favourable boundary", design,
                                     st.count("PASS") / len(st), len(st), alpha2, "false positive", shares))
                out.append(FigureRow(f"{c.upper()}: coverage of the at-bar figure", design,
                                     covered[c] / n_experiments, n_experiments, prereg.confidence, "coverage"))
            else:
                out.append(FigureRow(f"{c.upper()}: power, every figure {POWER_STEP:.0%} above the bar", design,
                                     st.count("PASS") / len(st), len(st), math.nan, "power", shares))
    return out


def calibrate_routing(prereg: Prereg | None = None, *, seeds: tuple[int, ...] = (3, 5), n_docs: int = 50,
                      regimes: tuple[str, ...] = ("seed-dominated", "document-dominated", "mixed"),
                      n_experiments: int = 200, n_resamples: int = 500, rng_seed: int = 0,
                      progress=None) -> FiguresCalibration:
    """Every row of the module doc, per regime and number of seeds; deterministic given `rng_seed`."""
    prereg = Prereg() if prereg is None else prereg
    t0 = time.perf_counter()
    rows: list[FigureRow] = []
    for regime in regimes:
        for S in seeds:
            rows += routing_rows(prereg, n_seeds=S, regime=regime, n_docs=n_docs, n_experiments=n_experiments,
                                 n_resamples=n_resamples, rng_seed=rng_seed)
            if progress is not None:
                progress(f"{regime}, {S} seeds")
    settings = {"seeds": list(seeds), "n_docs": n_docs, "regimes": list(regimes), "n_experiments": n_experiments,
                "n_resamples": n_resamples, "rng_seed": rng_seed, "interval_method": prereg.interval_method,
                "confidence": prereg.confidence, "routing_margin": prereg.routing_margin,
                "averaging_margin": prereg.averaging_margin, "strict_margin": prereg.strict_margin,
                "noise_sigma": prereg.noise_sigma, "power_step": POWER_STEP, "far_above": FAR_ABOVE}
    return FiguresCalibration(tuple(rows), settings, round(time.perf_counter() - t0, 1), SCHEMA)


def pooled_lines(res: FiguresCalibration) -> list[str]:
    """Per criterion, the boundary's false PASS pooled over every design (count / experiments)
    against alpha / 2 + 2 se at that count."""
    from validation.calibration.results import binomial_se
    lines = []
    for c in CRITERIA:
        fp = [r for r in res.rows if r.kind == "false positive" and r.figure.startswith(c.upper() + ":")]
        if not fp:
            continue
        k, n = sum(round(r.value * r.n) for r in fp), sum(r.n for r in fp)
        limit = fp[0].nominal + 2 * binomial_se(fp[0].nominal, n)
        lines.append(f"{c.upper()}: false PASS at the least-favourable boundary, pooled over {len(fp)} design(s): "
                     f"{k}/{n} = {k / n:.4f} (limit {limit:.4f}: {'within' if k / n <= limit else 'ABOVE'})")
    return lines


def write_routing_calibration(res: FiguresCalibration, out_dir) -> object:
    return write_figures_calibration(res, out_dir, FILENAME)
