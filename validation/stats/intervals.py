"""Reading an interval off a bootstrap distribution: the one place that does it, and the one place
to add a method.

`bootstrap_interval` is selected by `interval_method` in prereg.toml; every interval of the
verdict (`validation.judge`), of the criteria (`validation.judgment.criteria`) and of the calibration
(`validation.calibrate`) is read here. Methods (docs/calibration.md measures each):

- `percentile`: the alpha/2 and 1 - alpha/2 quantiles of the draws (Efron & Tibshirani 1993,
  ch. 13). Ignores that the seed variance is estimated from few seeds: under-covers at 3-8 seeds.
- `student-t`: point +- t(S - 1) x bootstrap SD (Efron & Tibshirani 1993, eq. 13.1 with the
  Student-t quantile on seeds - 1 df). Right where seeds carry the uncertainty; too wide where
  the held-out documents do (their variance is estimated on n - 1 df, not S - 1).
- `satterthwaite`: point +- t(nu) x bootstrap SD, nu the Welch-Satterthwaite effective degrees of
  freedom of the two estimated variance components of the statistic (Satterthwaite 1946):
  seed-to-seed (S - 1 df) and document-to-document (n - 1 df), `variance_shares`. It is
  `student-t` where seeds dominate and tends to the normal interval where documents dominate.
- `cochran-cox`: point +- c x SD, with the critical value the variance-share-weighted mean of the
  two levels' t quantiles, c = w t(S - 1) + (1 - w) t(n - 1), w the seed share (Cochran & Cox
  1950, the approximation Welch's df competes with). Linear in the estimated share, so a share
  estimated from three seeds moves it far less than it moves the Satterthwaite df.
  `satterthwaite` and `cochran-cox` both use the bootstrap SD corrected for the (m - 1) / m
  shrinkage of a bootstrap over m units at each level (`VarianceShares.inflation`).
- `share-blend`: point +- c x SD (corrected as above), c = w c_CC + (1 - w) c_S, the
  `cochran-cox` and `satterthwaite` critical values blended by the estimated seed share w.
  Satterthwaite's plug-in df is liberal when seeds dominate and are few (its df estimated from
  3 seeds swings up whenever their spread is small by chance, just when the SD is small too:
  0.921 coverage at 3 seeds, seed share 0.9, in the two-component normal model of
  `validation.calibration.theory`), Cochran-Cox is conservative at intermediate shares (0.975
  at 3 seeds, share 0.35); each is near-exact where the other errs, so the blend leans on
  Satterthwaite where documents dominate and on Cochran-Cox where seeds do (0.941-0.960 over
  every share at 3-12 seeds x 20-200 documents in that model, docs/calibration.md). Its
  document level has the effective df of the column's document lengths (`document_df`): a
  token-weighted mean over documents of unequal length is estimated on fewer df than n - 1. A
  construction of this project from the two cited approximations, not a published method;
  `validation.calibrate` measures it beside them.
- `expanded-percentile`: the percentile interval read at a wider level so that its coverage
  in the normal case matches the t(nu) interval, nu as in `satterthwaite` (Hesterberg 2015,
  "What teachers should know about the bootstrap", section 4.3: the expanded percentile
  interval); keeps the bootstrap distribution's skew.

To add a method: a branch in `bootstrap_interval` and its name in `METHODS` (which
`validation.contract.prereg.INTERVAL_METHODS` lists).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from validation.stats.fits import Regime
from validation.stats.types import Interval

METHODS = ("percentile", "student-t", "satterthwaite", "cochran-cox", "expanded-percentile", "share-blend")
_NEED_SEEDS = METHODS[1:]


@dataclass(frozen=True)
class VarianceShares:
    """Where the sampling variance of one estimate comes from (variances of the estimate).

    `seed`: var(statistic within each seed) / S, the seed-to-seed part (S - 1 df); `document`:
    the rest of the bootstrap variance, max(0, var(draws) - (S - 1) / S x `seed`) x n / (n - 1),
    the held-out-document part (n - 1 df); `df`: their Welch-Satterthwaite effective df;
    `bootstrap`: var(draws). A one-level bootstrap over m units holds (m - 1) / m of that level's
    variance; `seed + document` undoes that at both levels (Davison & Hinkley 1997, 2.3 and 3.8).
    """

    seed: float
    document: float
    df: float
    bootstrap: float = math.nan

    @property
    def inflation(self) -> float:
        """sqrt((seed + document) / bootstrap): the bootstrap SD's small-sample correction (>= 1
        up to estimation noise; 1 when undefined)."""
        total = self.seed + self.document
        if not (self.bootstrap > 0 and total > 0):
            return 1.0
        return math.sqrt(total / self.bootstrap)

    @property
    def seed_share(self) -> float:
        """seed / (seed + document); NaN when both are 0."""
        total = self.seed + self.document
        return self.seed / total if total > 0 else math.nan


def document_df(tokens) -> float:
    """Effective degrees of freedom of the document-level variance of a token-weighted mean over
    documents of `tokens` tokens each: (sum t^2)^2 / sum t^4 - 1 (Satterthwaite 1946 applied to
    the weighted sum of squares; Kish's effective-sample-size argument for the variance), n - 1
    for documents of equal length, fewer the more their lengths vary. NaN entries are dropped."""
    t = np.asarray(tokens, dtype=float)
    t = t[np.isfinite(t) & (t > 0)]
    if t.size < 2:
        return 0.0
    t = t / t.max()
    return float((t ** 2).sum() ** 2 / (t ** 4).sum() - 1.0)


def variance_shares(draws: np.ndarray, seed_values: np.ndarray | None, n_docs: int | None,
                    doc_df: float | None = None) -> VarianceShares:
    """Estimate the seed and document variance components of a bootstrapped statistic.

    `draws` (B,) from the hierarchical bootstrap (seeds, then documents); `seed_values` (S,) the
    statistic computed within each seed; `n_docs` the held-out documents of the column (None or
    0 without per-document data: all the variance is then the seeds'). The hierarchical
    bootstrap's seed level holds (S - 1) / S of the seed part; what it holds beyond that is
    the documents'. The document part has n - 1 df, or `doc_df` (`document_df`, kept within
    [1, n - 1]) when given. Non-finite values are dropped.
    """
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    sv = np.asarray([] if seed_values is None else seed_values, dtype=float)
    sv = sv[np.isfinite(sv)]
    S, n = sv.size, int(n_docs or 0)
    v_seed = float(np.var(sv, ddof=1)) / S if S >= 2 else 0.0
    v_boot = float(np.var(draws, ddof=1)) if draws.size >= 2 else 0.0
    v_doc = max(0.0, v_boot - (S - 1) / S * v_seed) * n / (n - 1) if (n >= 2 and S >= 1) else 0.0
    if S < 2 and n < 2:
        return VarianceShares(v_seed, v_doc, math.inf, v_boot)
    terms = [(v_seed, S - 1), (v_doc, n - 1 if doc_df is None or n < 2 else min(n - 1.0, max(1.0, doc_df)))]
    den = sum(v * v / df for v, df in terms if df >= 1 and v > 0)
    total = sum(v for v, df in terms if df >= 1)
    if den <= 0:  # no variance anywhere: the df of the level that exists
        return VarianceShares(v_seed, v_doc, float(S - 1 if S >= 2 else terms[1][1]), v_boot)
    return VarianceShares(v_seed, v_doc, total * total / den, v_boot)


SEED_DOMINATED, DOCUMENT_DOMINATED = 2 / 3, 1 / 3   # seed-share cut-offs of the regime labels


def regime_label(seed_share: float) -> str:
    if not math.isfinite(seed_share):
        return "unknown"
    if seed_share >= SEED_DOMINATED:
        return "seed-dominated"
    return "document-dominated" if seed_share <= DOCUMENT_DOMINATED else "mixed"


def study_regime(shares: list[VarianceShares]) -> Regime:
    """The regime of a study from its users' margin variance shares (mean seed share)."""
    vals = [s.seed_share for s in shares if math.isfinite(s.seed_share)]
    share = float(np.mean(vals)) if vals else math.nan
    return Regime(share, regime_label(share))


CRITICAL_VALUE_METHODS = ("satterthwaite", "cochran-cox", "share-blend")


def critical_value(method: str, w, df, n_seeds: int, n_docs: int | None, alpha: float,
                   doc_df: float | None = None):
    """The critical value of a t-type method from the seed share `w` and the Satterthwaite df
    `df` (scalars or arrays of one shape; `VarianceShares`): `satterthwaite` t(df);
    `cochran-cox` w t(S - 1) + (1 - w) t(n - 1), a level without two units (one seed, no
    documents) dropping out (Cochran & Cox 1950), t(`doc_df`) for the documents when given;
    `share-blend` w c_CC + (1 - w) t(df); NaN (no interval) when no level has two units. Pure,
    vectorized: `validation.calibration.theory` evaluates it on simulated variance estimates."""
    if method not in CRITICAL_VALUE_METHODS:
        raise ValueError(f"`method` must be one of {CRITICAL_VALUE_METHODS}; got {method!r}.")
    q = 1 - alpha / 2
    w = np.asarray(w, dtype=float)
    satt = stats.t.ppf(q, df)
    if method == "satterthwaite":
        return satt
    doc = (n_docs or 0) - 1 if doc_df is None or (n_docs or 0) < 2 else min(n_docs - 1.0, max(1.0, doc_df))
    if n_seeds < 2 and doc < 1:   # no level has two units: no variance, no critical value
        return np.full(np.shape(w), math.nan) if np.ndim(w) else math.nan
    if method == "share-blend" and n_seeds == 2:   # issue 23: the 2-seed correction (`two_seed_weight`)
        method, w = "cochran-cox", two_seed_weight(w)
    cc = sum(np.where(share > 0, share, 0.0) * stats.t.ppf(q, k)
             for share, k in ((w, n_seeds - 1), (1.0 - w, doc)) if k >= 1)
    cc = np.zeros_like(w) + cc
    return cc if method == "cochran-cox" else w * cc + (1.0 - w) * satt


TWO_SEED_POWER = 0.7   # the 2-seed correction's exponent, chosen in the two-component model (calibration.md)


def two_seed_weight(w):
    """`share-blend` at 2 seeds: the seed share is estimated on 1 df (a chi-square(1) swings over
    orders of magnitude), and the blend covered down to 0.909-0.914 where seeds carry 95% of the
    variance. There the critical value is Cochran-Cox's with the share read as w^0.7 (>= w: more
    weight on t(1)), which keeps the two-component model's coverage within 0.948-0.989 at every
    share (`python -m validation.calibration.theory --seeds 2`)."""
    return np.clip(np.asarray(w, dtype=float), 0.0, 1.0) ** TWO_SEED_POWER


def _bootstrap_interval_iv(draws: np.ndarray, level: float, method: str, n_seeds) -> np.ndarray:
    draws = np.asarray(draws, dtype=float)
    if draws.ndim != 1:
        raise ValueError(f"`draws` must be one-dimensional; got shape {draws.shape}.")
    if not (0 < level < 1):
        raise ValueError(f"`level` must be in (0, 1); got {level!r}.")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}; got {method!r}.")
    if method in _NEED_SEEDS and (not isinstance(n_seeds, (int, np.integer)) or n_seeds < 1):
        raise ValueError(f"`n_seeds` must be a positive integer for method {method!r}; got {n_seeds!r}.")
    return draws


