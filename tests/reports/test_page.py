"""The report page's content, size and files, without a browser (see test_report_browser.py)."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

import reports
from reports import bundle, page, tables
from tests.support import examples
from validation.contract.status import PreregStatus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def full():
    return examples.full_study(seed=0)  # 3 users, 5 seeds, controls, docs, train log, 10k draws


@pytest.fixture(scope="module")
def full_html(full):
    return reports.render_report(*full)


@pytest.fixture(scope="module")
def external():
    return examples.external_matrix(seed=0)  # one seed, no docs, no controls, no manifest


@pytest.fixture(scope="module")
def external_html(external):
    return reports.render_report(*external)


def _text(html: str) -> str:
    """Visible text, roughly: scripts and tags removed, whitespace collapsed."""
    html = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- top of the page -------------------------------------------------------------------------
def test_statuses_points_and_gate_are_shown(full, full_html):
    verdict, _ = full
    text = _text(full_html)
    for c in verdict.criteria:
        row = re.search(rf"{c.name.upper()}\s+(\S+)\s+(\S+)", text)
        assert row, f"criterion {c.name} missing"
        assert row.groups() == (c.status.value, c.point.value)
    assert f"Gate: {'PASSED' if verdict.gate.passed else 'FAILED'}" in text


def test_not_preregistered_banner_when_not_locked(full_html):
    assert "NOT PRE-REGISTERED" in _text(full_html)
    assert 'class="banner notprereg"' in full_html


def test_no_banner_when_locked():
    verdict, data = examples.full_study(seed=0, n_resamples=200, locked=True)
    assert verdict.prereg.locked
    html = reports.render_report(verdict, data)
    assert "NOT PRE-REGISTERED" not in html
    assert "Pre-registered: criteria file" in _text(html)


def test_warnings_are_listed(full, external, external_html):
    # the full study may judge without any warning (the exact REML fit raises none): plant two, one
    # with characters the page must escape, so the listing itself is what is tested
    planted = replace(full[0], warnings=full[0].warnings + (
        "planted: a `code` span and <angle brackets> in a warning", "planted: a second warning"))
    for verdict, rendered in ((planted, reports.render_report(planted, full[1])), (external[0], external_html)):
        text = _text(rendered)
        assert verdict.warnings, "the examples are meant to carry warnings"
        for w in verdict.warnings:
            assert re.sub(r"\s+", " ", w).replace("`", "") in text.replace("`", "").replace(
                "&#39;", "'").replace("&lt;", "<").replace("&gt;", ">")


def test_provenance_from_the_manifest(full, full_html):
    _, data = full
    text = _text(full_html)
    m = data.manifest
    top = text[:text.index("Per user")]  # provenance is near the top, before the results
    for value in (m.run_id, m.fixture_set.name, m.base_model.sha256,
                  m.git.commit, "torch 2.13.0", "CC0-1.0", "synthetic vocabulary 1",
                  m.fixture_set.users[2].sha256):
        assert value in top, value
    # the whole manifest, records as tables, at the end
    for key in ("fixture_set.users", "fixture_set.leakage", "host.hostname", "timings.train_s"):
        assert key in text[text.index("Manifest"):]


# -- the external single-seed matrix ---------------------------------------------------------
def test_external_matrix_explains_what_is_missing(external_html):
    text = _text(external_html)
    assert "What this input lacks" in text
    assert "No run manifest" in text
    assert "No control rows base and pooled" in text
    assert "No training log" in text
    assert "Not shown: Only one seed" in text
    assert "Not shown: No control rows" in text
    assert "Not shown: No training log" in text
    assert "Not shown: No bootstrap draws" in text
    # what it has is drawn: matrix, margins, model
    for key in ("matrix", "margins", "model"):
        assert f'data-chart="chart-{key}"' in external_html


# -- self-contained, offline, small ----------------------------------------------------------
def test_one_inline_vega_bundle_and_no_external_resource(full_html):
    assert full_html.count("window.vegaEmbed=") == 1
    assert len(re.findall(r'data-chart="chart-', full_html)) == 7
    markup = re.sub(r"(<script[^>]*>).*?</script>", r"\1</script>", full_html, flags=re.S)
    assert not re.search(r"<script[^>]+src=", markup)
    assert not re.search(r"<(link|img|iframe|object|embed|source)\b", markup)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', full_html)
    assert csp and "default-src 'none'" in csp.group(1)


def test_default_run_report_is_at_most_3_mb(full_html):
    size = len(full_html.encode("utf-8"))
    assert size <= 3_000_000, f"report is {size / 1e6:.2f} MB"


def test_write_report_is_atomic_and_returns_the_path(full, tmp_path):
    path = reports.write_report(*full, tmp_path / "sub" / "report.html")
    assert path == tmp_path / "sub" / "report.html"
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary left over


@pytest.mark.parametrize("fmt, magic", [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_write_charts(external, tmp_path, fmt, magic):
    files = reports.write_charts(*external, tmp_path, fmt=fmt)
    assert sorted(f.name for f in files) == sorted(f"{k}.{fmt}" for k in ("matrix", "margins", "model"))
    for f in files:
        assert f.read_bytes()[:4] == magic[:4]


def test_write_charts_rejects_other_formats(external, tmp_path):
    with pytest.raises(ValueError, match="`fmt` must be 'svg' or 'png'"):
        reports.write_charts(*external, tmp_path, fmt="pdf")


def test_bundle_matches_altairs_vegalite():
    assert bundle.vegalite_minor().startswith("v6")
    assert "</script" not in bundle.vega_javascript().lower()


# -- tables: reshaping only ------------------------------------------------------------------
def test_tables_read_the_result_objects(full):
    verdict, data = full
    m = verdict.users_table()
    assert m["user"].to_list() == [u.user for u in verdict.users]
    assert m["margin"].to_list() == [u.margin for u in verdict.users]
    assert m["ci_low"].to_list() == [u.ci.low for u in verdict.users]
    s = verdict.per_seed_table()
    assert s.height == len(verdict.users) * len(data.seeds)
    g = tables.gains_table(verdict)
    assert g.height == 6 * len(verdict.users)  # with the leave-one-out controls: 3 more steps
    alice = {r["component"]: r["gain"] for r in g.filter(pl.col("user") == "alice").to_dicts()}
    assert alice["personalization"] == verdict.user("alice").personalization_gain
    steps = {d.user: d for d in verdict.decomposition}["alice"]
    assert alice["seen_user"] == steps.step("seen_user").gain and alice["new_user"] == steps.step("new_user").gain
    assert alice["loo_to_own"] == steps.step("loo_to_own").gain
    b = tables.bootstrap_table(verdict)
    assert b["draws"].list.len().to_list() == [len(u.draws_margin) for u in verdict.users]


def test_matrix_prefers_validations_geometric_mean(full):
    verdict, data = full
    given = pl.DataFrame({"adapter": ["alice", "pooled"], "eval": ["alice", "alice"],
                          "ppl": [10.0, 12.0]})
    df, kind = tables.matrix_table(SimpleNamespace(matrix=given, users=(), similarity=None), data)
    assert kind == "geometric-mean"
    assert df["ppl"].to_list() == [10.0, 12.0]
    assert df["group"].to_list() == ["user adapters", "controls"]
    assert df["is_diagonal"].to_list() == [True, False]
    df, kind = tables.matrix_table(verdict, data)  # what judge gives: its own matrix
    assert kind == "geometric-mean"
    assert df.sort("adapter", "eval")["ppl"].to_list() == verdict.matrix.sort(
        "adapter", "eval")["ppl"].to_list()
    # without it, several seeds are shown seed by seed, never averaged here
    df, kind = tables.matrix_table(dataclasses.replace(verdict, matrix=None), data)
    assert kind == "per-seed" and df.height == data.cells.height


def test_gains_without_controls_is_empty(external):
    assert tables.gains_table(external[0]).height == 0


def test_training_log_is_thinned_for_display_only(full):
    _, data = full
    log = tables.training_table(data, max_points_per_curve=20)
    per_curve = log.group_by("seed", "adapter").len()["len"]
    assert per_curve.max() <= 21
    last = data.train_log["step"].max()
    assert log.filter(pl.col("step") == last).height == data.train_log.filter(
        pl.col("step") == last).height  # the last logged step is always kept


def test_prereg_status_label():
    assert PreregStatus(False, "x", None, "p", "n").label == "NOT PRE-REGISTERED"


def test_the_verdict_command_writes_the_report(tmp_path, capsys):
    """End to end through `python -m validation.verdict --cells` (external single-seed matrix)."""
    from validation import verdict as cli

    _, data = examples.external_matrix(seed=0)
    cells = tmp_path / "cells.csv"
    data.cells.select("adapter", "eval", "ppl").write_csv(cells)
    rc = cli.main(["--cells", str(cells), "--out", str(tmp_path / "out")])
    assert rc == 1  # LENIENT fails and carol's adapter is inverted (examples.external_matrix)
    assert "gate: FAILED" in capsys.readouterr().out
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "NOT PRE-REGISTERED" in html
    assert "What this input lacks" in html


def test_cells_with_a_bad_status_are_flagged(full):
    verdict, data = full
    cells = data.cells.with_columns(
        pl.when((pl.col("seed") == 1) & (pl.col("adapter") == "bob"))
        .then(pl.lit("diverged")).otherwise(pl.col("status")).alias("status"))
    html = reports.render_report(verdict, dataclasses.replace(data, cells=cells))
    assert "3 with a status other than ok" in html
    assert html.count('<tr class="inverted"><td>1</td><td>bob</td>') == 3


# -- leave-one-out controls --------------------------------------------------------------------
@pytest.fixture(scope="module")
def no_loo():
    return examples.full_study(seed=0, loo=False)


def test_report_with_loo_rows_shows_the_decomposition(full, full_html):
    verdict, _ = full
    text = html.unescape(_text(full_html))
    assert "the chain is base → loo:<user> → pooled → own" in text
    for d in verdict.decomposition:  # every user's decomposition, in words, with its intervals
        assert d.words in text
    section = next(c for c in page.chart_sections(*full) if c.key == "decomposition")
    rows = [r for values in json.loads(section.spec_json())["datasets"].values() for r in values]
    drawn = {r["component"] for r in rows if r.get("ci_low") is not None}  # drawn with an interval
    assert {"new_user", "seen_user", "loo_to_own", "regularization", "personalization", "total"} == drawn
    m, _ = tables.matrix_table(verdict, full[1])
    assert set(m.filter(pl.col("adapter").str.starts_with("loo:"))["group"]) == {"controls"}
    assert not m.filter(pl.col("adapter").str.starts_with("loo:"))["is_diagonal"].any()


def test_report_without_loo_rows_says_so(no_loo):
    verdict, data = no_loo
    assert verdict.decomposition == ()
    g = tables.gains_table(verdict)
    assert set(g["component"]) == {"regularization", "personalization", "total"}
    html = reports.render_report(verdict, data)
    assert "no leave-one-out controls" in _text(html)
