"""The decomposition base -> loo:j -> pooled -> own j of each user's gain (docs/methods.md, section 4).

`pooled` was trained on every user's text, including user j's, so on column j its gain over the
base (the "regularization gain") contains some personalization to j. The leave-one-out control
`loo:j`, trained on every OTHER user's text, is the generic adapter a new user j would get. Per
column j, with ppl read from the matrix of geometric means over seeds:

    new_user       base   -> loo:j    1 - ppl[loo:j] / ppl[base]    what a user without an adapter gets
    seen_user      loo:j  -> pooled   1 - ppl[pooled] / ppl[loo:j]  what pooled gains from having seen j
    pooled_to_own  pooled -> own j    1 - ppl[j] / ppl[pooled]      the personalization gain vs pooled
and the summaries loo_to_own (loo:j -> own j), base_to_pooled and total (base -> own j). In logs
the chain adds up: log(1 - total) = sum over the three steps of log(1 - step).

Every figure gets its interval from the same bootstrap draws as the other gains (the caller passes
the interval function), and per-seed values. Pure: no I/O, no randomness of its own.
"""

from __future__ import annotations

import math
import warnings as _warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import stats

from common.contract import BASE, POOLED, loo_name
from validation.inputs.arrays import StudyArrays
from validation.judgment.user_results import Decomposition, GainStep
from validation.stats import metrics
from validation.stats.selective import selective_ratio_interval
from validation.stats.types import Interval, signed_pct

# (draws (B,), point, per-seed values (S,), column j) -> interval, as for every other gain
IntervalFn = Callable[[np.ndarray, float, np.ndarray, int], Interval]

# key -> (from row, to row) with "loo" and "own" standing for loo:<user> and the user's adapter
STEPS: tuple[tuple[str, str, str], ...] = (
    ("new_user", BASE, "loo"),
    ("seen_user", "loo", POOLED),
    ("pooled_to_own", POOLED, "own"),
    ("loo_to_own", "loo", "own"),
    ("base_to_pooled", BASE, POOLED),
    ("total", BASE, "own"),
)


def _rows(arrays: StudyArrays) -> dict[str, np.ndarray | int | None]:
    J = len(arrays.users)
    return {BASE: arrays.base, POOLED: arrays.pooled, "loo": arrays.loo, "own": np.arange(J)}


def _read(x: np.ndarray, row) -> np.ndarray:
    """(..., A, J) at one row (an int) or one row per column (a (J,) vector) -> (..., J)."""
    return x[..., row, :] if isinstance(row, (int, np.integer)) else metrics.per_column(x, row)


def _gain(x: np.ndarray, rows: dict, frm: str, to: str) -> np.ndarray:
    return metrics.ratio_gain(_read(x, rows[to]), _read(x, rows[frm]))


def seen_share(base_to_pooled: float, seen_user: float) -> float | None:
    """Fraction of pooled's gain over base (in log perplexity) that came from having seen the user:
    log(ppl[loo:j] / ppl[pooled]) / log(ppl[base] / ppl[pooled]); None unless pooled beats base."""
    if not (math.isfinite(base_to_pooled) and math.isfinite(seen_user)) or base_to_pooled <= 0:
        return None
    return math.log1p(-seen_user) / math.log1p(-base_to_pooled)


def decompose(arrays: StudyArrays, point: np.ndarray, draws: np.ndarray,
              interval: IntervalFn, level: float = 0.95, seeds_regime: str = "") -> tuple[Decomposition, ...]:
    """point (A, J) and draws (B, A, J) of mean log ppl -> one Decomposition per user; () without
    leave-one-out controls. Steps whose control (`base`, `pooled`) is absent are left out."""
    rows = _rows(arrays)
    if rows["loo"] is None:
        return ()
    keys = [(k, f, t) for k, f, t in STEPS if rows[f] is not None and rows[t] is not None]
    with np.errstate(invalid="ignore"), _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN = missing cells
        p = {k: _gain(point, rows, f, t) for k, f, t in keys}
        d = {k: _gain(draws, rows, f, t) for k, f, t in keys}
        per_seed = {k: _gain(arrays.logppl, rows, f, t) for k, f, t in keys}
    out = []
    for j, user in enumerate(arrays.users):
        names = {BASE: BASE, POOLED: POOLED, "loo": loo_name(user), "own": user}
        steps = tuple(GainStep(
            key=k, from_row=names[f], to_row=names[t], gain=float(p[k][j]),
            ci=interval(d[k][:, j], float(p[k][j]), per_seed[k][:, j], j),
            draws=d[k][:, j].copy(), seed_gains=per_seed[k][:, j].copy()) for k, f, t in keys)
        by = {s.key: s for s in steps}
        reading = (seen_share_reading(by["base_to_pooled"], by["seen_user"], interval, j, level,
                                      seeds_regime)
                   if "base_to_pooled" in by and "seen_user" in by else SeenShareReading(None, None, None, ""))
        out.append(Decomposition(user, steps, reading.share, describe(user, by, reading.share, reading),
                                 reading.ci, reading.point, reading.note))
    return tuple(out)


