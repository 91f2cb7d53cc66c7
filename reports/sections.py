"""The report's chart sections beside the matrix and the margins: population, routing, similarity,
training steps (one `ChartSection` each), and the escaping of their specs inside <script>."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import altair as alt
import polars as pl

from reports import charts, exploratory_charts, tables
from validation.exploratory.similarity import Similarity
from validation.exploratory.steps import StepsAnalysis
from validation.judgment.results import Verdict
from validation.text.summary_sentence import POPULATION_USERS


@dataclass(frozen=True)
class ChartSection:
    """One chart of the page: its spec, or why it is not there."""

    key: str                         # stable id: the container's id and the file name
    title: str
    caption: str                     # how to read it
    chart: alt.TopLevelMixin | None  # None when the input lacks what it needs
    missing: str | None = None       # the explanation shown instead

    def spec_json(self) -> str:
        """The Vega-Lite spec as JSON, safe inside a <script> element."""
        return script_json(self.chart.to_dict())


# Inside <script>, the HTML parser ends the element at `</script` and changes state at `<!--`, so a
# name such as `<!--<script` would swallow the rest of the page. Escaping every `<`, `>` and `&` as
# a JSON \u escape leaves no markup in the element at all; U+2028/2029 are escaped for old parsers.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(obj: Any) -> str:
    """`obj` as JSON that is safe verbatim inside any <script> element (same value once parsed)."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return "".join(_SCRIPT_ESCAPES.get(ch, ch) for ch in text)


BOOTSTRAP_PANELS = 6
POPULATION_CHART_USERS = POPULATION_USERS   # as the summary sentence: the users the population effect needs


def population_section(verdict: Verdict) -> ChartSection:
    """The users as a sample of a population (docs/methods.md, section 13)."""
    title = "The users as a population: what a new user would get"
    parts = tables.population_tables(verdict)
    if parts is None or parts[1].height == 0:
        why = ("Not computed for this verdict." if parts is None else
               "No population model could be fitted (fewer than 3 users, or see the warnings).")
        return ChartSection("population", title, "", None, why)
    _, effects, users = parts
    n = len(verdict.users)
    if n < POPULATION_CHART_USERS:
        return ChartSection("population", title, "", None,
                            f"{n} users: too few to read as a population (the chart is drawn from "
                            f"{POPULATION_CHART_USERS} users; the figures are in verdict.json, `population`).")
    caption = ("Each user's effect as the random-effects model estimates it (dots, sorted), the "
               f"population average with its {verdict.bootstrap.level:.0%} interval (dark band) and the "
               "prediction interval for a new user drawn from the same population (light band). "
               "Top: own adapter vs other users' adapters (the random slope of diag by user); then, with "
               "the leave-one-out controls, own adapter vs loo:<user> and loo:<user> vs base.")
    return ChartSection("population", title, caption, charts.population_chart(users, effects))


def routing_sections(verdict: Verdict) -> list[ChartSection]:
    """Is routing non-optional (docs/routing.md)? The NOISE curve and the AVERAGING pairs, only for
    a study with the routing rows; the criteria and the figures are in the verdict section's table."""
    parts = tables.routing_tables(verdict)
    if parts is None:
        return []
    r = verdict.routing
    s = verdict.settings
    level = verdict.bootstrap.level
    _, curve, pairs = parts
    out = []
    if curve.height and r.sigmas:
        noise = r.criterion("noise")
        out.append(ChartSection(
            "routing_noise", "Does the personalization survive noise? The margin as every parameter is perturbed",
            (f"Each user's margin (own adapter vs the best other user adapter, as in the verdict) with every "
             f"parameter of the own adapter multiplied by 1 + sigma·N(0, 1), at each pre-registered sigma; sigma 0 "
             f"is the unperturbed adapter. Bars: {level:.0%} intervals from the verdict's own bootstrap draws. "
             f"Dashed: the STRICT bar ({s.strict_margin:.0%}). NOISE reads sigma = {s.noise_sigma:g}: "
             f"{noise.status_text}. {noise.meaning}"),
            charts.noise_curve_chart(curve, s.strict_margin, level, s.noise_sigma)))
    if pairs.height:
        averaging = r.criterion("averaging")
        link = "" if r.link is None else f" {r.link.words[0].upper() + r.link.words[1:]}."
        out.append(ChartSection(
            "routing_pairs", "Could averaging two users' adapters replace routing?",
            (f"Per pair and contributor: left, the contributor's own adapter against the pair's parameter average "
             f"on the contributor's text (dashed: the AVERAGING margin, {s.averaging_margin:.0%}: to the right, the "
             "own adapter is clearly better); right, the average's gain over base on the contributor's text "
             f"(right of 0: the average helps). {level:.0%} intervals. AVERAGING: {averaging.status_text}. "
             f"{averaging.meaning} Readings: "
             + "; ".join(f"{p.name} {p.reading}" for p in r.pairs) + "." + link),
            charts.pairs_chart(pairs, s.averaging_margin, level)))
    return out


