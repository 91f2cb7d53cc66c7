"""`judge`: study data + pre-registration -> Verdict. Pure: no file I/O, one explicit Generator."""

from __future__ import annotations

import math
import warnings as _warnings

import numpy as np
import polars as pl

from common.contract import BASE, POOLED
from validation.contract.prereg import Prereg
from validation.contract.status import PreregStatus
from validation.inputs.arrays import StudyArrays, build_arrays
from validation.inputs.study import StudyData
from validation.judgment import criteria as crit
from validation.judgment.decomposition import decompose
from validation.judgment.population import population_stats
from validation.judgment.results import BootstrapInfo, Verdict
from validation.judgment.routing import routing_stats
from validation.judgment.user_results import UserResult
from validation.stats import metrics
from validation.stats.bootstrap import Resampled, bootstrap_mode, draw_weights
from validation.stats.design import IntervalDesign
from validation.stats.intervals import (
    MIN_TAIL_DRAWS,
    expanded_fallback,
    no_variance,
    study_regime,
    variance_shares,
)
from validation.stats.mixed_model import fit_model
from validation.stats.types import BootstrapMode, Interval


def _judge_iv(prereg: Prereg, rng: np.random.Generator, n_resamples: int | None) -> int:
    if not isinstance(prereg, Prereg):
        raise ValueError(f"`prereg` must be a validation.Prereg; got {type(prereg).__name__}.")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"`rng` must be a numpy.random.Generator; got {type(rng).__name__}.")
    n = prereg.n_resamples if n_resamples is None else n_resamples
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n_resamples` must be a positive integer; got {n!r}.")
    return int(n)


def _rng_seed(rng: np.random.Generator) -> int | None:
    entropy = getattr(getattr(rng.bit_generator, "seed_seq", None), "entropy", None)
    return int(entropy) if isinstance(entropy, (int, np.integer)) else None


SEEN_SHARE_MAX_SEED_SHARE = 0.10   # above it the seen-user shares are labelled descriptive (docs/calibration.md)


def seeds_regime(regime) -> str:
    """The study's regime in words where seeds carry more than SEEN_SHARE_MAX_SEED_SHARE of the
    margins' variance (or it is unknown), for the seen-user share's label
    (validation.judgment.decomposition); "" where the documents carry nearly all of it. Measured: at 3 seeds
    the shares a study with a seed share of 0.09-0.33 showed unlabelled covered 0.87 among
    themselves where pooled barely beats base (the rule selects on the seed variance's estimate);
    document-dominated studies estimate 0.000-0.004."""
    if regime is None or (math.isfinite(regime.seed_share) and regime.seed_share <= SEEN_SHARE_MAX_SEED_SHARE):
        return ""
    share = "n/a" if not math.isfinite(regime.seed_share) else f"{regime.seed_share:.2f}"
    return f"{regime.label}, estimated seed share {share}"


def judge(
    data: StudyData,
    prereg: Prereg | None = None,
    *,
    rng: np.random.Generator,
    n_resamples: int | None = None,
    fit: bool = True,
    prereg_status: PreregStatus | None = None,
    interval_method: str | None = None,
    fit_population: bool | None = None,
    resampled: Resampled | None = None,
) -> Verdict:
    """Compute every quantity, interval, criterion and the gate for one study.

    `data.cells` must be normalized (`validation.inputs.tables.normalize_cells`); structural errors raise
    `validation.inputs.tables.InputError`. `n_resamples` overrides the pre-registered number (e.g. small
    for calibration loops); `fit=False` skips the mixed model (`Verdict.model` is None) and, unless
    `fit_population=True`, the population models (`validation.judgment.population`).
    `prereg_status` comes from `validation.contract.prereg_check.check_prereg`; None = NOT PRE-REGISTERED
    (not checked). `resampled`: this study's arrays and bootstrap already made (`Resampled.of`, with
    `n_resamples` draws; `validation.judgment.steps.resample_counts`), used instead of drawing from `rng`
    (whose seed is still reported). Cost: about B * sum_j n_j * S * A multiply-adds plus the model fit.
    """
    prereg = Prereg() if prereg is None else prereg
    B = _judge_iv(prereg, rng, n_resamples)
    method = interval_method or prereg.interval_method
    arrays = build_arrays(data) if resampled is None else resampled.arrays
    warnings = list(arrays.warnings)
    mode = bootstrap_mode(arrays)
    if mode is BootstrapMode.NONE:
        warnings.append(NO_INTERVAL_NOTE.format(who="one seed and no per-document data: nothing"))
    elif mode is not BootstrapMode.HIERARCHICAL:
        warnings.append(f"degraded bootstrap ({mode.value}): "
                        + ("no per-document data, only seeds are resampled" if mode is BootstrapMode.SEEDS_ONLY
                           else "one seed, only documents are resampled; seed-to-seed variation is not captured"))
    if resampled is None:
        resampled = Resampled.of(arrays, draw_weights(arrays, B, rng))
    elif mode is not BootstrapMode.NONE and resampled.draws.shape[0] != B:
        raise ValueError(f"`resampled` holds {resampled.draws.shape[0]} resamples; `n_resamples` is {B}.")
    weights = resampled.weights  # the routing rows are resampled with the same draws (paired)
    draws = resampled.draws                                              # (B, A, J)
    design = IntervalDesign.of(arrays, method, prereg.confidence)        # every interval's design
    n_seeds, n_docs, doc_df = design.n_seeds, design.n_docs, design.doc_df
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)  # a cell missing in every seed stays NaN
        point = np.nanmean(arrays.logppl, axis=0)                        # (A, J)
    users = _user_results(arrays, point, draws, prereg, design)
    bare = _unreplicated(users, prereg, n_docs) if mode is not BootstrapMode.NONE else []
    if bare:   # no interval for them: every draw of their column undefined (NaN), read as unknown
        draws = draws.copy()
        draws[:, :, bare] = np.nan
        users = _user_results(arrays, point, draws, prereg, design)
        warnings.append(NO_INTERVAL_NOTE.format(who=f"for {[arrays.users[j] for j in bare]}, fewer than 2 seeds "
                                                    "with a finite margin and fewer than 2 held-out documents: "
                                                    "nothing"))

    warnings += interval_notes(users, method, prereg.confidence, n_seeds, n_docs)
    if prereg.comparator == "worst_other":
        warnings.append("comparator is worst_other (anti-conservative): the criteria compare each "
                        "user with the WEAKEST other adapter")
    criteria = crit.read_criteria(users, prereg, method=method, n_seeds=n_seeds, n_docs=n_docs, doc_df=doc_df)
    model = None
    if fit:
        model = fit_model(arrays, prereg.confidence)
        warnings += [f"model: {w}" for w in model.warnings]
    if POOLED not in arrays.adapters:
        warnings.append("no `pooled` control: personalization and regularization gains not computed")
    if BASE not in arrays.adapters:
        warnings.append("no `base` control: regularization and total gains not computed")
    regime = None if mode is BootstrapMode.NONE else study_regime(
        [variance_shares(u.draws_margin, u.seed_margins, None if n_docs is None else n_docs[j])
         for j, u in enumerate(users)])
    decomposition = decompose(arrays, point, draws, lambda dr, pt, sv, j: design.interval(dr, pt, j, sv),
                              prereg.confidence, seeds_regime=seeds_regime(regime))
    if not decomposition:
        warnings.append("no leave-one-out controls (`loo:<user>`): pooled's gain cannot be split into what a "
                        "new user gets and what comes from having seen the user; personalization is measured "
                        "against `pooled` only, which saw each user's text")
    if prereg_status is None:
        prereg_status = PreregStatus(False, prereg.sha256, None, prereg.path, "not checked")
    population = population_stats(arrays, users, decomposition, prereg, crit.margin_intervals(
        users, prereg, prereg.confidence, method=method, n_seeds=n_seeds, n_docs=n_docs, doc_df=doc_df),
        fit=fit if fit_population is None else fit_population)
    warnings += [f"population: {n}" for n in population.notes]
    routing = routing_stats(data, weights, users, prereg, method=method, n_docs=n_docs, doc_df=doc_df,
                            bare=tuple(bare))
    gate = crit.gate(prereg, criteria, users, arrays.problems, population, routing)
    info = BootstrapInfo(mode, 0 if mode is BootstrapMode.NONE else B, prereg.confidence,
                         _rng_seed(rng), method, len(arrays.seeds),
                         () if n_docs is None else tuple(zip(arrays.users, n_docs, strict=True)), regime)
    return Verdict(users, criteria, model, info, gate, prereg_status, tuple(warnings),
                   prereg.comparator, arrays.seeds, prereg, _matrix(arrays, point),
                   decomposition=decomposition, population=population, routing=routing)


def interval_notes(users, method: str, level: float, n_seeds: int, n_docs: tuple[int, ...] | None) -> list[str]:
    """Issue 23: say where an interval is not what its method name promises. A margin whose draws
    are all one number has no interval (`validation.stats.intervals.no_variance`); `expanded-percentile`
    whose tail the draws cannot resolve is read as the t(nu) interval (`expanded_fallback`); a user
    with fewer finite seeds than the study has its intervals on that user's own seed count."""
    out = []
    if n_seeds == 2 and method == "share-blend":
        out.append("2 seeds: the seed level's variance rests on 1 df, so share-blend reads it with the 2-seed "
                   "correction (Cochran-Cox with the seed share w read as w^0.7; docs/methods.md section 6): "
                   "wide intervals, calibrated in docs/calibration.md; 3 or more seeds give far narrower ones")
    flat = [u.user for u in users if np.isfinite(u.draws_margin).sum() >= 2 and no_variance(u.draws_margin)]
    if flat:
        out.append(f"for {flat} every bootstrap draw of the margin is the same number (no variance: e.g. identical "
                   "seeds and no per-document data): no interval, read as unknown, never as a zero-width certainty")
    if method == "expanded-percentile":
        fell = [u.user for j, u in enumerate(users)
                if expanded_fallback(u.draws_margin, u.seed_margins, n_seeds, None if n_docs is None else n_docs[j],
                                     level)]
        if fell:
            out.append(f"expanded-percentile for {fell}: the tail it reads is beyond what "
                       f"{users[0].draws_margin.size} draws resolve (fewer than {MIN_TAIL_DRAWS} draws beyond "
                       "each end; 3 seeds ask for ~1e-7), so those intervals are the t(nu) intervals it stands for "
                       "(`satterthwaite`), not percentiles of the draws")
    short = {u.user: int(np.sum(np.isfinite(u.seed_margins))) for u in users}
    short = {k: m for k, m in short.items() if 0 < m < n_seeds}
    if short:
        out.append(f"fewer finite seeds than the study's {n_seeds} (a diverged or missing cell): "
                   + ", ".join(f"{k} {m}" for k, m in short.items())
                   + "; their intervals use their own seed counts (wider), not the study's")
    return out


NO_INTERVAL_NOTE = ("{who} can be resampled, so there is no interval: every reading that needs one is "
                    "INCONCLUSIVE (the point readings are shown beside it); run 2 or more seeds, or pass the "
                    "per-document table")


def _unreplicated(users, prereg: Prereg, n_docs: tuple[int, ...] | None) -> list[int]:
    """The columns with nothing to resample: a user whose margin is finite in fewer than two seeds
    (one seed, or cells missing or diverged in the others) and who has fewer than two held-out
    documents. Their bootstrap would repeat one number, so its interval would collapse onto the
    point estimate and a single noisy margin would read as certain."""
    worst = prereg.comparator == "worst_other"
    return [j for j, u in enumerate(users)
            if int(np.sum(np.isfinite(u.seed_worst_other_margins if worst else u.seed_margins))) < 2
            and (n_docs is None or n_docs[j] < 2)]


def _matrix(arrays: StudyArrays, point: np.ndarray) -> pl.DataFrame:
    """point (A, J) mean log ppl -> tidy `adapter, eval, ppl, log_ppl, n_seeds`."""
    A, J = point.shape
    a, j = np.meshgrid(np.arange(A), np.arange(J), indexing="ij")
    return pl.DataFrame({
        "adapter": [arrays.adapters[k] for k in a.ravel()],
        "eval": [arrays.users[k] for k in j.ravel()],
        "ppl": np.exp(point).ravel(),
        "log_ppl": point.ravel(),
        "n_seeds": np.isfinite(arrays.logppl).sum(0).ravel().astype(np.int64),
    })


def _user_results(arrays: StudyArrays, point: np.ndarray, draws: np.ndarray, prereg: Prereg,
                  design: IntervalDesign) -> tuple[UserResult, ...]:
    """point (A, J), draws (B, A, J) -> one UserResult per column."""
    pooled, base = arrays.pooled, arrays.base
    def stats(x: np.ndarray) -> dict[str, np.ndarray]:
        lead = x.shape[:-2] + (x.shape[-1],)
        none = np.full(lead, np.nan)
        return {
            "margin": metrics.diagonal_margin(x),
            "worst": metrics.worst_other_margin(x),
            "pers": metrics.personalization_gain(x, pooled) if pooled is not None else none,
            "reg": metrics.regularization_gain(x, pooled, base) if None not in (pooled, base) else none,
            "total": metrics.total_gain(x, base) if base is not None else none,
        }

    with np.errstate(invalid="ignore"), _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices = missing cells
        p, d, per_seed = stats(point), stats(draws), stats(arrays.logppl)
    best, worst = metrics.best_other_index(point), metrics.worst_other_index(point)
    seed_best = metrics.best_other_index(np.where(np.isnan(arrays.logppl), np.inf, arrays.logppl))

    def iv(key: str, j: int, level: float) -> Interval:
        return design.interval(d[key][:, j], p[key][j], j, per_seed[key][:, j], level=level)

    out = []
    for j, user in enumerate(arrays.users):
        ci = iv("margin", j, prereg.confidence)
        has = {"pers": pooled is not None, "reg": None not in (pooled, base), "total": base is not None}
        out.append(UserResult(
            user=user,
            margin=float(p["margin"][j]),
            ci=ci,
            best_other=arrays.users[best[j]],
            worst_other=arrays.users[worst[j]],
            worst_other_margin=float(p["worst"][j]),
            inverted=bool(ci.high < 0) if ci.known else None,   # unknown without an interval
            personalization_gain=float(p["pers"][j]),
            regularization_gain=float(p["reg"][j]),
            total_gain=float(p["total"][j]),
            personalization_ci=iv("pers", j, prereg.confidence) if has["pers"] else None,
            regularization_ci=iv("reg", j, prereg.confidence) if has["reg"] else None,
            total_ci=iv("total", j, prereg.confidence) if has["total"] else None,
            equivalence_ci=iv("margin", j, prereg.equivalence_level),
            seeds=arrays.seeds,
            seed_margins=per_seed["margin"][:, j].copy(),
            seed_best_other=tuple(arrays.users[k] for k in seed_best[:, j]),
            diagonal_ppl=float(np.exp(point[j, j])),
            best_other_ppl=float(np.exp(point[best[j], j])),
            draws_margin=d["margin"][:, j].copy(),
            draws_worst_other_margin=d["worst"][:, j].copy(),
            draws_personalization=d["pers"][:, j].copy() if has["pers"] else np.empty(0),
            draws_regularization=d["reg"][:, j].copy() if has["reg"] else np.empty(0),
            draws_total=d["total"][:, j].copy() if has["total"] else np.empty(0),
            seed_worst_other_margins=per_seed["worst"][:, j].copy(),
            seed_personalization=per_seed["pers"][:, j].copy(),
            seed_regularization=per_seed["reg"][:, j].copy(),
            seed_total=per_seed["total"][:, j].copy(),
        ))
    return tuple(out)