class SeenShareReading(NamedTuple):
    """The seen-user share as shown: `share` (None where undefined), its interval, the bare ratio
    `point` (None unless pooled beats base on the point) and, where undefined, why."""

    share: float | None
    ci: Interval | None
    point: float | None
    note: str


def seen_share_reading(pooled: GainStep, seen: GainStep, interval: IntervalFn, j: int,
                       level: float = 0.95, seeds_regime: str = "") -> SeenShareReading:
    """Issue 23, item 3: the share of pooled's gain over base that came from having seen the user,
    a ratio r = N / D of two noisy log gains (N: loo:j -> pooled, D: base -> pooled), shown only
    where D is clearly above zero: D / sd(D) > c, c the verdict's interval method's critical value
    (read off its interval on the delta-method draws, the same bootstrap draws as every other
    figure), i.e. where the share's Fieller set is bounded (else D may be 0 or negative: +0.2%
    [-0.4, +0.8] with seen +0.6% would read 301%). A share shown is biased by that rule (D came out
    high as often as not where it is small), so its interval is the one valid among the shown
    (`validation.stats.selective.selective_ratio_interval`): Fieller's where D is large, wider, and
    unbounded on a side, where D is near the rule's threshold; the share is then labelled
    descriptive only, its interval reported as it is (docs/calibration.md). `seeds_regime` (the
    study's regime in words, e.g. "mixed, estimated seed share 0.45"; empty where seeds carry at
    most a tenth of the variance, `validation.judgment.study.seeds_regime`) labels every shown share
    descriptive: where seeds carry the variance, the rule also selects on the variance's estimate
    from few seeds, which the interval does not model."""
    point = seen_share(pooled.gain, seen.gain)
    if point is None:
        return SeenShareReading(None, None, None, f"pooled does not beat base ({_fig(pooled)}): no share of its gain")
    if not _has_ci(pooled):
        return SeenShareReading(None, None, point, "no interval for pooled's gain over base: the share of it is "
                                                   "not defined")
    d0 = -math.log1p(-pooled.gain)
    with np.errstate(invalid="ignore", divide="ignore"):
        def lin(pooled_g, seen_g):
            n, d = -np.log1p(-np.asarray(seen_g, dtype=float)), -np.log1p(-np.asarray(pooled_g, dtype=float))
            return point + (n - point * d) / d0
        draws, per_seed = lin(pooled.draws, seen.draws), lin(pooled.seed_gains, seen.seed_gains)
    ci = interval(draws, point, per_seed, j) if draws.size else None
    moments = share_moments(pooled.draws, seen.draws, draws, ci, d0) if ci is not None and ci.known else None
    if moments is None:
        return SeenShareReading(None, None, point, "no interval for the share")
    v_n, v_d, c_nd, c = moments
    if not d0 > c * math.sqrt(v_d):
        return SeenShareReading(None, None, point, f"pooled's gain over base ({_fig(pooled)}) is too close to zero "
                                                   "for the share's interval to be bounded (Fieller)")
    z = float(stats.norm.ppf(1 - (1 - level) / 2))
    share_ci = selective_ratio_interval(point * d0, d0, v_n, v_d, c_nd, level=level, kappa=c / z).ci
    if math.isnan(share_ci.low):       # no candidate share passed: nothing to show
        return SeenShareReading(None, None, point, "no interval for the share")
    bounded = math.isfinite(share_ci.low) and math.isfinite(share_ci.high)
    note = (WEAK_NOTE.format(pooled=_fig(pooled)) if not bounded
            else SEEDS_NOTE.format(regime=seeds_regime) if seeds_regime else "")
    return SeenShareReading(point, share_ci, point, note)


SEEDS_NOTE = ("descriptive only: seeds carry more than a tenth of this study's variance ({regime}); a "
              "share shown because pooled's gain over base came out clear of zero is then often shown because "
              "that variance came out low, which its interval does not account for (docs/calibration.md)")
WEAK_NOTE = ("descriptive only: pooled's gain over base ({pooled}) is so close to the level at which a share is "
             "shown that the share's interval, valid among the shares shown, is unbounded; the point is biased "
             "towards the studies where that gain came out high")


