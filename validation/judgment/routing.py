"""Is routing non-optional? The ROUTING, AVERAGING and NOISE criteria and the storage bill
(docs/routing.md, issue 25).

The rows `avg:<a>+<b>`, `ens:<user>` and `noise:<user>@<sigma>` (`common.contract`) are control
rows that `python -m runners.grid --routing` scores on every user's held-out text. Every other
figure of the verdict is computed without them (`validation.inputs.arrays.build_arrays`); here they are
laid out after the other rows (`build_arrays(data, routing=True)`) and resampled with the
verdict's OWN bootstrap weights (`validation.stats.bootstrap.draw_weights`: the same draws of seeds and
documents as the margins), so every figure below is paired with the margins and read by the
pre-registered interval method (`validation.stats.intervals.bootstrap_interval`).

- ROUTING: per user j and generic option g in (`base`, `loo:<j>`, `ens:<j>`, those present), the
  own adapter's relative perplexity reduction 1 - ppl(j on j) / ppl(g on j). PASS when every
  interval lies at or above `routing_margin`, FAIL when one lies wholly below, else INCONCLUSIVE
  (read as STRICT reads the margins).
- AVERAGING: per pair (a, b) and contributor c in (a, b), 1 - ppl(c on c) / ppl(avg:a+b on c),
  read against `averaging_margin` in the same way; beside it, descriptive, the average's gain over
  `base` on each contributor's text ("helps both" / "helps one" / "helps neither": intervals above
  0) and the rank correlation over pairs of the pair's transfer distance
  (`validation.stats.metrics.transfer_distance`) with the smaller of its two gains.
- NOISE: per user and sigma, the margin of `noise:<user>@<sigma>` on the user's text against the
  comparator of the margins (the best, or with `comparator = "worst_other"` the worst, other user
  adapter, per resample); the criterion reads the margins at `noise_sigma` against `strict_margin`.
- Storage: the bytes of one user's adapter from the manifest's `routing.storage` record and the
  bill for `storage_users` users.

Off the gate by default (`[gate] routing / averaging / noise`); a criterion whose rows are absent is
NOT_APPLICABLE, and a gated one whose rows are absent is refused before judging (`check_routing`).
Pure: no file I/O, no randomness of its own.
"""


from __future__ import annotations

import math
import warnings as _warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from common.contract import BASE, avg_users, ens_name, loo_name, noise_parts
from validation.contract.prereg import Prereg
from validation.contract.status import Status
from validation.inputs.arrays import StudyArrays, build_arrays
from validation.inputs.study import StudyData
from validation.judgment.routing_checks import _needed_rows, check_sigmas, routing_names, storage_bill
from validation.judgment.routing_results import (
    MIN_PAIRS_RANK,
    NAMES,
    NAMES_SHOWN,
    RUN_WITH_ROUTING,
    Comparison,
    PairResult,
    RankLink,
    RoutingCriterion,
    RoutingResult,
    _sigma_of,
)
from validation.judgment.user_results import CriterionResult, UserResult
from validation.stats import metrics
from validation.stats.bootstrap import apply_draws
from validation.stats.intervals import bootstrap_interval
from validation.stats.types import Interval, signed_pct, threshold_pct


