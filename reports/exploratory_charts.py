"""Altair charts of the exploratory analyses (never gating): the domain-similarity structure and the
training-step interaction. Thin functions over tidy tables, on the shared plumbing of `reports.charts`;
nothing here computes a statistic."""

from __future__ import annotations

import altair as alt
import polars as pl

from reports.charts import PCT, WIDTH, _Datasets, _title


def similarity_chart(transfer: pl.DataFrame, pairs: pl.DataFrame | None,
                     compact: bool = False) -> alt.TopLevelMixin:
    """Transfer distance between users as a heatmap ordered by the clustering tree, and, when
    `pairs` has adapter distances, adapter distance vs transfer distance, one dot per user pair.

    `transfer`: row, col, distance, row_order, col_order (`Similarity.transfer_table`);
    `pairs`: pair, transfer_distance, adapter_distance (`Similarity.pairs_table`) or None.
    """
    ds = _Datasets("similarity")
    base = alt.Chart(ds(transfer)).encode(
        x=alt.X("col:N", sort=alt.EncodingSortField("col_order"), title=None, axis=alt.Axis(orient="top")),
        y=alt.Y("row:N", sort=alt.EncodingSortField("row_order"), title=None))
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color("distance:Q", title="transfer distance (nats/token)",
                        scale=alt.Scale(scheme="lighttealblue")),
        tooltip=["row:N", "col:N", alt.Tooltip("distance:Q", format=".4f")])
    labels = base.mark_text(fontSize=11, color="black").encode(text=alt.Text("distance:Q", format=".3f"))
    heat = (alt.layer(cells).properties(width=alt.Step(10), height=alt.Step(10),
                                        title="Transfer distance, users in tree order") if compact else
            alt.layer(cells, labels).properties(width=alt.Step(60), height=alt.Step(30),
                                                title="Transfer distance, users in tree order"))
    if pairs is None or pairs.filter(pl.col("adapter_distance").is_not_null()).height == 0:
        return ds.attach(heat)
    scatter = alt.Chart(ds(pairs)).mark_circle(size=70, color="#2c3e50").encode(
        x=alt.X("adapter_distance:Q", title="adapter distance (parameter space)", scale=alt.Scale(zero=False)),
        y=alt.Y("transfer_distance:Q", title="transfer distance (nats/token)", scale=alt.Scale(zero=False)),
        tooltip=["pair:N", alt.Tooltip("adapter_distance:Q", format=".4g"),
                 alt.Tooltip("transfer_distance:Q", format=".4f")],
    ).properties(width=260, height=220, title="One dot per user pair")
    return ds.attach(alt.hconcat(heat, scatter))


STEP_QUANTITIES = {"margin": "margin (vs best other)", "personalization_gain": "personalization gain (pooled → own)",
                   "regularization_gain": "regularization gain (base → pooled)"}


def steps_chart(table: pl.DataFrame, level: float, primary: int | None = None) -> alt.TopLevelMixin:
    """Margin and both gains versus the training-step count, one row of panels per user, one
    column per quantity: the estimate (line and dots) and its interval (band), x on a log2 axis;
    the primary (pre-registered) count is a dashed rule.

    `table`: user, quantity, steps, value, low, high (`StepsAnalysis.table`; fractions, null
    where not computable: a gain without its control is left out).
    """
    ds = _Datasets("steps")
    table = table.filter(pl.col("value").is_not_null()).with_columns(
        pl.col("quantity").replace_strict(STEP_QUANTITIES, default=pl.col("quantity")).alias("what"))
    order = [STEP_QUANTITIES[q] for q in STEP_QUANTITIES if STEP_QUANTITIES[q] in set(table["what"].to_list())]
    steps = sorted(set(table["steps"].to_list()))
    users = sorted(set(table["user"].to_list()))
    rows = []
    for user in users:
        x = alt.X("steps:Q", title="training steps" if user == users[-1] else None,
                  scale=alt.Scale(type="log", base=2), axis=alt.Axis(values=steps, format="d"))
        panels = []
        for what in order:
            one = ds(table.filter((pl.col("user") == user) & (pl.col("what") == what)))
            base = alt.Chart(one).encode(x=x)
            band = base.mark_area(opacity=0.25, color="#5d8aa8").encode(
                y=alt.Y("low:Q", title=_title(user) if what == order[0] else None, axis=alt.Axis(format="%")),
                y2="high:Q")
            line = base.mark_line(color="#2c3e50", point=True).encode(
                y="value:Q",
                tooltip=["steps:Q", alt.Tooltip("value:Q", format=PCT, title="estimate"),
                         alt.Tooltip("low:Q", format=PCT, title=f"{level:.0%} low"),
                         alt.Tooltip("high:Q", format=PCT, title=f"{level:.0%} high")])
            zero = base.mark_rule(color="#7f8c8d").encode(y=alt.datum(0))
            layers = [band, zero, line]
            if primary is not None:
                layers.append(base.mark_rule(color="#27ae60", strokeDash=[4, 3]).encode(x=alt.datum(primary)))
            panels.append(alt.layer(*layers).properties(width=170, height=110, title=what if not rows else ""))
        rows.append(alt.hconcat(*panels, spacing=10))
    return ds.attach(alt.vconcat(*rows, spacing=8))