def share_moments(pooled_draws: np.ndarray, seen_draws: np.ndarray, lin_draws: np.ndarray, lin_ci: Interval,
                  d0: float) -> tuple[float, float, float, float] | None:
    """var(N), var(D), cov(N, D) of the log gains' bootstrap draws and the critical value c of the
    verdict's interval method, read off its interval on the delta-method draws `lin_draws` (c =
    half-width x D / sd(N_b - r D_b)); None where fewer than 3 draws are finite or they do not vary."""
    with np.errstate(invalid="ignore", divide="ignore"):
        N_b, D_b = -np.log1p(-np.asarray(seen_draws, dtype=float)), -np.log1p(-np.asarray(pooled_draws, dtype=float))
    ok = np.isfinite(N_b) & np.isfinite(D_b)
    if ok.sum() < 3:
        return None
    cov = np.cov(N_b[ok], D_b[ok], ddof=1)
    sd_lin = float(np.std(lin_draws[np.isfinite(lin_draws)], ddof=1)) * d0   # sd(N_b - r D_b)
    if not (sd_lin > 0 and cov[1, 1] > 0):
        return None
    c = (lin_ci.high - lin_ci.low) / 2 * d0 / sd_lin
    return float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1]), float(c)


_pct = signed_pct


def _has_ci(step: GainStep) -> bool:
    """An interval was computed (none without the bootstrap, NaN where nothing could be resampled)."""
    return step.ci is not None and step.ci.known


def _fig(step: GainStep) -> str:
    ci = f" [{_pct(step.ci.low)}, {_pct(step.ci.high)}]" if _has_ci(step) else ""
    return f"{_pct(step.gain)}{ci}"


def share_fig(share: float | None, ci: Interval | None, note: str = "") -> str:
    """The seen-user share as a figure: '52% [31%, 73%]', '52% [31%, unbounded]' (an end of its
    interval at infinity), '52% [unbounded]' (both), '... (descriptive)' with a note, or 'undefined'."""
    if share is None:
        return "undefined"
    def end(x: float) -> str:
        return f"{x:.0%}" if math.isfinite(x) else "unbounded"
    shown = ci is not None and not (math.isnan(ci.low) or math.isnan(ci.high))
    every = shown and math.isinf(ci.low) and math.isinf(ci.high)
    return (f"{share:.0%}" + (" [unbounded]" if every else f" [{end(ci.low)}, {end(ci.high)}]" if shown else "")
            + (" (descriptive)" if note else ""))


def describe(user: str, by: dict[str, GainStep], share: float | None,
             reading: SeenShareReading | None = None) -> str:
    """The decomposition of one user in words, naming the control behind every figure."""
    loo = loo_name(user)
    parts = []
    if "base_to_pooled" in by and "seen_user" in by:
        pooled, seen = by["base_to_pooled"], by["seen_user"]
        if share is not None:
            more = ", more than all of it: the generic adapter without the user loses to base" if share > 1 else ""
            fig = share_fig(share, reading.ci if reading is not None else None)
            weak = f" ({reading.note})" if reading is not None and reading.note else ""
            if share < 0:
                parts.append(f"having seen {user}'s text lowered pooled's gain over base on it ({_fig(pooled)}): "
                             f"a share of {fig} ({loo} -> pooled {_fig(seen)}){weak}")
            else:
                parts.append(f"of pooled's gain over base on {user}'s text ({_fig(pooled)}), {fig} came from "
                             f"having seen {user}'s text ({loo} -> pooled {_fig(seen)}{more}){weak}")
        elif reading is not None and reading.point is not None:
            parts.append(f"the share of pooled's gain from having seen {user}'s text is undefined: "
                         f"{reading.note}; having seen {user}'s text is worth {_fig(seen)} ({loo} -> pooled)")
        else:
            parts.append(f"pooled does not beat base on {user}'s text ({_fig(pooled)}), so no share of its gain "
                         f"can be given; having seen {user}'s text is worth {_fig(seen)} ({loo} -> pooled)")
    if "new_user" in by:
        new = by["new_user"]
        worse = new.ci.high < 0 if _has_ci(new) else new.gain < 0
        parts.append(f"a generic adapter that never saw {user} ({loo}) gains {_fig(new)} over base"
                     + (": worse than no adapter at all" if worse else ""))
    if "loo_to_own" in by:
        mine = f"{user}'s own adapter beats {loo} by {_fig(by['loo_to_own'])}"
        if "pooled_to_own" in by:
            mine += f" and pooled by {_fig(by['pooled_to_own'])}"
        parts.append(mine)
    text = "; ".join(parts)
    return f"{user}: {text}." if text else f"{user}: no step of the decomposition can be computed."
