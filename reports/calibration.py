"""The calibration of the run's design (`validation.calibrate.DesignCalibration`): tables and a chart.

Thin functions over the result object; nothing here computes a statistic.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from validation.calibration.results import DesignCalibration

_STATUS_ORDER = ["pass", "inconclusive", "fail"]
_STATUS_COLORS = ["#27ae60", "#bdc3c7", "#c0392b"]
_RELATION_ORDER = ["below", "at", "above"]


def calibration_table(design: DesignCalibration) -> pl.DataFrame:
    """Columns `quantity, value, note`: coverage per interval method, diagonal-effect coverage,
    PASS rate at each threshold, with the design and the number of simulated experiments."""
    rows = [("design", f"{design.seeds} seeds x {design.n_users} users x "
             f"{round(sum(design.n_docs) / len(design.n_docs))} documents",
             f"{design.n_experiments} simulated experiments")]
    if design.seed_share is not None:
        rows.append(("simulated regime", f"{design.regime or 'unnamed'}: seed share {design.seed_share:.0%}",
                     "estimated share of the margins' variance from seed to seed; the rest is "
                     "the held-out documents'"))
    for f in design.by_method:
        used = " (pre-registered)" if f.method == design.method else ""
        rows.append((f"margin CI coverage, {f.method}{used}", f"{f.coverage:.1%}",
                     f"nominal {design.level:.0%}; mean width {f.mean_width:.3f}"))
    diag = ("n/a" if design.diagonal_effect_coverage is None
            else f"{design.diagonal_effect_coverage:.1%}")
    rows.append(("diagonal-effect CI coverage (mixed model)", diag,
                 f"{design.n_model_fits} model fits"))
    for c in design.pass_rate_at_threshold:
        what = "TRIGGERED" if c.criterion == "catastrophic" else "PASS"
        rows.append((f"{c.criterion.upper()} {what} rate, every user at its threshold", f"{c.pass_rate:.1%}",
                     "should be at most 5%"))
    for c in design.pass_rate_least_favourable:
        rows.append((f"{c.criterion.upper()} PASS rate, least-favourable boundary", f"{c.pass_rate:.1%}",
                     "STRICT: one user at the bar, others far above; LENIENT: all but "
                     "required-1 users at the bar"))
    return pl.DataFrame(rows, schema=["quantity", "value", "note"], orient="row")


def status_rates_table(design: DesignCalibration, method: str | None = None) -> pl.DataFrame:
    """Columns `criterion, relation, true_margin, pass, fail, inconclusive, n` for one method
    (default: the pre-registered one); for CATASTROPHIC pass = TRIGGERED."""
    return pl.DataFrame([
        {"criterion": r.criterion, "relation": r.relation, "true_margin": r.true_margin,
         "pass": r.pass_rate, "fail": r.fail_rate, "inconclusive": r.inconclusive_rate, "n": r.n}
        for r in design.rates(method)
    ])


def calibration_chart(design: DesignCalibration) -> alt.HConcatChart:
    """Left: margin-interval coverage per method against the nominal level. Right: the status
    rates of each criterion with every user's true margin below, at and above its threshold."""
    cov = pl.DataFrame({"method": [f.method for f in design.by_method],
                        "coverage": [f.coverage for f in design.by_method]})
    bars = alt.Chart(alt.Data(values=cov.to_dicts())).mark_bar(clip=True).encode(
        y=alt.Y("method:N", title="interval method"),
        x=alt.X("coverage:Q", scale=alt.Scale(domain=[0.5, 1.0]), axis=alt.Axis(format="%"),
                title="margin CI coverage"),
        tooltip=["method:N", alt.Tooltip("coverage:Q", format=".1%")])
    nominal = alt.Chart(alt.Data(values=[{"x": design.level}])).mark_rule(
        strokeDash=[4, 3], color="#2c3e50").encode(x="x:Q")
    left = (bars + nominal).properties(
        width=220, title=f"Coverage, {design.seeds} seeds ({design.n_experiments} sims)")
    long = status_rates_table(design).unpivot(
        index=["criterion", "relation", "true_margin", "n"], on=_STATUS_ORDER,
        variable_name="status", value_name="rate")
    long = long.with_columns(pl.format("{} {}", pl.col("relation").str.replace(", least favourable", " (LF)"),
                                       (pl.col("true_margin") * 100).round(1)).alias("truth") + "%")
    right = alt.Chart(alt.Data(values=long.to_dicts())).mark_bar().encode(
        x=alt.X("truth:N", sort=None, title="true margin vs threshold"),
        y=alt.Y("rate:Q", axis=alt.Axis(format="%"), title="share of experiments"),
        color=alt.Color("status:N", scale=alt.Scale(domain=_STATUS_ORDER, range=_STATUS_COLORS),
                        # one short line each: a single long title is cut off at the legend's width
                        title=["status", "(pass = TRIGGERED", "for catastrophic)"]),
        order=alt.Order("status_order:Q"),
        tooltip=["criterion:N", "relation:N", "true_margin:Q", "status:N",
                 alt.Tooltip("rate:Q", format=".1%"), "n:Q"],
    ).transform_calculate(
        status_order="indexof(['pass','inconclusive','fail'], datum.status)"
    ).properties(width=120, height=180).facet(
        column=alt.Column("criterion:N", title=None, sort=["strict", "lenient", "catastrophic"])
    ).resolve_scale(x="independent")
    return alt.hconcat(left, right)
