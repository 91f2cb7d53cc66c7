"""Altair charts: thin functions over the tidy tables of `tables.py`.

Each function takes a polars table with the columns named in its docstring (plus thresholds read
from the verdict) and returns an Altair chart. Nothing here computes a statistic: histogram
binning and axis scales are Vega-Lite's drawing of the numbers it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import polars as pl

WIDTH = 560
PCT = ".1%"
STATUS_COLORS = {"inverted": "#c0392b", "ok": "#2c3e50"}


def _title(name: str) -> str:
    """A user name as a chart title: Vega-Lite copies titles into tooltip expressions unescaped,
    where a newline or other control character is a parse error that blanks the chart."""
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in str(name))


class _Datasets:
    """Rows of one chart, referenced by name and attached once to the top-level spec.

    Inline values inside layers would be deep-copied by Altair at every composition step (seconds
    for 30,000 bootstrap draws); named datasets are copied once. No URL, no Altair row limit.
    """

    def __init__(self, prefix: str):
        self.prefix, self.values = prefix, {}

    def __call__(self, df: pl.DataFrame) -> alt.NamedData:
        name = f"{self.prefix}_{len(self.values)}"
        # JSON has no NaN/inf (a diverged loss, a missing cell): they become null, drawn as gaps
        floats = [c for c, t in df.schema.items() if t.is_float()]
        df = df.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats)
        self.values[name] = df.to_dicts()
        return alt.NamedData(name=name)

    def attach(self, chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
        chart.datasets = self.values  # set in place: `.properties()` would deep-copy the rows
        return chart


def _threshold_rules(ds: _Datasets, lines: list[tuple[float, str, str]]) -> alt.LayerChart:
    """Vertical reference lines at x = value, dashed, labelled at the top."""
    df = pl.DataFrame([{"x": x, "label": label, "color": color} for x, label, color in lines])
    base = alt.Chart(ds(df)).encode(x="x:Q")
    rules = base.mark_rule(strokeDash=[4, 3]).encode(
        color=alt.Color("color:N", scale=None), tooltip=["label:N", alt.Tooltip("x:Q", format=PCT)])
    labels = base.mark_text(angle=270, align="left", dx=2, dy=-4, fontSize=10).encode(
        y=alt.value(2), text="label:N", color=alt.Color("color:N", scale=None))
    return rules + labels


def reference_lines(strict: float, lenient: float, delta: float) -> list[tuple[float, str, str]]:
    return [
        (0.0, "0", "#7f8c8d"),
        (lenient, f"lenient {lenient:.0%}", "#e67e22"),
        (strict, f"strict {strict:.0%}", "#27ae60"),
        (delta, f"+δ {delta:.0%}", "#8e44ad"),
        (-delta, f"−δ {delta:.0%}", "#8e44ad"),
    ]


def matrix_heatmap(matrix: pl.DataFrame, kind: str = "geometric-mean", compact: bool = False) -> alt.VConcatChart:
    """Heatmap of perplexity, adapter rows x evaluation columns, value labels, diagonal outlined.

    `matrix`: adapter, eval, ppl, n_seeds, seed (null unless per-seed), group ("user adapters" |
    "controls"), is_diagonal, row_order. Controls get their own panel below the user rows; with
    `kind="per-seed"` each seed is a column of panels. Columns follow `col_order` (the users'
    order); `compact` (many users): small cells, no value labels (the tooltip has them).
    """
    ds = _Datasets("matrix")
    color = alt.Color("ppl:Q", title="perplexity", legend=alt.Legend(format=".3~g"),
                      # a light scheme keeps the black value labels legible on every cell
                      scale=alt.Scale(type="log", scheme="lighttealblue"))
    panels = []
    for group in ("user adapters", "controls"):
        part = matrix.filter(pl.col("group") == group)
        if part.height == 0:
            continue
        base = alt.Chart(ds(part)).encode(
            x=alt.X("eval:N", title="evaluated on (held-out text of)" if not panels else None,
                    sort=alt.EncodingSortField("col_order"),
                    axis=alt.Axis(orient="top", labels=not panels, ticks=not panels,
                                  labelFontSize=9 if compact else 11)),
            y=alt.Y("adapter:N", sort=alt.EncodingSortField("row_order"), title=group))
        cells = base.mark_rect(stroke="white").encode(
            color=color, tooltip=["adapter:N", "eval:N", alt.Tooltip("ppl:Q", format=".3f"),
                                  "n_seeds:Q", "seed:O"])
        diag = base.transform_filter("datum.is_diagonal").mark_rect(
            fill=None, stroke="#d62728", strokeWidth=1.5 if compact else 3)
        labels = base.mark_text(fontSize=12, color="black").encode(
            text=alt.Text("ppl:Q", format=".2f"))
        layer = (alt.layer(cells, diag).properties(width=alt.Step(12), height=alt.Step(12)) if compact else
                 alt.layer(cells, diag, labels).properties(width=alt.Step(90), height=alt.Step(30)))
        if kind == "per-seed":
            layer = layer.facet(column=alt.Column("seed:O", title="seed" if not panels else None))
        panels.append(layer)
    return ds.attach(alt.vconcat(*panels, spacing=12).resolve_scale(color="shared"))


def margin_forest(margins: pl.DataFrame, strict: float, lenient: float, delta: float,
                  level: float, compact: bool = False) -> alt.LayerChart:
    """Forest plot: each user's diagonal margin with its interval, against the criteria's lines.

    `margins`: user, margin, ci_low, ci_high, best_other, inverted. `compact` (many users): users
    sorted by margin, one thin row each, the best other adapter in the tooltip only.
    """
    ds = _Datasets("margin")
    sort = alt.EncodingSortField("margin", order="descending") if compact else alt.Undefined
    base = alt.Chart(ds(margins)).encode(y=alt.Y("user:N", title="evaluation user", sort=sort,
                                                 axis=alt.Axis(labelFontSize=9) if compact else alt.Undefined))
    color = alt.condition("datum.inverted", alt.value(STATUS_COLORS["inverted"]),
                          alt.value(STATUS_COLORS["ok"]))
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title=f"diagonal margin (own vs best other), {level:.0%} interval",
                axis=alt.Axis(format="%")),
        x2="ci_high:Q", color=color)
    points = base.mark_point(filled=True, size=30 if compact else 90).encode(
        x="margin:Q", color=color,
        tooltip=["user:N", alt.Tooltip("margin:Q", format=PCT), alt.Tooltip("ci_low:Q", format=PCT),
                 alt.Tooltip("ci_high:Q", format=PCT), "best_other:N", "inverted:N"])
    text = base.mark_text(align="left", dx=8, dy=-9, fontSize=10).encode(
        x="margin:Q", text=alt.Text("best_other:N"), color=alt.value("#555"))
    lines = _threshold_rules(ds, reference_lines(strict, lenient, delta))
    if compact:
        return ds.attach(alt.layer(lines, bars, points).properties(width=WIDTH, height=alt.Step(13)))
    return ds.attach(alt.layer(lines, bars, points, text).properties(width=WIDTH,
                                                                    height=alt.Step(40)))


def seed_margins_chart(seed_margins: pl.DataFrame, margins: pl.DataFrame, strict: float,
                       lenient: float, delta: float, compact: bool = False) -> alt.LayerChart:
    """Per-seed margins (one dot per seed) beside the pooled point estimate (a tick).

    `seed_margins`: user, seed, margin, best_other. `margins`: user, margin. `compact` (many
    users): one thin row per user, sorted by margin, seeds overlaid.
    """
    ds = _Datasets("seed")
    if compact:
        order = margins.sort("margin", descending=True, nulls_last=True)["user"].to_list()
        y = alt.Y("user:N", title="evaluation user", sort=order, axis=alt.Axis(labelFontSize=9))
        dots = alt.Chart(ds(seed_margins)).mark_circle(size=14, opacity=0.6).encode(
            x=alt.X("margin:Q", title="diagonal margin within each seed", axis=alt.Axis(format="%")),
            y=y, color=alt.Color("seed:N", title="seed"),
            tooltip=["user:N", "seed:N", alt.Tooltip("margin:Q", format=PCT), "best_other:N"])
        ticks = alt.Chart(ds(margins.select("user", "margin"))).mark_tick(
            color="black", thickness=2, size=10).encode(x="margin:Q", y=y)
        lines = _threshold_rules(ds, reference_lines(strict, lenient, delta))
        return ds.attach(alt.layer(lines, dots, ticks).properties(width=WIDTH, height=alt.Step(13)))
    dots = alt.Chart(ds(seed_margins)).mark_circle(size=60, opacity=0.8).encode(
        x=alt.X("margin:Q", title="diagonal margin within each seed", axis=alt.Axis(format="%")),
        y=alt.Y("user:N", title="evaluation user"),
        yOffset=alt.YOffset("seed:N"),
        color=alt.Color("seed:N", title="seed"),
        tooltip=["user:N", "seed:N", alt.Tooltip("margin:Q", format=PCT), "best_other:N"])
    ticks = alt.Chart(ds(margins.select("user", "margin"))).mark_tick(
        color="black", thickness=2, size=36).encode(
        x="margin:Q", y="user:N", tooltip=["user:N", alt.Tooltip("margin:Q", format=PCT)])
    lines = _threshold_rules(ds, reference_lines(strict, lenient, delta))
    n_users = max(1, seed_margins["user"].n_unique())
    return ds.attach(alt.layer(lines, dots, ticks).properties(width=WIDTH, height=60 * n_users))


def decomposition_chart(gains: pl.DataFrame) -> alt.FacetChart:
    """Per user: regularization (base -> pooled), personalization (pooled -> own), total, and with
    leave-one-out controls base -> loo:<user>, loo:<user> -> pooled and loo:<user> -> own.

    `gains`: user, component, label, order, gain, ci_low, ci_high (intervals may be null).
    """
    ds = _Datasets("decomposition")
    order = [label for label in gains.sort("order")["label"].unique(maintain_order=True)]
    palette = {"new_user": "#9b59b6", "seen_user": "#1abc9c", "regularization": "#3498db",
               "personalization": "#e74c3c", "loo_to_own": "#e67e22", "total": "#7f8c8d"}
    by_label = dict(zip(gains["label"], gains["component"], strict=True))
    color = alt.Color("label:N", title=None, sort=order,
                      scale=alt.Scale(domain=order, range=[palette[by_label[x]] for x in order]),
                      legend=alt.Legend(orient="bottom", columns=1, labelLimit=400))
    y = alt.Y("label:N", sort=order, title=None, axis=None)
    base = alt.Chart().encode(y=y)
    bars = base.mark_bar(height=16).encode(
        x=alt.X("gain:Q", title="gain (1 − ppl ratio)", axis=alt.Axis(format="%")), color=color,
        tooltip=["user:N", "label:N", alt.Tooltip("gain:Q", format=PCT),
                 alt.Tooltip("ci_low:Q", format=PCT), alt.Tooltip("ci_high:Q", format=PCT)])
    errs = base.transform_filter("isValid(datum.ci_low)").mark_rule(color="black").encode(
        x="ci_low:Q", x2="ci_high:Q")
    # the value is written just right of the bar or of its interval, whichever ends later
    text = base.transform_calculate(
        label_at="isValid(datum.ci_high) ? max(datum.gain, datum.ci_high) : datum.gain"
    ).mark_text(align="left", dx=4, fontSize=10).encode(
        x=alt.X("label_at:Q"), text=alt.Text("gain:Q", format=PCT))
    zero = alt.Chart().mark_rule(color="#7f8c8d").encode(x=alt.datum(0))
    panel = alt.layer(zero, bars, errs, text).properties(width=WIDTH - 80, height=alt.Step(20))
    return ds.attach(panel.facet(data=ds(gains), row=alt.Row(
        "user:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left"))))


def training_curves(log: pl.DataFrame, users: Sequence[str] | None = None) -> alt.TopLevelMixin:
    """Training loss per step, one panel per adapter, one line per seed: the users' adapters
    first, then the controls (`pooled`, leave-one-out, ...: every adapter not in `users`) in a
    row of their own, so no control is read as a user. `users=None`: every adapter is a user's.

    `log`: seed, adapter, step, loss.
    """
    ds = _Datasets("training")
    names = log["adapter"].unique(maintain_order=True).to_list()
    user_set = set(names if users is None else users)

    def panels(rows: pl.DataFrame, title: str) -> alt.FacetChart:
        line = alt.Chart().mark_line(strokeWidth=1.2, opacity=0.85).encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("loss:Q", title="training loss", scale=alt.Scale(zero=False)),
            color=alt.Color("seed:N", title="seed"),
            tooltip=["adapter:N", "seed:N", "step:Q", alt.Tooltip("loss:Q", format=".4f")])
        return line.properties(width=240, height=150).facet(
            data=ds(rows), facet=alt.Facet("adapter:N", title=None), columns=3,
            title=alt.TitleParams(title, anchor="start", fontSize=12))

    mine = log.filter(pl.col("adapter").is_in(list(user_set)))
    controls = log.filter(~pl.col("adapter").is_in(list(user_set)))
    parts = [panels(df, title) for df, title in
             ((mine, "users' own adapters"), (controls, "controls (not users)")) if df.height]
    return ds.attach(parts[0] if len(parts) == 1 else alt.vconcat(*parts, spacing=24))


def model_effects(effects: pl.DataFrame, level: float, kind: str, compact: bool = False) -> alt.LayerChart:
    """The model's personalization effects (log-ratio of ppl) with their Wald intervals.

    `effects`: term, scope, effect, ci_low, ci_high, se. Negative = own adapter lowers log ppl.
    """
    ds = _Datasets("model")
    base = alt.Chart(ds(effects)).encode(
        y=alt.Y("term:N", sort=None, title=None))
    color = alt.Color("scope:N", title=None, scale=alt.Scale(range=["#2c3e50", "#3498db"]))
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title=f"effect on log perplexity ({kind}, {level:.0%} Wald interval)"),
        x2="ci_high:Q", color=color)
    points = base.mark_point(filled=True, size=80).encode(
        x="effect:Q", color=color,
        tooltip=["term:N", alt.Tooltip("effect:Q", format=".4f"), alt.Tooltip("se:Q", format=".4f"),
                 alt.Tooltip("ci_low:Q", format=".4f"), alt.Tooltip("ci_high:Q", format=".4f")])
    zero = alt.Chart().mark_rule(color="#7f8c8d", strokeDash=[4, 3]).encode(x=alt.datum(0))
    return ds.attach(alt.layer(zero, bars, points).properties(width=WIDTH, height=alt.Step(12 if compact else 30)))


def bootstrap_histograms(draws: pl.DataFrame, level: float, strict: float,
                         lenient: float) -> alt.VConcatChart:
    """Histogram of each user's bootstrap draws of the margin, with the point and interval.

    `draws`: user, margin, ci_low, ci_high, draws (list of floats; flattened by Vega-Lite).
    One panel per user, each with its own one-row data.
    """
    ds = _Datasets("bootstrap")
    panels = []
    for i, row in enumerate(draws.iter_rows(named=True)):
        one = ds(pl.DataFrame([row], schema=draws.schema))
        last = i == draws.height - 1
        # flatten -> explicit bin transform; an encoding-level bin loses the flattened rows as
        # soon as another layer shares the x scale (Vega-Lite 6.4)
        hist = alt.Chart(one).transform_flatten(["draws"], as_=["draw"]).transform_bin(
            "bin_start", "draw", bin=alt.Bin(maxbins=60)).mark_bar(
            color="#5d8aa8", opacity=0.85).encode(
            x=alt.X("bin_start:Q", bin="binned",
                    title="bootstrap draws of the diagonal margin" if last else None,
                    axis=alt.Axis(format="%")),
            x2="bin_start_end:Q",
            y=alt.Y("count():Q", title=_title(row["user"])))
        rules = alt.Chart(one)
        point = rules.mark_rule(color="black", strokeWidth=2).encode(
            x="margin:Q", tooltip=[alt.Tooltip("margin:Q", format=PCT, title="estimate")])
        low = rules.mark_rule(color="#c0392b", strokeDash=[4, 3]).encode(
            x="ci_low:Q", tooltip=[alt.Tooltip("ci_low:Q", format=PCT, title=f"{level:.0%} low")])
        high = rules.mark_rule(color="#c0392b", strokeDash=[4, 3]).encode(
            x="ci_high:Q",
            tooltip=[alt.Tooltip("ci_high:Q", format=PCT, title=f"{level:.0%} high")])
        bars = alt.Chart(one).mark_rule(color="#27ae60").encode(x=alt.datum(strict)) + \
            alt.Chart(one).mark_rule(color="#e67e22").encode(x=alt.datum(lenient))
        panels.append(alt.layer(hist, bars, point, low, high).properties(width=WIDTH, height=80))
    return ds.attach(alt.vconcat(*panels, spacing=8).resolve_scale(x="shared"))


def decomposition_summary(gains: pl.DataFrame) -> alt.LayerChart:
    """Many users: one row per step of the decomposition, one tick per user (its gain), and the
    median across users as a black bar; the per-user intervals are in the tooltip.

    `gains`: as `decomposition_chart`.
    """
    ds = _Datasets("decomposition")
    order = [label for label in gains.sort("order")["label"].unique(maintain_order=True)]
    base = alt.Chart(ds(gains)).encode(y=alt.Y("label:N", sort=order, title=None,
                                               axis=alt.Axis(labelLimit=360)))
    ticks = base.mark_tick(opacity=0.5, thickness=1.5, size=18, color="#2c3e50").encode(
        x=alt.X("gain:Q", title="gain (1 − ppl ratio), one tick per user", axis=alt.Axis(format="%")),
        tooltip=["user:N", "label:N", alt.Tooltip("gain:Q", format=PCT),
                 alt.Tooltip("ci_low:Q", format=PCT), alt.Tooltip("ci_high:Q", format=PCT)])
    median = base.mark_tick(color="#c0392b", thickness=3, size=26).encode(
        x="median(gain):Q", tooltip=[alt.Tooltip("median(gain):Q", format=PCT, title="median over users")])
    zero = alt.Chart().mark_rule(color="#7f8c8d").encode(x=alt.datum(0))
    return ds.attach(alt.layer(zero, ticks, median).properties(width=WIDTH, height=alt.Step(34)))


def training_summary(log: pl.DataFrame, users: Sequence[str]) -> alt.VConcatChart:
    """Many adapters: two panels (the users' own adapters, the controls), one thin line per
    adapter (its mean loss over seeds at each step), so a diverging adapter still stands out.

    `log`: seed, adapter, step, loss.
    """
    ds = _Datasets("training")
    mean = log.group_by("adapter", "step").agg(pl.col("loss").mean()).sort("adapter", "step")
    user_set = set(users)
    parts = []
    for rows, title in ((mean.filter(pl.col("adapter").is_in(list(user_set))), "users' own adapters"),
                        (mean.filter(~pl.col("adapter").is_in(list(user_set))), "controls (not users)")):
        if rows.height:
            parts.append(alt.Chart(ds(rows)).mark_line(strokeWidth=1, opacity=0.35, color="#2c3e50").encode(
                x=alt.X("step:Q", title="step"), y=alt.Y("loss:Q", title="training loss (mean over seeds)",
                                                         scale=alt.Scale(zero=False)),
                detail="adapter:N", tooltip=["adapter:N", "step:Q", alt.Tooltip("loss:Q", format=".4f")],
            ).properties(width=WIDTH, height=160, title=alt.TitleParams(title, anchor="start", fontSize=12)))
    return ds.attach(alt.vconcat(*parts, spacing=20))


def population_chart(users: pl.DataFrame, effects: pl.DataFrame) -> alt.TopLevelMixin:
    """Per effect (own vs other users, own vs loo, loo vs base): each user's effect (the
    model's BLUP, as a gain 1 - ppl ratio), sorted, as dots; the population average with its
    interval (dark band) and the prediction interval for a new user (light band).

    `users`: key, user, gain; `effects`: key, what, gain, gain_low, gain_high, new_low, new_high.
    """
    ds = _Datasets("population")
    panels = []
    for e in effects.iter_rows(named=True):
        one = ds(pl.DataFrame([e]))
        rows = users.filter(pl.col("key") == e["key"]).with_columns(
            pl.int_range(pl.len()).alias("rank"))
        x = alt.X("gain:Q", title=_title(e["what"]), axis=alt.Axis(format="%"))
        new = alt.Chart(one).mark_rect(color="#aed6f1", opacity=0.5).encode(x=alt.X("new_low:Q"), x2="new_high:Q")
        avg = alt.Chart(one).mark_rect(color="#2e86c1", opacity=0.6).encode(x=alt.X("gain_low:Q"), x2="gain_high:Q")
        dots = alt.Chart(ds(rows)).mark_circle(size=22, color="#2c3e50").encode(
            x=x, y=alt.Y("rank:O", axis=None, title=None),
            tooltip=["user:N", alt.Tooltip("gain:Q", format=PCT)])
        zero = alt.Chart().mark_rule(color="#7f8c8d", strokeDash=[4, 3]).encode(x=alt.datum(0))
        panels.append(alt.layer(new, avg, zero, dots).properties(width=WIDTH, height=min(240, 6 * rows.height + 40)))
    return ds.attach(alt.vconcat(*panels, spacing=16).resolve_scale(x="independent"))


def noise_curve_chart(curve: pl.DataFrame, strict: float, level: float, sigma: float) -> alt.LayerChart:
    """The NOISE degradation curve: each user's margin (own, or noisy, adapter vs the best other
    user adapter) at every relative noise level, with its interval as a bar; sigma 0 is the
    unperturbed adapter. Dashed: the STRICT bar; the pre-registered `noise_sigma` is labelled.

    `curve`: user, sigma, margin, ci_low, ci_high (fractions).
    """
    ds = _Datasets("noise")
    curve = curve.with_columns(pl.col("sigma").map_elements(lambda s: f"{s:g}", return_dtype=pl.String)
                               .alias("level"))
    levels = [f"{s:g}" for s in sorted(set(curve["sigma"].to_list()))]
    x = alt.X("level:O", title=f"relative noise sigma on every parameter (criterion at {sigma:g})", sort=levels,
              axis=alt.Axis(labelAngle=0))
    color = alt.Color("user:N", title="user")
    offset = alt.XOffset("user:N")
    base = alt.Chart(ds(curve)).encode(x=x, xOffset=offset, color=color)
    bars = base.mark_rule(strokeWidth=2).encode(y=alt.Y("ci_low:Q", title=f"margin, {level:.0%} interval",
                                                        axis=alt.Axis(format="%")), y2="ci_high:Q")
    points = base.mark_point(filled=True, size=60).encode(
        y="margin:Q", tooltip=["user:N", alt.Tooltip("sigma:Q", title="sigma"), alt.Tooltip("margin:Q", format=PCT),
                               alt.Tooltip("ci_low:Q", format=PCT), alt.Tooltip("ci_high:Q", format=PCT)])
    bar = alt.Chart(ds(pl.DataFrame({"y": [strict], "label": [f"strict {strict:.0%}"]}))).mark_rule(
        strokeDash=[4, 3], color="#27ae60").encode(y="y:Q", tooltip=["label:N"])
    zero = alt.Chart(ds(pl.DataFrame({"y": [0.0]}))).mark_rule(color="#7f8c8d").encode(y="y:Q")
    return ds.attach(alt.layer(zero, bar, bars, points).properties(width=WIDTH, height=260))


ROUTING_QUANTITIES = ("own vs average", "average vs base")


def pairs_chart(pairs: pl.DataFrame, averaging_margin: float, level: float) -> alt.HConcatChart:
    """AVERAGING per pair: left, each contributor's own adapter against the pair's average on the
    contributor's text (dashed: `averaging_margin`); right, the average's gain over `base` on each
    contributor's text (0 line: above it the average helps). One row per (pair, contributor).

    `pairs`: pair, user, quantity, gain, ci_low, ci_high, reading, transfer_distance.
    """
    ds = _Datasets("pairs")
    pairs = pairs.with_columns((pl.col("pair") + pl.lit(" · on ") + pl.col("user")).alias("row"))
    order = pairs.select("row").unique(maintain_order=True)["row"].to_list()
    panels = []
    for what in ROUTING_QUANTITIES:
        part = pairs.filter(pl.col("quantity") == what)
        if not part.height:
            continue
        line = averaging_margin if what == ROUTING_QUANTITIES[0] else 0.0
        base = alt.Chart(ds(part)).encode(y=alt.Y("row:N", title=None, sort=order,
                                                  axis=alt.Axis(labelLimit=260) if not panels else None))
        bars = base.mark_rule(strokeWidth=2, color="#2c3e50").encode(
            x=alt.X("ci_low:Q", title=f"{what}, {level:.0%} interval", axis=alt.Axis(format="%")), x2="ci_high:Q")
        points = base.mark_point(filled=True, size=60, color="#2c3e50").encode(
            x="gain:Q", tooltip=["pair:N", "user:N", alt.Tooltip("gain:Q", format=PCT),
                                 alt.Tooltip("ci_low:Q", format=PCT), alt.Tooltip("ci_high:Q", format=PCT),
                                 "reading:N", alt.Tooltip("transfer_distance:Q", format=".3f")])
        rule = alt.Chart(ds(pl.DataFrame({"x": [line]}))).mark_rule(
            strokeDash=[4, 3], color="#27ae60" if line else "#7f8c8d").encode(x="x:Q")
        panels.append(alt.layer(rule, bars, points).properties(width=260, height=alt.Step(22), title=what))
    return ds.attach(alt.hconcat(*panels, spacing=12))
