"""The report page: one self-contained HTML file, and the same charts as SVG/PNG files.

`write_report(verdict, data, path)` is what `python -m validation.verdict` calls. The page holds
one inline copy of Vega/Vega-Lite/vega-embed (`bundle.py`), one JSON spec per chart, the tables,
and a Content-Security-Policy that forbids every network request; it opens from file://.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import jinja2
import polars as pl
import vl_convert

from common.atomic import atomic_write_bytes, atomic_write_text
from reports import bundle, charts, tables
from reports.calibration import calibration_chart, calibration_table
from validation.calibration_results import DesignCalibration
from validation.model_reading import diagnostic_readings
from validation.population import descriptive_note
from validation.results import BootstrapMode, StudyData, Verdict
from validation.summary_sentence import summary_sentence

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
)


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


def _thresholds(verdict: Verdict) -> dict[str, float]:
    by_name = {c.name: c.threshold for c in verdict.criteria}
    return {"strict": by_name.get("strict", 0.10), "lenient": by_name.get("lenient", 0.05),
            "delta": by_name.get("catastrophic", 0.02), "level": verdict.bootstrap.level}


def chart_sections(verdict: Verdict, data: StudyData,
                   calibration: DesignCalibration | None = None) -> list[ChartSection]:
    """Every chart of the report, in page order; missing inputs give an explained gap.

    `calibration` is `validation.calibrate.calibration_for_study`'s result for the run's design.
    """
    t = _thresholds(verdict)
    margins = verdict.users_table()
    matrix, kind = tables.matrix_table(verdict, data)
    controls = data.controls
    many = tables.many_users(verdict)
    order_words = (" Users are in the order of the similarity clustering (users whose adapters transfer "
                   "to each other side by side)." if getattr(verdict, "similarity", None) is not None else "")
    many_words = (f" With {len(verdict.users)} users the cells are small and unlabelled (hover for the "
                  "value), and the leave-one-out controls are one row: in each column, loo:<that user>."
                  if many else "")
    out = [ChartSection(
        "matrix", "Confusion matrix: perplexity of every adapter on every user's held-out text",
        ("Rows: the adapter (trained on that user's text, or a control); columns: whose held-out "
         "text it is evaluated on. Lower is better; the diagonal (outlined in red) should win its "
         "column if adapters personalize. "
         + ("Values are the geometric mean over seeds." if kind == "geometric-mean" else
            "The validation layer gave no geometric-mean matrix, so each seed's matrix is shown.")
         + ("" if controls else " This input has no control rows (base, pooled).") + order_words + many_words),
        charts.matrix_heatmap(matrix, kind, compact=many))]
    out.append(ChartSection(
        "margins", "Diagonal margin per user, with its interval",
        ("Margin = 1 − ppl(own adapter) / ppl(best other user adapter); "
         + (f"the bar is the {t['level']:.0%} {verdict.bootstrap.method} interval "
            f"({verdict.bootstrap.mode} bootstrap, {verdict.bootstrap.n_resamples} resamples). "
            if verdict.bootstrap.mode is not BootstrapMode.NONE else
            "no resampling was possible (one seed, no documents), so there is no interval. ")
         + "Dashed lines: the lenient and strict bars and "
         "the ±δ equivalence band of the catastrophic criterion. Red = inverted (interval below 0). "
         + ("Users sorted by margin; the best other adapter is in the tooltip." if many else
            "The label names the best other adapter.")),
        charts.margin_forest(margins, t["strict"], t["lenient"], t["delta"], t["level"], compact=many)))
    seeds = verdict.per_seed_table().select(["user", "seed", "margin", "best_other"])
    out.append(ChartSection(
        "seed_margins", "Margins seed by seed",
        "One dot per seed: the margin computed within that seed alone; the black tick is the "
        "estimate over all seeds. The spread is the run-to-run variation.",
        charts.seed_margins_chart(seeds, margins, t["strict"], t["lenient"], t["delta"], compact=many)
        if seeds["seed"].n_unique() > 1 else None,
        None if seeds["seed"].n_unique() > 1 else
        "Only one seed in this input: there is no run-to-run spread to show."))
    gains = tables.gains_table(verdict)
    decomposition = getattr(verdict, "decomposition", ())
    loo_words = (
        " With the leave-one-out controls (loo:<user>, one generic adapter per user trained on every "
        "OTHER user's text: what a new user gets), the chain is base → loo:<user> → pooled → own, "
        "and (1 − total) is the product of its three steps. " + " ".join(d.words for d in decomposition)
        if decomposition else
        " This input has no leave-one-out controls (loo:<user>), so pooled's gain, which includes "
        "having seen each user's text, cannot be split further.")
    out.append(ChartSection(
        "decomposition", "Personalization or regularization? The gain, decomposed",
        "Per user: what any norm-only adapter buys (base → pooled, regularization), what the "
        "user's own adapter adds over the generic one (pooled → own, personalization), and the "
        "total (base → own). (1 − total) = (1 − regularization)(1 − personalization)."
        + (f" With {len(verdict.users)} users: one tick per user on each step, the red tick the median "
           "over users; each user's figures are in the tooltip and in the decomposition table of verdict.json."
           if many else loo_words),
        (charts.decomposition_summary(gains) if many else charts.decomposition_chart(gains))
        if gains.height else None,
        None if gains.height else
        f"No control rows in this input (present: {', '.join(controls) or 'none'}; needed: base "
        "and pooled), so the gain cannot be split into regularization and personalization."))
    log = tables.training_table(data)
    out.append(ChartSection(
        "training", "Training curves", "Training loss per logged step, one panel per adapter, "
        "one line per seed: the users' own adapters first, the controls below them. Divergence "
        "or a flat curve shows here first.",
        (charts.training_summary(log, data.users) if many else charts.training_curves(log, data.users))
        if log is not None else None,
        None if log is not None else
        "No training log in this input (e.g. a matrix judged with --cells): curves unavailable."))
    model = verdict.model
    out.append(ChartSection(
        "model", "Mixed-effects model: the personalization effect",
        "Coefficient of `diag` (own adapter on own text) on log perplexity, after the adapter's "
        "overall quality and the text's difficulty are absorbed; negative = personalization. "
        "Per-user rows come from the `diag:C(eval)` variant.",
        charts.model_effects(tables.effects_table(model), t["level"], str(model.kind), compact=many)
        if model is not None else None,
        None if model is not None else "The model was not fitted for this input (see warnings)."))
    draws = tables.bootstrap_table(verdict)
    shown_note = ""
    if many and draws.height > BOOTSTRAP_PANELS:
        draws = draws.sort("margin", nulls_last=True).head(BOOTSTRAP_PANELS)
        shown_note = (f" With {len(verdict.users)} users, the {BOOTSTRAP_PANELS} users with the lowest "
                      "margins (those that decide the criteria) are shown.")
    out.append(ChartSection(
        "bootstrap", "Bootstrap distribution of each margin",
        "Histogram of the resampled margins; black: the estimate; red dashed: the interval; "
        "green / orange: the strict / lenient bars." + shown_note,
        charts.bootstrap_histograms(draws, t["level"], t["strict"], t["lenient"])
        if draws.height else None,
        None if draws.height else
        f"No bootstrap draws (mode `{verdict.bootstrap.mode}`): one seed and no per-document "
        "data leave nothing to resample, so there are no intervals."))
    out.append(_population_section(verdict))
    out.append(_similarity_section(verdict, many))
    out += _routing_sections(verdict)
    out += _steps_sections(verdict, many)
    out.append(ChartSection(
        "calibration", "How far the intervals can be trusted: simulated calibration of this design",
        ("Experiments simulated with known margins for this run's design "
         f"({calibration.seeds} seeds, {calibration.n_users} users"
         + (f"; this study's regime: {verdict.bootstrap.regime.label}, seed share of the margins' "
            f"variance {verdict.bootstrap.regime.seed_share:.0%}, simulated with the variance "
            "components estimated from this run" if verdict.bootstrap.regime is not None
            and verdict.bootstrap.regime.label != "unknown" else "")
         + ") and pushed through the same "
         "verdict code. Left: how often the margin interval held the true margin (dashed: the "
         "nominal level). Right: each criterion's status when every user's true margin sits "
         "below, at or above its threshold.") if calibration is not None else "",
        calibration_chart(calibration) if calibration is not None else None,
        None if calibration is not None else
        ("Calibration not computed (one seed: the seed-level bootstrap cannot be calibrated, or "
         "`--no-calibration` was given). `python -m validation.calibrate` measures it.")))
    return out


BOOTSTRAP_PANELS = 6
POPULATION_CHART_USERS = 6   # as the summary sentence (validation.summary_sentence.POPULATION_USERS)


def _population_section(verdict: Verdict) -> ChartSection:
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


def _routing_sections(verdict: Verdict) -> list[ChartSection]:
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


def _similarity_section(verdict: Verdict, many: bool = False) -> ChartSection:
    """Domain-similarity structure (docs/methods.md, section 11): ordered heatmap, split supports
    and the Mantel test in the caption, adapter-vs-transfer scatter when adapters were read."""
    title = "Which users\u2019 adapters transfer to each other? (exploratory)"
    sim = getattr(verdict, "similarity", None)
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
                        charts.similarity_chart(sim.transfer_table(),
                                                sim.pairs_table() if sim.adapter_distance is not None else None,
                                                compact=many)
                        if ok else None, None if ok else "Fewer than two users: no distance to show.")


def _steps_sections(verdict: Verdict, many: bool = False) -> list[ChartSection]:
    """The training-step interaction (docs/methods.md, section 12), only for a run with more than
    one step count: margin and gains versus steps with interval bands; the per-user trend
    sentences and the mixed model's interaction test in the caption."""
    st = getattr(verdict, "steps_analysis", None)
    if st is None or len(st.steps) < 2:
        return []
    m = st.model
    it = getattr(st, "interaction", None)
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
                             charts.steps_summary(st.table(), trends, st.level, st.primary))]
    caption = (f"Each user's margin and gains at every trained step count ({', '.join(map(str, st.steps))}), "
               f"with {st.level:.0%} intervals ({st.interval_method}) from one bootstrap whose seed and "
               "document draws are shared by every count (paired). Exploratory: the criteria are read at "
               f"the primary count{primary} only. "
               + " ".join(s + "." for s in st.sentences()) + model)
    return [ChartSection("steps", "Does the margin change with training? (exploratory)", caption,
                         charts.steps_chart(st.table(), st.level, st.primary))]


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def missing_parts(verdict: Verdict, data: StudyData) -> list[str]:
    """Plain sentences saying what this input lacks and what the page therefore cannot show."""
    notes = []
    if data.manifest is None:
        notes.append("No run manifest: provenance (fixtures, base model, versions, commit) is "
                     "unknown, and the pre-registration could not be checked against a run.")
    if data.docs is None:
        notes.append("No per-document data: the bootstrap resamples seeds only"
                     + (" — and with one seed, nothing." if len(data.seeds) < 2 else "."))
    missing_controls = [c for c in tables.CONTROLS if c not in data.controls]
    if missing_controls:
        notes.append(f"No control row{'s' if len(missing_controls) > 1 else ''} "
                     f"{' and '.join(missing_controls)}: the gains over "
                     f"{' / '.join(missing_controls)} are not available.")
    if data.train_log is None:
        notes.append("No training log: training curves are not shown.")
    if len(data.seeds) < 2:
        notes.append("One seed: run-to-run spread is unknown and the model is fitted by OLS.")
    if verdict.bootstrap.mode is not BootstrapMode.HIERARCHICAL:
        notes.append(f"Bootstrap mode: {verdict.bootstrap.mode} (degraded; see docs/methods.md, section 5).")
    return notes


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(float(value)):
        return "—"
    return f"{100 * float(value):.{digits}f}%"


