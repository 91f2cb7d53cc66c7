"""The report page: one self-contained HTML file, and the same charts as SVG/PNG files.

`render_report(result, data)` is what `python -m validation.verdict` calls, with its
`validation.study_verdict.StudyVerdict` (a bare `Verdict` gives the page without the exploratory
analyses and the calibration). The page holds
one inline copy of Vega/Vega-Lite/vega-embed (`bundle.py`), one JSON spec per chart, the tables,
and a Content-Security-Policy that forbids every network request; it opens from file://.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import jinja2
import polars as pl
import vl_convert

from common.atomic import atomic_write_bytes, atomic_write_text
from reports import bundle, charts, tables
from reports.calibration import calibration_chart, calibration_table
from reports.sections import (
    BOOTSTRAP_PANELS,
    ChartSection,
    population_section,
    routing_sections,
    similarity_section,
    steps_sections,
)
from validation.inputs.study import StudyData
from validation.judgment.population import NO_USER_MEASURED, descriptive_note
from validation.judgment.results import Verdict
from validation.stats.types import BootstrapMode
from validation.study_verdict import StudyVerdict
from validation.text.model_reading import diagnostic_readings
from validation.text.summary_sentence import summary_sentence

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
)


def _thresholds(verdict: Verdict) -> dict[str, float]:
    by_name = {c.name: c.threshold for c in verdict.criteria}
    return {"strict": by_name.get("strict", 0.10), "lenient": by_name.get("lenient", 0.05),
            "delta": by_name.get("catastrophic", 0.02), "level": verdict.bootstrap.level}


def chart_sections(result: StudyVerdict | Verdict, data: StudyData) -> list[ChartSection]:
    """Every chart of the report, in page order; missing inputs give an explained gap.

    The calibration is `validation.calibrate.calibration_for_study`'s result for the run's design.
    """
    result = StudyVerdict.of(result)
    verdict, calibration = result.verdict, result.calibration
    t = _thresholds(verdict)
    margins = verdict.users_table()
    matrix, kind = tables.matrix_table(verdict, data, result.similarity)
    controls = data.controls
    many = tables.many_users(verdict)
    order_words = (" Users are in the order of the similarity clustering (users whose adapters transfer "
                   "to each other side by side)." if result.similarity is not None else "")
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
    decomposition = verdict.decomposition
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
    out.append(population_section(verdict))
    out.append(similarity_section(result.similarity, many))
    out += routing_sections(verdict)
    out += steps_sections(result.steps_analysis, many)
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


def render_report(result: StudyVerdict | Verdict, data: StudyData, *, title: str | None = None) -> str:
    """The report as an HTML string (see `write_report`)."""
    result = StudyVerdict.of(result)
    verdict, calibration = result.verdict, result.calibration
    manifest = data.manifest
    run_id = manifest.run_id if manifest else (data.source.name if data.source else "external input")
    sections = chart_sections(result, data)
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
        "population": verdict.population,
        "routing": verdict.routing,
        "routing_figures": (parts[0].to_dicts() if (parts := tables.routing_tables(verdict)) is not None else []),
        "population_shares": population[0].to_dicts() if population else [],
        "no_user_measured": NO_USER_MEASURED,
        "population_effects": population[1].to_dicts() if population else [],
        "population_descriptive": (descriptive_note(verdict.population)
                                   if verdict.population is not None else None),
        "n_seeds": len(data.seeds), "seeds": data.seeds, "users_list": data.users,
        "controls": data.controls, "source": str(data.source) if data.source else None,
        "steps_line": verdict.steps.line() if verdict.steps is not None else None,
        "vega_js": bundle.vega_javascript(),
        "lib_versions": bundle.versions(),
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": tables.flatten_mapping(verdict.settings.to_json()),
        "calibration": calibration, "calibration_rows": calibration_rows,
    }
    return _ENV.get_template("report.html.j2").render(**context)


def write_report(result: StudyVerdict | Verdict, data: StudyData, path: str | Path) -> Path:
    """Write the self-contained report page to `path` atomically; returns the path."""
    return atomic_write_text(Path(path), render_report(result, data))


def write_charts(result: StudyVerdict | Verdict, data: StudyData, out_dir: str | Path,
                 fmt: str = "svg", scale: float = 2.0) -> list[Path]:
    """Write every available chart as `<out_dir>/<key>.<fmt>` (svg or png), offline via vl-convert.

    `scale` multiplies the PNG resolution (2 = print quality). Returns the files written.
    """
    if fmt not in ("svg", "png"):
        raise ValueError(f"`fmt` must be 'svg' or 'png', got {fmt!r}")
    out_dir = Path(out_dir)
    written = []
    version = bundle.vegalite_minor()
    for s in chart_sections(result, data):
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