def steps_summary(table: pl.DataFrame, trends: pl.DataFrame, level: float,
                  primary: int | None = None) -> alt.VConcatChart:
    """Many users: one panel per quantity with one thin line per user and the median over users
    (thick), x on a log2 axis, the primary count dashed; below, each user's slope of the margin per
    doubling of the steps with its interval, sorted, coloured by what the interval says.

    `table`: as `steps_chart`. `trends`: user, slope, low, high, direction (fractions per doubling).
    """
    ds = _Datasets("steps")
    table = table.filter(pl.col("value").is_not_null()).with_columns(
        pl.col("quantity").replace_strict(STEP_QUANTITIES, default=pl.col("quantity")).alias("what"))
    order = [STEP_QUANTITIES[q] for q in STEP_QUANTITIES if STEP_QUANTITIES[q] in set(table["what"].to_list())]
    steps = sorted(set(table["steps"].to_list()))
    x = alt.X("steps:Q", title="training steps", scale=alt.Scale(type="log", base=2),
              axis=alt.Axis(values=steps, format="d"))
    panels = []
    for what in order:
        base = alt.Chart(ds(table.filter(pl.col("what") == what))).encode(x=x)
        lines = base.mark_line(color="#5d8aa8", opacity=0.35, strokeWidth=1).encode(
            y=alt.Y("value:Q", title=what, axis=alt.Axis(format="%")), detail="user:N",
            tooltip=["user:N", "steps:Q", alt.Tooltip("value:Q", format=PCT, title="estimate"),
                     alt.Tooltip("low:Q", format=PCT, title=f"{level:.0%} low"),
                     alt.Tooltip("high:Q", format=PCT, title=f"{level:.0%} high")])
        median = base.mark_line(color="#2c3e50", strokeWidth=3, point=True).encode(
            y="median(value):Q", tooltip=["steps:Q", alt.Tooltip("median(value):Q", format=PCT,
                                                                 title="median over users")])
        layers = [base.mark_rule(color="#7f8c8d").encode(y=alt.datum(0)), lines, median]
        if primary is not None:
            layers.append(base.mark_rule(color="#27ae60", strokeDash=[4, 3]).encode(x=alt.datum(primary)))
        panels.append(alt.layer(*layers).properties(width=230, height=160, title=what))
    colors = alt.Scale(domain=["rises", "flat", "falls", "unknown"],
                       range=["#27ae60", "#7f8c8d", "#c0392b", "#bdc3c7"])
    tb = alt.Chart(ds(trends)).encode(y=alt.Y("user:N", title="evaluation user",
                                               sort=alt.EncodingSortField("slope", order="descending"),
                                               axis=alt.Axis(labelFontSize=9)))
    slope = alt.layer(
        alt.Chart().mark_rule(color="#7f8c8d").encode(x=alt.datum(0)),
        tb.mark_rule(strokeWidth=2).transform_filter("isValid(datum.low) && isValid(datum.high)").encode(
            x=alt.X("low:Q", title=f"margin slope per doubling of the steps, {level:.0%} interval",
                    axis=alt.Axis(format="%")), x2="high:Q", color=alt.Color("direction:N", scale=colors)),
        tb.mark_point(filled=True, size=30).encode(
            x="slope:Q", color=alt.Color("direction:N", scale=colors, title="the margin"),
            tooltip=["user:N", alt.Tooltip("slope:Q", format=PCT), alt.Tooltip("low:Q", format=PCT),
                     alt.Tooltip("high:Q", format=PCT), "direction:N"]),
    ).properties(width=WIDTH, height=alt.Step(13))
    return ds.attach(alt.vconcat(alt.hconcat(*panels, spacing=14), slope, spacing=18))