def similarity_section(sim: Similarity | None, many: bool = False) -> ChartSection:
    """Domain-similarity structure (docs/methods.md, section 11): ordered heatmap, split supports
    and the Mantel test in the caption, adapter-vs-transfer scatter when adapters were read."""
    title = "Which users\u2019 adapters transfer to each other? (exploratory)"
    if sim is None:
        return ChartSection("similarity", title, "", None,
                            "Not computed for this verdict (`python -m validation.verdict` computes it).")
    splits = "; ".join(f"{{{', '.join(sp.members)}}} "
                       + ("no support (no resampling)" if sp.support is None else
                          f"{'descriptive ' if sim.supports_descriptive else ''}support {sp.support:.0%}")
                       for sp in sim.splits) or "none"
    m = sim.mantel
    mantel = ("No adapter files were read, so adapters and transfer are not compared." if m is None else
              f"Adapter vs transfer distance: Mantel r = {m.statistic:.2f}, one-sided p = {m.p_value:.3g} "
              f"({'exact, ' if m.exact else ''}{m.n_permutations} relabelings; smallest possible p "
              f"{m.min_p_value:.3g}): {'significant' if m.significant else 'not significant'} at "
              f"{1 - m.level:.0%}.")
    caption = ("Transfer distance = the symmetrized log-perplexity penalty of evaluating each user's "
               "text with the other's adapter (0 = interchangeable). Users are ordered by average-"
               f"linkage clustering. Splits of the tree, with the share of the {sim.n_resamples} "
               f"bootstrap resamples whose tree has them: {splits}. {mantel} "
               + " ".join(n[0].upper() + n[1:] + "." for n in sim.notes))
    ok = len(sim.users) >= 2
    return ChartSection("similarity", title, caption,
                        exploratory_charts.similarity_chart(sim.transfer_table(),
                                                sim.pairs_table() if sim.adapter_distance is not None else None,
                                                compact=many)
                        if ok else None, None if ok else "Fewer than two users: no distance to show.")


def steps_sections(st: StepsAnalysis | None, many: bool = False) -> list[ChartSection]:
    """The training-step interaction (docs/methods.md, section 12), only for a run with more than
    one step count: margin and gains versus steps with interval bands; the per-user trend
    sentences and the mixed model's interaction test in the caption."""
    if st is None or len(st.steps) < 2:
        return []
    m = st.model
    it = st.interaction
    model = ("" if it is None else f" Over every user, {it.words[0].lower() + it.words[1:]} (negative: the own "
             "adapter's advantage grows with training).")
    model += ("" if m is None else
              f" Mixed model ({m.kind}), descriptive only: diag × log2(steps) = {m.interaction:+.4f} log ppl per "
              f"doubling, Wald {st.level:.0%} CI [{m.interaction_ci.low:+.4f}, {m.interaction_ci.high:+.4f}], "
              f"p = {m.p_value:.3g} (the Wald reads every seed, adapter, user and count as independent, so a trend "
              "the seeds share is counted once per seed and its p is too small).")
    primary = "" if st.primary is None else f" ({st.primary}, dashed)"
    if many:   # one line per user and the median; the slopes sorted, not one sentence per user
        trends = pl.DataFrame(
            [{"user": u.user, "slope": _finite(u.trend.slope), "low": _finite(u.trend.ci.low),
              "high": _finite(u.trend.ci.high), "direction": u.trend.direction} for u in st.users],
            schema={"user": pl.String, "slope": pl.Float64, "low": pl.Float64, "high": pl.Float64,
                    "direction": pl.String})
        counts = {d: sum(u.trend.direction == d for u in st.users) for d in ("rises", "flat", "falls", "unknown")}
        caption = (f"{len(st.users)} users' margins and gains at every trained step count "
                   f"({', '.join(map(str, st.steps))}): one thin line per user, the median over users thick. "
                   f"Below, each user's slope of the margin per doubling with its {st.level:.0%} interval "
                   f"({st.interval_method}, one paired bootstrap for every count): the margin rises for "
                   f"{counts['rises']}, is flat for {counts['flat']} and falls for {counts['falls']} users"
                   + (f" ({counts['unknown']} unknown)" if counts["unknown"] else "")
                   + f"; each user's sentence is in verdict.json (`steps_analysis`). Exploratory: the criteria "
                   f"are read at the primary count{primary} only." + model)
        return [ChartSection("steps", "Does the margin change with training? (exploratory)", caption,
                             exploratory_charts.steps_summary(st.table(), trends, st.level, st.primary))]
    caption = (f"Each user's margin and gains at every trained step count ({', '.join(map(str, st.steps))}), "
               f"with {st.level:.0%} intervals ({st.interval_method}) from one bootstrap whose seed and "
               "document draws are shared by every count (paired). Exploratory: the criteria are read at "
               f"the primary count{primary} only. "
               + " ".join(s + "." for s in st.sentences()) + model)
    return [ChartSection("steps", "Does the margin change with training? (exploratory)", caption,
                         exploratory_charts.steps_chart(st.table(), st.level, st.primary))]


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