def bootstrap_interval(
    draws: np.ndarray,
    point: float,
    level: float,
    *,
    method: str = "percentile",
    n_seeds: int | None = None,
    seed_values: np.ndarray | None = None,
    n_docs: int | None = None,
    doc_df: float | None = None,
) -> Interval:
    """Two-sided interval at `level` from bootstrap draws of shape (n_resamples,).

    `point` is the estimate on the original data; with no finite draws (no resampling possible)
    there is no interval: (NaN, NaN), which every criterion reads as unknown (never a zero-width
    interval at the point, which would read a single noisy estimate as certain). NaN draws (a
    resample where a statistic is undefined, e.g. every drawn seed lacks a cell) are dropped.
    `n_seeds` is needed by every method but `percentile`;
    `seed_values` (the statistic within each seed) and `n_docs` (held-out documents of the
    column) by `satterthwaite` and `expanded-percentile` (module doc); `doc_df` (`document_df`
    of the column's document lengths) by `share-blend` only, which reads the document level on
    that many df (n - 1 when None). `student-t` with one seed falls back to the percentile
    interval.
    """
    draws = _bootstrap_interval_iv(draws, level, method, n_seeds)
    if method not in ("percentile", "student-t") and seed_values is None:
        raise ValueError(f"method {method!r} needs `seed_values` (the statistic within each seed).")
    draws = draws[np.isfinite(draws)]
    if draws.size == 0 or no_variance(draws):   # nothing resampled, or every draw the same number
        return Interval(math.nan, math.nan)
    n_seeds = finite_seeds(n_seeds, seed_values)
    alpha = 1.0 - level
    if method == "percentile" or draws.size < 2 or (method == "student-t" and n_seeds < 2):
        low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
        return Interval(float(low), float(high))
    if method == "student-t":
        df = n_seeds - 1
    else:
        if seed_values is None:
            raise ValueError(f"method {method!r} needs `seed_values` (the statistic within each seed).")
        doc_df = doc_df if method == "share-blend" else None   # the earlier methods as they were
        shares = variance_shares(draws, seed_values, n_docs, doc_df)
        df, inflate = shares.df, shares.inflation
        if method in ("cochran-cox", "share-blend"):
            w = shares.seed_share if math.isfinite(shares.seed_share) else (1.0 if n_seeds >= 2 else 0.0)
            crit = float(critical_value(method, w, df, n_seeds, n_docs, alpha, doc_df))
            half = crit * float(np.std(draws, ddof=1)) * inflate
            return Interval(float(point - half), float(point + half))
    if method == "expanded-percentile":
        # Hesterberg's expanded percentile: the quantiles at alpha' with z_{alpha'/2} =
        # t_{nu, alpha/2} x (unbiased SD / bootstrap SD), the normal-case width of `satterthwaite`.
        a = expanded_tail(alpha, df, inflate)
        if tail_resolved(a, draws.size):
            low, high = np.quantile(draws, [a / 2, 1 - a / 2])
            return Interval(float(low), float(high))
        # the tail is beyond what the draws resolve (their min and max would be read): the
        # normal-case interval the expanded percentile stands for, t(nu) x corrected SD (judge says so)
    # student-t: point +- t_{S-1, 1-alpha/2} x bootstrap SD. With S seeds the seed variance is
    # estimated on S-1 degrees of freedom, which the percentile interval ignores.
    # satterthwaite: point +- t_{nu, 1-alpha/2} x the bootstrap SD corrected for its (m-1)/m bias.
    half = stats.t.ppf(1 - alpha / 2, df) * float(np.std(draws, ddof=1)) * (1.0 if method == "student-t" else inflate)
    return Interval(float(point - half), float(point + half))