_ENV.filters["fmt"] = _fmt
_ENV.filters["pct"] = _pct


def _frame_rows(df: pl.DataFrame) -> tuple[list[str], list[tuple[bool, list[str]]]]:
    """Column names, and per row (flagged, formatted values); flagged = a status other than ok."""
    status = df.columns.index("status") if "status" in df.columns else None
    return df.columns, [(status is not None and row[status] not in (None, "ok"),
                         [_fmt(v) for v in row]) for row in df.iter_rows()]


def page_title(data: StudyData, today: _dt.date | None = None) -> str:
    """The run's name and date: `Run <run id>, <YYYY-MM-DD>` (the manifest's `created`); for an
    input without a manifest, the input's name and the date it was judged."""
    manifest = data.manifest
    created = str(manifest.created or "")[:10] if manifest is not None else ""
    if manifest is not None and created:
        return f"Run {manifest.run_id}, {created}"
    name = manifest.run_id if manifest is not None else (data.source.name if data.source else "external input")
    return f"{name}, judged {(today or _dt.datetime.now(_dt.UTC).date()).isoformat()}"


def render_report(verdict: Verdict, data: StudyData, *, title: str | None = None,
                  calibration: DesignCalibration | None = None) -> str:
    """The report as an HTML string (see `write_report`)."""
    manifest = data.manifest
    run_id = manifest.run_id if manifest else (data.source.name if data.source else "external input")
    sections = chart_sections(verdict, data, calibration)
    calibration_rows = (_frame_rows(calibration_table(calibration)) if calibration is not None
                        else None)
    cells_shown, n_cells = tables.page_rows(tables.cells_table(data))
    cells_cols, cells_rows = _frame_rows(cells_shown)
    population = tables.population_tables(verdict)
    crit = tables.criteria_table(verdict).to_dicts()
    manifest_leaves, manifest_records = tables.manifest_tables(manifest.to_json()) if manifest else ([], [])
    provenance, fixtures = tables.provenance_summary(manifest) if manifest else ([], None)
    context = {
        "title": title or page_title(data),
        "answer": summary_sentence(verdict),
        "model_readings": diagnostic_readings(verdict.model) if verdict.model is not None else (),
        "run_id": run_id,
        "verdict": verdict,
        "criteria": crit,
        "users": (verdict.users_table().sort("margin", nulls_last=True) if tables.many_users(verdict)
                  else verdict.users_table()).to_dicts(),
        "model": verdict.model,
        "sections": sections,
        "missing": missing_parts(verdict, data),
        "manifest": manifest_leaves, "manifest_records": manifest_records,
        "provenance": provenance, "fixtures": fixtures,
        "cells_cols": cells_cols, "cells_rows": cells_rows, "n_cells": n_cells,
        "many_users": tables.many_users(verdict),
        "population": getattr(verdict, "population", None),
        "routing": getattr(verdict, "routing", None),
        "routing_figures": (parts[0].to_dicts() if (parts := tables.routing_tables(verdict)) is not None else []),
        "population_shares": population[0].to_dicts() if population else [],
        "population_effects": population[1].to_dicts() if population else [],
        "population_descriptive": (descriptive_note(verdict.population)
                                   if getattr(verdict, "population", None) is not None else None),
        "n_seeds": len(data.seeds), "seeds": data.seeds, "users_list": data.users,
        "controls": data.controls, "source": str(data.source) if data.source else None,
        "steps_line": verdict.steps.line() if getattr(verdict, "steps", None) is not None else None,
        "vega_js": bundle.vega_javascript(),
        "lib_versions": bundle.versions(),
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": tables.flatten_mapping(verdict.settings.to_json()),
        "calibration": calibration, "calibration_rows": calibration_rows,
    }
    return _ENV.get_template("report.html.j2").render(**context)


