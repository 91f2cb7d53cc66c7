"""The leave-one-out controls `loo:<user>` in the verdict: hand-computed decomposition, intervals,
bad input, degrading without them."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from validation import InputError, judge
from validation.inputs.arrays import build_arrays
from validation.inputs.load import load_external
from validation.judgment.decomposition import seen_share
from validation.simulation.simulate import cells_from_matrix, simulate_study
from validation.stats.bootstrap import resample_logppl
from validation.stats.design import _doc_df
from validation.stats.intervals import bootstrap_interval
from validation.stats.metrics import loo_gain, loo_personalization_gain, seen_user_gain
from validation.text.outputs import markdown_summary, verdict_text
from validation.verdict import main

REPO = Path(__file__).resolve().parents[3]
FAST = ["--n-resamples", "300", "--no-report", "--no-calibration", "--prereg", str(REPO / "prereg.toml")]

USERS = ("a", "b", "c")
LOO_CONTROLS = ("base", "pooled", "loo:alice", "loo:bob", "loo:carol")  # for simulate_study's default users
ADAPTERS = USERS + ("base", "pooled", "loo:a", "loo:b", "loo:c")
#                 eval: a     b     c
PPL = np.array([[10.0, 20.0, 30.0],   # adapter a
                [12.0, 15.0, 33.0],   # adapter b
                [11.0, 25.0, 24.0],   # adapter c
                [14.0, 28.0, 40.0],   # base
                [12.5, 21.0, 32.0],   # pooled
                [13.0, 9.0, 31.0],    # loo:a (never saw a); on b it beats every user adapter
                [9.5, 27.0, 36.0],    # loo:b; on a it beats every user adapter
                [12.0, 26.0, 45.0]])  # loo:c: worse than base on c


def test_metrics_by_hand():
    L = np.log(PPL)
    loo = np.array([5, 6, 7])
    np.testing.assert_allclose(loo_gain(L, loo, 3), [1 - 13 / 14, 1 - 27 / 28, 1 - 45 / 40])
    np.testing.assert_allclose(seen_user_gain(L, loo, 4), [1 - 12.5 / 13, 1 - 21 / 27, 1 - 32 / 45])
    np.testing.assert_allclose(loo_personalization_gain(L, loo), [1 - 10 / 13, 1 - 15 / 27, 1 - 24 / 45])
    assert seen_share(1 - 12.5 / 14, 1 - 12.5 / 13) == pytest.approx(np.log(13 / 12.5) / np.log(14 / 12.5))
    assert seen_share(-0.01, 0.2) is None and seen_share(float("nan"), 0.2) is None


def test_judge_decomposes_by_hand_and_never_counts_loo_as_other_adapters():
    v = judge(cells_from_matrix(PPL, ADAPTERS, USERS), rng=np.random.default_rng(0), n_resamples=10, fit=False)
    without = judge(cells_from_matrix(PPL[:5], ADAPTERS[:5], USERS), rng=np.random.default_rng(0),
                    n_resamples=10, fit=False)
    # margins, best others and pooled's gains are those of the study without the loo rows
    for u, w in zip(v.users, without.users, strict=True):
        assert (u.margin, u.best_other, u.worst_other) == (w.margin, w.best_other, w.worst_other)
        assert (u.personalization_gain, u.regularization_gain) == (w.personalization_gain, w.regularization_gain)
    assert v.user("a").best_other == "c" and v.user("b").best_other == "a"
    assert without.decomposition == () and any("no leave-one-out controls" in x for x in without.warnings)
    assert without.to_json()["decomposition"] is None
    c = {d.user: d for d in v.decomposition}["c"]
    got = {s.key: (s.from_row, s.to_row, s.gain) for s in c.steps}
    assert got["new_user"][:2] == ("base", "loo:c") and got["new_user"][2] == pytest.approx(1 - 45 / 40)
    assert got["seen_user"][:2] == ("loo:c", "pooled") and got["seen_user"][2] == pytest.approx(1 - 32 / 45)
    assert got["pooled_to_own"][:2] == ("pooled", "c") and got["pooled_to_own"][2] == pytest.approx(1 - 24 / 32)
    assert got["loo_to_own"][:2] == ("loo:c", "c") and got["loo_to_own"][2] == pytest.approx(1 - 24 / 45)
    assert got["base_to_pooled"][2] == pytest.approx(1 - 32 / 40) and got["total"][2] == pytest.approx(1 - 24 / 40)
    chain = sum(np.log1p(-got[k][2]) for k in ("new_user", "seen_user", "pooled_to_own"))
    assert chain == pytest.approx(np.log1p(-got["total"][2]), abs=1e-14)
    # one seed, no documents: no interval, so the share is undefined (issue 23); the bare ratio stays beside it
    assert c.seen_share is None and c.seen_share_point == pytest.approx(np.log(45 / 32) / np.log(40 / 32))
    assert "loo:c" in c.words and "worse than no adapter" in c.words and "is undefined" in c.words
    a = {d.user: d for d in v.decomposition}["a"]
    assert a.seen_share is None and a.seen_share_point == pytest.approx(np.log(13 / 12.5) / np.log(14 / 12.5))
    assert "no interval for pooled's gain over base" in a.words
    j = v.to_json()["decomposition"]
    assert [d["user"] for d in j] == ["a", "b", "c"]
    assert j[2]["steps"]["seen_user"]["from"] == "loo:c" and j[2]["steps"]["seen_user"]["to"] == "pooled"
    assert j[2]["steps"]["new_user"]["gain"] == pytest.approx(1 - 45 / 40)
    assert j[2]["seen_share_of_pooled_gain"] is None and j[2]["seen_share_point"] == pytest.approx(c.seen_share_point)


def test_intervals_are_the_bootstrap_of_the_same_draws():
    data = simulate_study(np.random.default_rng(3), n_seeds=4, n_docs=20, controls=LOO_CONTROLS,
                          seen=0.2, personalization=0.15, regularization=0.1)
    v = judge(data, rng=np.random.default_rng(11), n_resamples=400, fit=False)
    draws = resample_logppl(build_arrays(data), 400, np.random.default_rng(11))  # the same draws as judge
    arrays = build_arrays(data)
    loo = arrays.loo
    doc_df = _doc_df(arrays)  # the document level's effective df, as judge reads it (share-blend uses it)
    seen = seen_user_gain(draws, loo, arrays.pooled)
    for j, d in enumerate(v.decomposition):
        st = d.step("seen_user")
        np.testing.assert_allclose(st.draws, seen[:, j])
        assert st.ci == bootstrap_interval(st.draws, st.gain, 0.95, method=v.bootstrap.method, n_seeds=4,
                                           seed_values=st.seed_gains, n_docs=20, doc_df=doc_df[j])
        u = v.user(d.user)  # pooled's steps are the gains of earlier reports, with the same intervals
        assert d.step("pooled_to_own").ci == u.personalization_ci and d.step("base_to_pooled").ci == u.regularization_ci
        # per draw, the chain adds up in logs
        lhs = np.log1p(-d.step("loo_to_own").draws)
        np.testing.assert_allclose(lhs, np.log1p(-st.draws) + np.log1p(-d.step("pooled_to_own").draws), atol=1e-12)
        # the planted effects: seen = 0.2 and loo = base - 0.1 + 0.2 on the own column, in log ppl
        assert st.ci.contains(1 - np.exp(-0.2)) and st.ci.low > 0
        assert d.step("new_user").ci.contains(1 - np.exp(0.1))
        assert d.step("loo_to_own").ci.contains(1 - np.exp(-0.35))
        assert len(st.seed_gains) == 4 and d.seen_share > 1  # pooled's 10% all came from seeing the user


def test_texts_name_the_control_of_every_figure():
    data = simulate_study(np.random.default_rng(3), n_seeds=3, n_docs=10, controls=LOO_CONTROLS,
                          seen=0.05)
    v = judge(data, rng=np.random.default_rng(0), n_resamples=100, fit=False)
    text = verdict_text(v)
    assert "base -> loo" in text and "loo -> pooled" in text and "pooled -> own" in text and "loo -> own" in text
    assert "personalization = pooled -> own, regularization = base -> pooled" in text
    assert "came from having seen alice's text (loo:alice -> pooled" in text
    assert "| user | base → loo | loo → pooled | pooled → own | loo → own |" in markdown_summary(v)
    plain = judge(simulate_study(np.random.default_rng(3), n_seeds=3, n_docs=10), rng=np.random.default_rng(0),
                  n_resamples=100, fit=False)
    assert "base -> loo" not in verdict_text(plain) and "no leave-one-out controls" in verdict_text(plain)


def _write(df: pl.DataFrame, path: Path) -> Path:
    df.write_csv(path)
    return path


def _cells() -> pl.DataFrame:
    return cells_from_matrix(PPL, ADAPTERS, USERS).cells.select("seed", "adapter", "eval", "ppl")


def test_external_cells_with_the_loo_convention(tmp_path, capsys):
    path = _write(_cells(), tmp_path / "cells.csv")
    data = load_external(path)
    assert data.controls == ("base", "pooled", "loo:a", "loo:b", "loo:c")
    assert main(["--cells", str(path), "--out", str(tmp_path / "out"), *FAST]) in (0, 1)
    out = capsys.readouterr().out
    assert "base -> loo" in out
    doc = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert [d["user"] for d in doc["decomposition"]] == ["a", "b", "c"]


@pytest.mark.parametrize("drop, message", [
    (["loo:b"], r"row 16: adapter 'loo:a' is a leave-one-out control, but user\(s\) \['b'\] have none \('loo:b'\)"),
    (["loo:a", "loo:c"], r"row 16: adapter 'loo:b' is a leave-one-out control, but user\(s\) \['a', 'c'\]"),
])
def test_loo_for_some_users_only_is_refused_naming_the_row(tmp_path, capsys, drop, message):
    path = _write(_cells().filter(~pl.col("adapter").is_in(drop)), tmp_path / "cells.csv")
    with pytest.raises(InputError, match=message):
        load_external(path)
    assert main(["--cells", str(path), "--out", str(tmp_path / "out"), *FAST]) == 2
    assert "give every user its `loo:<user>` rows or drop them all" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_loo_of_a_user_not_in_the_study_is_refused_naming_the_row(tmp_path, capsys):
    cells = _cells().with_columns(pl.when(pl.col("adapter") == "loo:c").then(pl.lit("loo:carol"))
                                  .otherwise(pl.col("adapter")).alias("adapter"))
    path = _write(cells, tmp_path / "cells.csv")
    with pytest.raises(InputError, match=r"row 22: adapter 'loo:carol' is the leave-one-out control of user "
                                         r"'carol', who is not in the study .*\['a', 'b', 'c'\]"):
        load_external(path)
    assert main(["--cells", str(path), "--out", str(tmp_path / "out"), *FAST]) == 2
    empty = _cells().with_columns(pl.when(pl.col("adapter") == "loo:c").then(pl.lit("loo:"))
                                  .otherwise(pl.col("adapter")).alias("adapter"))
    with pytest.raises(InputError, match=r"row 22: adapter 'loo:' is the leave-one-out control of user ''"):
        load_external(_write(empty, tmp_path / "empty.csv"))


def test_a_loo_control_as_an_eval_column_is_refused(tmp_path):
    cells = pl.concat([_cells(), pl.DataFrame({"seed": [0], "adapter": ["loo:a"], "eval": ["loo:a"], "ppl": [9.0]},
                                              schema=_cells().schema)])
    with pytest.raises(InputError, match=r"column `eval` at row\(s\) 25: the name 'loo:a' holds ':', which is "
                                         r"reserved for control rows such as `loo:<user>`"):
        load_external(_write(cells, tmp_path / "cells.csv"))


def test_a_missing_loo_cell_is_a_missing_cell_not_a_silent_gap():
    data = cells_from_matrix(PPL, ADAPTERS, USERS)
    data = type(data)(cells=data.cells.filter(~((pl.col("adapter") == "loo:b") & (pl.col("eval") == "b"))))
    v = judge(data, rng=np.random.default_rng(0), n_resamples=10, fit=False)
    assert not v.gate.passed and any("loo:b" in r for r in v.gate.reasons)
    b = {d.user: d for d in v.decomposition}["b"]
    assert np.isnan(b.step("seen_user").gain) and b.seen_share is None


def test_calibration_from_a_run_with_loo_rows_leaves_them_out():
    from validation.simulation.from_run import params_from_run
    data = simulate_study(np.random.default_rng(0), n_seeds=3, n_docs=10, controls=LOO_CONTROLS,
                          seen=0.1)
    params, notes = params_from_run(data)
    assert params.controls == ("base", "pooled") and params.expected.shape == (5, 3)
    assert any("leave-one-out controls (loo:<user>) left out" in n for n in notes)