# ---- issue 23: what the draws can and cannot say ------------------------------------------------

MIN_TAIL_DRAWS = 10   # an empirical quantile needs at least this many draws beyond it on each side


def no_variance(draws: np.ndarray) -> bool:
    """Every finite draw the same number (up to rounding): e.g. identical seeds in seeds-only mode.
    A zero-width interval would read a number that was never varied as certain, so there is none."""
    d = np.asarray(draws, dtype=float)
    d = d[np.isfinite(d)]
    return d.size < 2 or float(np.ptp(d)) <= 1e-12 * max(1.0, float(np.max(np.abs(d))))


def finite_seeds(n_seeds, seed_values) -> int | None:
    """The seeds a figure really has: those whose per-seed value is finite (a diverged or missing
    seed drops out of one user's figures, not of the others'). `n_seeds` when `seed_values` is None."""
    if seed_values is None or n_seeds is None:
        return n_seeds
    return min(int(n_seeds), int(np.sum(np.isfinite(np.asarray(seed_values, dtype=float)))))


def expanded_tail(alpha: float, df: float, inflate: float = 1.0) -> float:
    """The two-sided tail probability the expanded percentile reads: 2 P(Z > t(df) x inflate)."""
    return float(2 * stats.norm.sf(stats.t.ppf(1 - alpha / 2, df) * inflate))


def tail_resolved(tail: float, n_draws: int) -> bool:
    """Whether `n_draws` resolve the quantile at tail / 2: at least MIN_TAIL_DRAWS draws beyond it."""
    return tail / 2 * n_draws >= MIN_TAIL_DRAWS


def expanded_fallback(draws: np.ndarray, seed_values, n_seeds: int, n_docs: int | None, level: float) -> bool:
    """True when `expanded-percentile` would read a tail the draws cannot resolve (3 seeds: ~7e-8
    of 10,000 draws) and `bootstrap_interval` falls back to the t(nu) interval instead."""
    d = np.asarray(draws, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2 or no_variance(d) or seed_values is None:
        return False
    shares = variance_shares(d, seed_values, n_docs)
    return not tail_resolved(expanded_tail(1.0 - level, shares.df, shares.inflation), d.size)