@dataclass(frozen=True)
class _Reader:
    """The routing rows' point estimates, resamples and per-seed values, and the interval reader."""

    arrays: StudyArrays
    point: np.ndarray       # (A, J)
    draws: np.ndarray       # (B, A, J)
    prereg: Prereg
    method: str
    n_docs: tuple[int, ...] | None
    doc_df: tuple[float, ...] | None

    def row(self, name: str) -> int:
        return self.arrays.adapters.index(name)

    def compare(self, j: int, num: int, den: int | str) -> Comparison:
        """Column j: 1 - ppl(num) / ppl(den); `den` a row index or "best_other" / "worst_other"."""
        with np.errstate(invalid="ignore"), _warnings.catch_warnings():
            _warnings.simplefilter("ignore", RuntimeWarning)
            p = metrics.ratio_gain(self.point[num, j], self._den(self.point, den)[j])
            d = metrics.ratio_gain(self.draws[:, num, j], self._den(self.draws, den)[:, j])
            s = metrics.ratio_gain(self.arrays.logppl[:, num, j], self._den(self.arrays.logppl, den)[:, j])
        ci = bootstrap_interval(d, float(p), self.prereg.confidence, method=self.method,
                                n_seeds=len(self.arrays.seeds), seed_values=s,
                                n_docs=None if self.n_docs is None else self.n_docs[j],
                                doc_df=None if self.doc_df is None else self.doc_df[j])
        label = den if isinstance(den, str) else self.arrays.adapters[den]
        return Comparison(self.arrays.users[j], self.arrays.adapters[num], label, float(p), ci)

    @staticmethod
    def _den(x: np.ndarray, den: int | str) -> np.ndarray:
        """(..., A, J) -> (..., J): the comparator's log ppl per column."""
        if isinstance(den, str):
            others = metrics.other_users(x)
            return np.nanmax(others, axis=-2) if den == "worst_other" else np.nanmin(others, axis=-2)
        return x[..., den, :]


def routing_stats(data: StudyData, weights, users: tuple[UserResult, ...], prereg: Prereg, *, method: str,
                  n_docs: tuple[int, ...] | None, doc_df: tuple[float, ...] | None,
                  bare: tuple[int, ...] = ()) -> RoutingResult:
    """The routing figures and criteria of one study (module doc). `weights` are the verdict's own
    bootstrap weights (`validation.stats.bootstrap.draw_weights`, or None when nothing was resampled);
    `users` the verdict's per-user results (the NOISE curve starts at their margins, sigma 0);
    `bare` the columns the verdict has no interval for (their draws are undefined here too)."""
    names = routing_names(data)
    check_sigmas(data, prereg, names)
    storage = storage_bill(data.manifest, prereg.storage_users,
                           str(Path(data.source) / "manifest.json") if data.source is not None else "manifest.json",
                           rows=bool(names))
    common = dict(level=prereg.confidence, interval_method=method, comparator=prereg.comparator, rows=names,
                  sigmas=tuple(sorted({p[1] for n in names if (p := noise_parts(n)) is not None})), storage=storage)
    if not names:
        return RoutingResult(criteria=tuple(RoutingCriterion(n, None, f"no routing rows: {RUN_WITH_ROUTING}",
                                                             MEANING[n]["NOT_APPLICABLE"]) for n in NAMES),
                             generic=(), pairs=(), link=None, curve=(), **common)
    arrays = build_arrays(data, routing=True)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)
        point = np.nanmean(arrays.logppl, axis=0)
    draws = apply_draws(arrays, weights)
    if bare:
        draws = draws.copy()
        draws[:, :, list(bare)] = np.nan
    r = _Reader(arrays, point, draws, prereg, method, n_docs, doc_df)
    generic = _generic(r)
    pairs = _pairs(r)
    curve = _curve(r, users)
    notes: list[str] = []
    if BASE not in arrays.adapters:
        notes.append("no `base` row: ROUTING compares with the other generic options only, and the averages' "
                     "gains over base are not computed")
    criteria = (
        _criterion("routing", prereg, names, generic, prereg.routing_margin,
                   lambda c: f"{c.user} vs {c.against}"),
        _criterion("averaging", prereg, names, tuple(c for p in pairs for c in p.own_vs_average),
                   prereg.averaging_margin, lambda c: f"{c.user} vs {c.against}"),
        _criterion("noise", prereg, names, tuple(c for c in curve if _sigma_of(c) == prereg.noise_sigma),
                   prereg.strict_margin, lambda c: f"{c.user} at sigma {prereg.noise_sigma:g}"),
    )
    return RoutingResult(criteria=criteria, generic=generic, pairs=pairs, link=_link(pairs), curve=curve,
                         notes=tuple(notes), **common)