def write_report(verdict: Verdict, data: StudyData, path: str | Path, *,
                 calibration: DesignCalibration | None = None) -> Path:
    """Write the self-contained report page to `path` atomically; returns the path."""
    return atomic_write_text(Path(path), render_report(verdict, data, calibration=calibration))


def write_charts(verdict: Verdict, data: StudyData, out_dir: str | Path,
                 fmt: str = "svg", scale: float = 2.0, *,
                 calibration: DesignCalibration | None = None) -> list[Path]:
    """Write every available chart as `<out_dir>/<key>.<fmt>` (svg or png), offline via vl-convert.

    `scale` multiplies the PNG resolution (2 = print quality). Returns the files written.
    """
    if fmt not in ("svg", "png"):
        raise ValueError(f"`fmt` must be 'svg' or 'png', got {fmt!r}")
    out_dir = Path(out_dir)
    written = []
    version = bundle.vegalite_minor()
    for s in chart_sections(verdict, data, calibration):
        if s.chart is None:
            continue
        spec = s.chart.to_dict()
        target = out_dir / f"{s.key}.{fmt}"
        if fmt == "svg":
            atomic_write_text(target, vl_convert.vegalite_to_svg(spec, vl_version=version))
        else:
            atomic_write_bytes(target, vl_convert.vegalite_to_png(spec, vl_version=version,
                                                                  scale=scale))
        written.append(target)
    return written
