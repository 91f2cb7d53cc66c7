"""Tidy polars tables for display, read off the validation result objects and the run's tables.

Reshaping only: every number here was computed by `validation` (or measured by the runner).
Column names are stable; the chart functions in `charts.py` and the template rely on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import polars as pl

from common.contract import CONTROLS, LOO_PREFIX, ROUTING_PREFIXES
from validation.contract.manifest import Manifest
from validation.exploratory.similarity import Similarity
from validation.inputs.study import StudyData
from validation.judgment.results import Verdict
from validation.stats.fits import ModelFit
from validation.stats.types import _num

# Order of the gains in the decomposition chart, with the words the page uses. The `loo:<user>`
# steps come from `Verdict.decomposition` (absent without leave-one-out controls).
GAIN_COMPONENTS = (
    ("new_user", "what a new user gets: base → loo:<user> (never saw the user)"),
    ("seen_user", "pooled's gain from having seen the user: loo:<user> → pooled"),
    ("regularization", "regularization: base → pooled"),
    ("personalization", "personalization: pooled → own adapter"),
    ("loo_to_own", "personalization vs what a new user gets: loo:<user> → own adapter"),
    ("total", "total: base → own adapter"),
)


def _is_control(col: str = "adapter") -> pl.Expr:
    """`base`, `pooled`, `loo:<user>` or a routing row (common.contract.is_control, as an expression)."""
    out = pl.col(col).is_in(list(CONTROLS)) | pl.col(col).str.starts_with(LOO_PREFIX)
    for prefix in ROUTING_PREFIXES:
        out = out | pl.col(col).str.starts_with(prefix)
    return out


def _is_routing(col: str = "adapter") -> pl.Expr:
    out = pl.lit(False)
    for prefix in ROUTING_PREFIXES:
        out = out | pl.col(col).str.starts_with(prefix)
    return out


def gains_table(verdict: Verdict) -> pl.DataFrame:
    """One row per (user, component) with the gain and its interval; missing controls -> no row."""
    rows = []
    steps = {d.user: d for d in verdict.decomposition}
    for u in verdict.users:
        values = {
            "regularization": (u.regularization_gain, u.regularization_ci),
            "personalization": (u.personalization_gain, u.personalization_ci),
            "total": (u.total_gain, u.total_ci),
        }
        if u.user in steps:
            for key in ("new_user", "seen_user", "loo_to_own"):
                st = steps[u.user].step(key)
                if st is not None:
                    values[key] = (st.gain, st.ci)
        for order, (key, label) in enumerate(GAIN_COMPONENTS):
            if key not in values:
                continue
            gain, ci = values[key]
            if _num(gain) is None:
                continue
            rows.append({
                "user": u.user, "component": key, "label": label, "order": order,
                "gain": _num(gain), "ci_low": None if ci is None else _num(ci.low),
                "ci_high": None if ci is None else _num(ci.high),
            })
    return pl.DataFrame(rows, schema={"user": pl.String, "component": pl.String,
                                      "label": pl.String, "order": pl.Int64, "gain": pl.Float64,
                                      "ci_low": pl.Float64, "ci_high": pl.Float64})


def bootstrap_table(verdict: Verdict, decimals: int = 5) -> pl.DataFrame:
    """One row per user with its bootstrap draws of the margin as a list (flattened in Vega).

    Draws are rounded to `decimals` for the page's size; this is display precision, the interval
    itself comes from `validation`.
    """
    rows = [
        {"user": u.user, "margin": _num(u.margin), "ci_low": _num(u.ci.low),
         "ci_high": _num(u.ci.high),
         "draws": [round(float(d), decimals) for d in u.draws_margin if math.isfinite(d)]}
        for u in verdict.users
        if len(u.draws_margin) > 0
    ]
    return pl.DataFrame(rows, schema={"user": pl.String, "margin": pl.Float64,
                                      "ci_low": pl.Float64, "ci_high": pl.Float64,
                                      "draws": pl.List(pl.Float64)})


def effects_table(model: ModelFit) -> pl.DataFrame:
    """The personalization effects of the model (log-ratio of ppl): overall `diag`, then per user."""
    rows = [{"term": "diag (all users)", "scope": "overall", "effect": _num(model.diagonal_effect),
             "ci_low": _num(model.diagonal_ci.low), "ci_high": _num(model.diagonal_ci.high),
             "se": _num(model.diagonal_se)}]
    rows += [{"term": f"diag:{e.user}", "scope": "per user", "effect": _num(e.effect),
              "ci_low": _num(e.ci.low), "ci_high": _num(e.ci.high), "se": _num(e.se)}
             for e in model.user_effects]
    return pl.DataFrame(rows, schema={"term": pl.String, "scope": pl.String, "effect": pl.Float64,
                                      "ci_low": pl.Float64, "ci_high": pl.Float64,
                                      "se": pl.Float64})


def criteria_table(verdict: Verdict) -> pl.DataFrame:
    return pl.DataFrame(
        [{"criterion": c.name, "status": c.status.value, "point": c.point.value,
          "threshold": c.threshold, "explanation": c.explanation} for c in verdict.criteria],
        schema={"criterion": pl.String, "status": pl.String, "point": pl.String,
                "threshold": pl.Float64, "explanation": pl.String},
    )


MANY_USERS = 12   # above this many users the page summarizes instead of drawing one panel per user


def many_users(verdict: Verdict) -> bool:
    return len(verdict.users) > MANY_USERS


def user_order(verdict: Verdict, sim: Similarity | None = None) -> list[str]:
    """The users in the order the page draws them: the similarity tree's leaf order (users whose
    adapters transfer to each other side by side) when computed, else sorted by name."""
    names = [u.user for u in verdict.users]
    order = [] if sim is None else list(sim.order)
    return order if sorted(order) == sorted(names) else sorted(names)


def matrix_table(verdict: Verdict, data: StudyData, similarity: Similarity | None = None) -> tuple[pl.DataFrame, str]:
    """The confusion matrix to draw, and which one it is: `"geometric-mean"` or `"per-seed"`.

    Columns: `adapter, eval, ppl, n_seeds, seed (null for the geometric mean), group ("user
    adapters" / "controls"), is_diagonal, row_order`. The geometric mean over seeds is
    validation's number (`Verdict.matrix`); with one seed the cells are that matrix already.
    Without either the per-seed matrices are shown as they are (no averaging is done here).
    """
    given = verdict.matrix
    if isinstance(given, pl.DataFrame) and {"adapter", "eval", "ppl"} <= set(given.columns):
        n_seeds = (pl.col("n_seeds").cast(pl.Int64) if "n_seeds" in given.columns
                   else pl.lit(None, dtype=pl.Int64))
        df = given.select("adapter", "eval", "ppl", n_seeds.alias("n_seeds"),
                          pl.lit(None, dtype=pl.Int64).alias("seed"))
        kind = "geometric-mean"
    else:
        df = data.cells.filter(~_is_routing()).select("seed", "adapter", "eval", "ppl").with_columns(
            pl.lit(1, dtype=pl.Int64).alias("n_seeds"))  # the routing rows: their own section
        kind = "geometric-mean" if df["seed"].n_unique() == 1 else "per-seed"
        if kind == "geometric-mean":
            df = df.with_columns(pl.lit(None, dtype=pl.Int64).alias("seed"))
    ordered = user_order(verdict, similarity)
    users = ordered if set(ordered) == set(df["eval"].to_list()) else sorted(set(df["eval"].to_list()))
    if many_users(verdict):
        # one row for the leave-one-out controls: in column j, loo:j (the others are not drawn)
        loo = pl.col("adapter").str.starts_with(LOO_PREFIX)
        df = df.filter(~loo | (pl.col("adapter") == pl.lit(LOO_PREFIX) + pl.col("eval"))).with_columns(
            pl.when(loo).then(pl.lit(LOO_ROW)).otherwise(pl.col("adapter")).alias("adapter"))
    row_names = users + [a for a in sorted(set(df["adapter"].to_list())) if a not in users]
    order = {name: i for i, name in enumerate(row_names)}
    cols = {name: i for i, name in enumerate(users)}
    df = df.with_columns(
        pl.when(_is_control() | (pl.col("adapter") == LOO_ROW)).then(pl.lit("controls"))
        .otherwise(pl.lit("user adapters")).alias("group"),
        (pl.col("adapter") == pl.col("eval")).alias("is_diagonal"),
        pl.col("adapter").replace_strict(order, return_dtype=pl.Int64).alias("row_order"),
        pl.col("eval").replace_strict(cols, return_dtype=pl.Int64).alias("col_order"),
    )
    return df.select("adapter", "eval", "ppl", "n_seeds", "seed", "group", "is_diagonal",
                     "row_order", "col_order").sort("row_order", "col_order", "seed"), kind


LOO_ROW = "loo:<column's user>"
CELL_ROWS = 2000   # the page's cells table shows at most this many rows (problem cells first)


def page_rows(df: pl.DataFrame, limit: int = CELL_ROWS) -> tuple[pl.DataFrame, int]:
    """At most `limit` rows of a cells table, rows whose status is not ok first; and the total."""
    if df.height <= limit:
        return df, df.height
    if "status" in df.columns:
        df = df.with_columns((pl.col("status") != "ok").alias("_bad")).sort("_bad", descending=True,
                                                                           maintain_order=True).drop("_bad")
    return df.head(limit), df.height


def routing_tables(verdict: Verdict) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame] | None:
    """(figures, noise curve, pairs) of `Verdict.routing` (docs/routing.md), or None when it has no
    routing rows. Gains are fractions (1 - ppl ratio), intervals at the verdict's level.

    figures: criterion, user, row, against, gain, ci_low, ci_high (ROUTING's generic options,
    AVERAGING's own-vs-average, NOISE's margins at `noise_sigma`);
    noise curve: user, sigma, margin, ci_low, ci_high (sigma 0 = the verdict's margins);
    pairs: pair, user, quantity ("own vs average" / "average vs base"), gain, ci_low, ci_high,
    reading, transfer_distance.
    """
    r = verdict.routing
    if r is None or not r.present:
        return None

    def fig(c, **extra) -> dict:
        return {**extra, "user": c.user, "row": c.row, "against": c.against, "gain": _num(c.gain),
                "ci_low": _num(c.ci.low), "ci_high": _num(c.ci.high)}

    sigma = verdict.settings.noise_sigma
    figures = ([fig(c, criterion="routing") for c in r.generic]
               + [fig(c, criterion="averaging") for p in r.pairs for c in p.own_vs_average]
               + [fig(c, criterion="noise") for c in r.curve_at(sigma)])
    fschema = {"criterion": pl.String, "user": pl.String, "row": pl.String, "against": pl.String,
               "gain": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64}
    curve = pl.DataFrame([{"user": c.user, "sigma": s, "margin": _num(c.gain), "ci_low": _num(c.ci.low),
                           "ci_high": _num(c.ci.high)} for s in (0.0,) + r.sigmas for c in r.curve_at(s)],
                         schema={"user": pl.String, "sigma": pl.Float64, "margin": pl.Float64,
                                 "ci_low": pl.Float64, "ci_high": pl.Float64})
    pairs = []
    for p in r.pairs:
        parts = [("own vs average", c) for c in p.own_vs_average]
        parts += [("average vs base", c) for c in (p.average_vs_base or ())]
        pairs += [{"pair": p.name, "user": c.user, "quantity": q, "gain": _num(c.gain), "ci_low": _num(c.ci.low),
                   "ci_high": _num(c.ci.high), "reading": p.reading,
                   "transfer_distance": _num(p.transfer_distance)} for q, c in parts]
    pschema = {"pair": pl.String, "user": pl.String, "quantity": pl.String, "gain": pl.Float64,
               "ci_low": pl.Float64, "ci_high": pl.Float64, "reading": pl.String, "transfer_distance": pl.Float64}
    return (pl.DataFrame(figures, schema=fschema), curve, pl.DataFrame(pairs, schema=pschema))


def population_tables(verdict: Verdict) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame] | None:
    """(shares, effects, user effects) of `Verdict.population`, or None when not computed.

    shares: against, bar, share, ci_low, ci_high, n_point, n_sure, n_possible, n_users;
    effects: key, what, gain, gain_low, gain_high, new_low, new_high, user_sd (gains = 1 - exp(effect));
    user effects: key, user, gain (each user's BLUP as a gain), sorted by gain.
    """
    p = verdict.population
    if p is None:
        return None
    from validation.judgment.population import DESCRIPTIONS

    def gain(x: float) -> float:
        return -math.expm1(x)

    def label(against: str) -> str:
        return "own vs loo:<user>" if against == "loo" else f"margin (own vs {against.replace('_', ' ')})"

    shares = pl.DataFrame([{"against": label(s.against),
                            "bar": s.bar, "share": _num(s.share), "ci_low": _num(s.ci.low),
                            "ci_high": _num(s.ci.high), "n_point": s.n_point, "n_sure": s.n_sure,
                            "n_possible": s.n_possible, "n_users": s.n_users} for s in p.shares])
    effects = pl.DataFrame([{"key": e.key, "what": DESCRIPTIONS[e.key], "gain": gain(e.effect),
                             "gain_low": gain(e.ci.high), "gain_high": gain(e.ci.low),
                             "new_low": gain(e.prediction.high), "new_high": gain(e.prediction.low),
                             "user_sd": e.user_sd} for e in p.effects],
                           schema={"key": pl.String, "what": pl.String, "gain": pl.Float64,
                                   "gain_low": pl.Float64, "gain_high": pl.Float64, "new_low": pl.Float64,
                                   "new_high": pl.Float64, "user_sd": pl.Float64})
    users = pl.DataFrame([{"key": e.key, "user": u, "gain": gain(x)} for e in p.effects for u, x in e.user_effects],
                         schema={"key": pl.String, "user": pl.String, "gain": pl.Float64}).sort("key", "gain")
    return shares, effects, users


def training_table(data: StudyData, max_points_per_curve: int = 400) -> pl.DataFrame | None:
    """`seed, adapter, step, loss` from the train log, or None without one.

    Long curves are thinned to every k-th logged step (display only) to keep the page small.
    """
    log = data.train_log
    if log is None or log.height == 0:
        return None
    df = log.select("seed", "adapter", "step", "loss").sort("adapter", "seed", "step")
    longest = df.group_by("seed", "adapter").len()["len"].max()
    if longest and longest > max_points_per_curve:
        k = math.ceil(longest / max_points_per_curve)
        df = df.filter((pl.int_range(pl.len()).over("seed", "adapter") % k == 0)
                       | (pl.col("step") == pl.col("step").max().over("seed", "adapter")))
    return df


def cells_table(data: StudyData) -> pl.DataFrame:
    """The measured cells, in matrix order (users, then controls), for the page's table."""
    cols = [c for c in ("seed", "adapter", "eval", "nll_sum", "n_tokens", "n_bytes", "ppl",
                        "bpb", "status") if c in data.cells.columns]
    users = set(data.cells["eval"].to_list())
    return data.cells.select(cols).with_columns(
        _is_control().alias("_ctl")
    ).sort("_ctl", "adapter", "eval", *(["seed"] if "seed" in cols else [])).drop("_ctl") \
        if users else data.cells.select(cols)


def flatten_mapping(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts -> [(dotted.key, leaf)], for the provenance tables. Lists stay leaves."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += flatten_mapping(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, value)]


@dataclass(frozen=True)
class RecordTable:
    """A list of records from the manifest (e.g. `fixture_set.users`), as a table."""

    key: str
    columns: list[str]
    rows: list[list[Any]]


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def manifest_tables(manifest: dict[str, Any]) -> tuple[list[tuple[str, Any]], list[RecordTable]]:
    """The whole manifest: scalar leaves as (dotted.key, value), lists of records as tables."""
    leaves: list[tuple[str, Any]] = []
    records: list[RecordTable] = []

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif _is_records(value):
            flat = [dict(flatten_mapping(r)) for r in value]
            columns = list(dict.fromkeys(k for r in flat for k in r))
            records.append(RecordTable(prefix, columns, [[r.get(c) for c in columns] for r in flat]))
        else:
            leaves.append((prefix, value))

    walk(manifest, "")
    return leaves, records


def provenance_summary(manifest: Manifest) -> tuple[list[tuple[str, Any]], RecordTable]:
    """The lines for the top of the page (run, seeds, base model, versions, commit) and the
    fixtures with their sources and licences."""
    git = manifest.git
    size = manifest.adapter.file_bytes or manifest.adapter.bytes_fp32
    lines = [
        ("run", manifest.run_id),
        ("created", manifest.created),
        ("seeds", list(manifest.seeds)),
        ("fixture set", manifest.fixture_set.name),
        ("base model sha256", manifest.base_model.sha256),
        ("pre-registration sha256 (run)", manifest.prereg.sha256),
        ("git commit", None if git.commit is None else f"{git.commit}{' (dirty tree)' if git.dirty else ''}"),
        ("package versions", ", ".join(f"{k} {v}" for k, v in manifest.versions.items()) or None),
        ("adapter size", f"{manifest.adapter.params} parameters, {size} bytes"),
    ]
    cols = ["name", "source", "licence", "sha256", "route", "train_bytes", "heldout_bytes", "n_heldout_docs"]
    fixtures = RecordTable("fixture_set.users", cols,
                           [[getattr(u, c) for c in cols] for u in manifest.fixture_set.users])
    return [(k, v) for k, v in lines if v is not None], fixtures