def _generic(r: _Reader) -> tuple[Comparison, ...]:
    """ROUTING's figures: per user, own vs `base`, `loo:<user>`, `ens:<user>` (those present)."""
    out = []
    for j, user in enumerate(r.arrays.users):
        for g in (BASE, loo_name(user), ens_name(user)):
            if g in r.arrays.adapters:
                out.append(r.compare(j, j, r.row(g)))
    return tuple(out)


def _pairs(r: _Reader) -> tuple[PairResult, ...]:
    from validation.stats.metrics import transfer_distance

    users = r.arrays.users
    J = len(users)
    with np.errstate(invalid="ignore"):
        distance = transfer_distance(r.point[:J + 0])  # the users' rows come first
    base = r.row(BASE) if BASE in r.arrays.adapters else None
    out = []
    for name in r.arrays.adapters:
        pair = avg_users(name)
        if pair is None:
            continue
        k = r.row(name)
        ja, jb = users.index(pair[0]), users.index(pair[1])
        own = (r.compare(ja, ja, k), r.compare(jb, jb, k))
        vs_base = None if base is None else (r.compare(ja, k, base), r.compare(jb, k, base))
        out.append(PairResult(pair[0], pair[1], own, vs_base, float(distance[ja, jb])))
    return tuple(out)


def _curve(r: _Reader, users: tuple[UserResult, ...]) -> tuple[Comparison, ...]:
    """The NOISE curve: the users' margins (sigma 0, as the verdict read them) then, per sigma and
    user, the noisy adapter's margin against the same comparator, per resample."""
    against = r.prereg.comparator
    worst = against == "worst_other"
    out = [Comparison(u.user, u.user, against, u.worst_other_margin if worst else u.margin,
                      _margin_ci(r, j, u)) for j, u in enumerate(users)]
    rows = sorted((noise_parts(n)[1], r.arrays.users.index(noise_parts(n)[0]), n)
                  for n in r.arrays.adapters if noise_parts(n) is not None)
    out += [r.compare(j, r.row(name), against) for _, j, name in rows]
    return tuple(out)


def _margin_ci(r: _Reader, j: int, u: UserResult) -> Interval:
    if r.prereg.comparator != "worst_other":
        return u.ci
    return r.compare(j, j, "worst_other").ci


def _criterion(name: str, prereg: Prereg, names: tuple[str, ...], figures: tuple[Comparison, ...], bar: float,
               label) -> RoutingCriterion:
    """PASS: every interval low >= bar; FAIL: some interval high < bar; else INCONCLUSIVE (as
    `validation.judgment.criteria.strict`); the point reading beside it."""
    why = _needed_rows(name, prereg, names)
    if why is not None or not figures:
        reason = f"{why or 'nothing to compare'}: {RUN_WITH_ROUTING}"
        return RoutingCriterion(name, None, reason, MEANING[name]["NOT_APPLICABLE"])
    low = np.array([c.ci.low for c in figures])
    high = np.array([c.ci.high for c in figures])
    point = np.array([c.gain for c in figures])
    labels = [label(c) for c in figures]
    pct = threshold_pct(bar)
    with np.errstate(invalid="ignore"):
        sure, below = low >= bar, high < bar
    status = Status.read(bool(np.all(sure)), bool(np.any(below)))
    if status is Status.PASS:
        why_text = f"every interval low >= {pct} ({len(figures)} comparisons; lowest: {_lowest(figures, labels)})"
    elif status is Status.FAIL:
        why_text = f"interval entirely below {pct} for: {_shown(labels, below)}"
    else:
        unknown = ~np.isfinite(low) | ~np.isfinite(high)
        why_text = f"interval straddles {pct} for: {_shown(labels, ~sure & ~below & ~unknown)}" + (
            f"; no interval for: {_shown(labels, unknown)}" if unknown.any() else "")
    point_status = Status.PASS if np.all(point >= bar) else Status.FAIL
    return RoutingCriterion(name, CriterionResult(name, status, point_status, bar, why_text),
                            meaning=MEANING[name][status.value].format(bar=pct, sigma=prereg.noise_sigma))


def _shown(labels: list[str], mask: np.ndarray) -> str:
    picked = [x for x, m in zip(labels, mask, strict=True) if m]
    more = f" and {len(picked) - NAMES_SHOWN} more" if len(picked) > NAMES_SHOWN else ""
    return (", ".join(picked[:NAMES_SHOWN]) + more) if picked else "none"


def _lowest(figures: tuple[Comparison, ...], labels: list[str]) -> str:
    k = min(range(len(figures)), key=lambda i: (not math.isfinite(figures[i].ci.low), figures[i].ci.low))
    c = figures[k]
    return f"{labels[k]} {signed_pct(c.gain)} [{signed_pct(c.ci.low)}, {signed_pct(c.ci.high)}]"


def _link(pairs: tuple[PairResult, ...]) -> RankLink | None:
    """Spearman's rho over pairs: transfer distance vs the smaller of the average's gains over base."""
    if not pairs or pairs[0].average_vs_base is None:
        return None
    x = np.array([p.transfer_distance for p in pairs])
    y = np.array([p.smaller_gain for p in pairs])
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    rho = math.nan
    if n >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
        rho = float(stats.spearmanr(x[ok], y[ok]).statistic)
    descriptive = n < MIN_PAIRS_RANK
    if not math.isfinite(rho):
        words = f"{n} pair(s): too few (or no spread) for a rank correlation"
    else:
        direction = ("closer pairs' averages help more (as the write-up claims)" if rho < 0 else
                     "closer pairs' averages do not help more (against the write-up's claim)")
        words = (f"Spearman rho {rho:+.2f} over {n} pairs between transfer distance and the smaller gain of the "
                 f"average over base: {direction}"
                 + (f"; descriptive only (fewer than {MIN_PAIRS_RANK} pairs)" if descriptive else ""))
    return RankLink(rho, n, descriptive, words)


# What each status means for the routing decision: one sentence per criterion and status.
MEANING: dict[str, dict[str, str]] = {
    "routing": {
        "PASS": "Every generic option a new user could be served (base, loo:<user>, the ensemble of the others) is "
                "beaten by each user's own adapter by at least {bar}: routing each user to their own adapter "
                "is non-optional.",
        "FAIL": "For at least one user a generic option comes within {bar} of the own adapter: serving that user "
                "the generic option loses little, so routing is optional there.",
        "INCONCLUSIVE": "The intervals cannot yet tell whether some generic option serves a user as well as "
                        "their own adapter: the routing decision is not yet supported either way.",
        "NOT_APPLICABLE": "Without the ensemble rows the routing decision is not judged against the generic "
                          "options.",
    },
    "averaging": {
        "PASS": "No average of two users' adapters comes within {bar} of either contributor's own adapter: "
                "sharing averaged adapters cannot replace routing.",
        "FAIL": "For at least one pair the average serves a contributor within {bar} of their own adapter: that "
                "pair could share one averaged adapter, so routing is not needed between them.",
        "INCONCLUSIVE": "The intervals cannot yet tell whether averaging some pair's adapters would serve its "
                        "users as well: whether averages could replace routing is open.",
        "NOT_APPLICABLE": "Without the average rows, whether averaged adapters could replace routing is not "
                          "judged.",
    },
    "noise": {
        "PASS": "With every parameter perturbed at sigma {sigma:g}, each user's adapter still beats the best "
                "other user's by the STRICT bar ({bar}): the personalization survives perturbation of that order "
                "(e.g. storage at reduced precision).",
        "FAIL": "At sigma {sigma:g} some user's perturbed adapter no longer clears the STRICT bar ({bar}): the "
                "personal adapters must be stored and served without perturbation of that order.",
        "INCONCLUSIVE": "The intervals cannot yet tell whether the personalization survives perturbation at "
                        "sigma {sigma:g}.",
        "NOT_APPLICABLE": "Without the noise rows, the adapters' robustness to perturbation is not judged.",
    },
}


# ---- words --------------------------------------------------------------------------------------
