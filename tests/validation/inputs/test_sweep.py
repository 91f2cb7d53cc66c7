"""Cells and documents with a `steps` column, and the verdict of several step counts.

The gate is judged at the pre-registered primary count only; the other counts are exploratory,
judged by the same `judge` with the same bootstrap seed; a partial `steps` column and a primary
count the study lacks are exit 2 with nothing written.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from validation import InputError, Prereg, load_external
from validation.contract.prereg_check import Settings
from validation.inputs.sweep import load_steps
from validation.judgment.steps import judge_exploratory, primary_count
from validation.judgment.study import judge
from validation.simulation.simulate import simulate_study
from validation.verdict import main


def _study(seed: int):
    """One simulated count: cells and documents (3 users, 2 seeds, 3 documents)."""
    data = simulate_study(np.random.default_rng(seed), n_seeds=2, n_docs=3)
    return data.cells, data.docs


def _tables(counts=(25, 100)):
    cells, docs = [], []
    for i, k in enumerate(counts):
        c, d = _study(i)
        cells.append(c.with_columns(pl.lit(k, pl.Int64).alias("steps")))
        docs.append(d.with_columns(pl.lit(k, pl.Int64).alias("steps")))
    return pl.concat(cells), pl.concat(docs)


def _write(tmp_path, cells, docs=None):
    cp = tmp_path / "cells.parquet"
    cells.write_parquet(cp)
    dp = None
    if docs is not None:
        dp = tmp_path / "docs.parquet"
        docs.write_parquet(dp)
    return cp, dp


def test_load_steps_splits_the_counts_into_complete_studies(tmp_path):
    cells, docs = _tables((25, 100))
    cp, dp = _write(tmp_path, cells, docs)
    study = load_steps(cells=cp, docs=dp)
    assert study.counts == (25, 100) and study.several
    assert study.cells["steps"].dtype == pl.Int64 and study.docs["steps"].null_count() == 0
    for i, k in enumerate((25, 100)):
        alone_c, alone_d = _study(i)
        one = study.at(k)
        assert "steps" not in one.cells.columns
        (tmp_path / f"alone{k}").mkdir()
        ref = load_external(*_write(tmp_path / f"alone{k}", alone_c, alone_d))
        assert one.cells.sort(["seed", "adapter", "eval"]).equals(ref.cells.sort(["seed", "adapter", "eval"]))
    with pytest.raises(InputError, match=r"several adapter training-step counts \[25, 100\]"):
        load_external(cp, dp)  # one StudyData: name the count
    assert load_external(cp, dp, steps=25).cells.height == study.at(25).cells.height


def test_cells_without_steps_are_a_one_count_study(tmp_path):
    c, d = _study(0)
    study = load_steps(cells=_write(tmp_path, c, d)[0], docs=tmp_path / "docs.parquet")
    assert study.counts == () and not study.several
    assert primary_count(study, Prereg()) == (None, ())
    assert study.at(None).cells.height == c.height


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("steps"))
                              .alias("steps")),
     r"cells.parquet: column `steps` is partial: no step count at row\(s\) 3"),
    (lambda c: c.filter(~((pl.col("steps") == 25) & (pl.col("adapter") == "pooled") & (pl.col("seed") == 1))),
     r"cells.parquet: column `steps` is partial: .* missing at others, e.g. seed=1, adapter='pooled', .* steps = 25"),
    (lambda c: c.with_columns(pl.col("steps").cast(pl.Float64) + 0.5),
     r"column `steps` must hold whole numbers >= 1"),
    (lambda c: c.with_columns(pl.col("steps") - 25), r"column `steps` must hold whole numbers >= 1 .* row\(s\) 1\b"),
    (lambda c: c.with_columns(pl.lit("x").alias("steps")), r"column `steps` must hold whole numbers of training"),
])
def test_a_bad_steps_column_is_refused_naming_file_and_column(tmp_path, mutate, match):
    cells, _ = _tables((25, 100))
    cp, _ = _write(tmp_path, mutate(cells))
    with pytest.raises(InputError, match=match):
        load_steps(cells=cp)


def test_docs_must_carry_the_same_counts(tmp_path):
    cells, docs = _tables((25, 100))
    cp, dp = _write(tmp_path, cells, docs.drop("steps"))
    with pytest.raises(InputError, match=r"docs.parquet: no column `steps`, but .*cells.parquet has one"):
        load_steps(cells=cp, docs=dp)
    cp, dp = _write(tmp_path, cells, docs.filter(~((pl.col("steps") == 100) & (pl.col("doc_id") == docs["doc_id"][0])
                                                   & (pl.col("adapter") == "base") & (pl.col("seed") == 0)
                                                   & (pl.col("eval") == docs["eval"][0]))))
    with pytest.raises(InputError, match=r"docs.parquet: column `steps` is partial"):
        load_steps(cells=cp, docs=dp)


def test_primary_count_rules(tmp_path):
    cells, docs = _tables((25, 100))
    study = load_steps(cells=_write(tmp_path, cells)[0])
    assert primary_count(study, Prereg(primary_steps=100)) == (100, ())
    with pytest.raises(InputError, match=r"`\[steps\] primary = 50`, but .* holds the step counts \[25, 100\]"):
        primary_count(study, Prereg(primary_steps=50))
    one = load_steps(cells=_write(tmp_path, cells.filter(pl.col("steps") == 25))[0])
    k, warn = primary_count(one, Prereg(primary_steps=100))
    assert k == 25 and "not the pre-registered primary count `[steps] primary = 100`" in warn[0]


def test_exploratory_counts_use_the_same_judge_and_seed(tmp_path):
    cells, docs = _tables((25, 100, 400))
    study = load_steps(cells=_write(tmp_path, cells, docs)[0], docs=tmp_path / "docs.parquet")
    prereg = Prereg(n_resamples=200)
    res = judge_exploratory(study, 100, Settings(prereg, rng_seed_flag=7))
    assert [e.steps for e in res.exploratory] == [25, 400] and res.primary == 100
    alone = judge(study.at(25), prereg, rng=np.random.default_rng(7))
    got = res.exploratory[0].verdict
    assert [u.margin for u in got.users] == [u.margin for u in alone.users]
    assert [tuple(u.ci) for u in got.users] == [tuple(u.ci) for u in alone.users]
    j = res.to_json()
    assert j["primary"] == 100 and j["counts"] == [25, 100, 400] and set(j["exploratory"]) == {"25", "400"}
    assert j["exploratory"]["25"]["label"] == "exploratory" and len(j["exploratory"]["25"]["users"]) == 3
    assert "primary 100" in res.line() and "25, 400 exploratory" in res.line()


def _prereg(tmp_path, primary: int):
    p = tmp_path / "prereg.toml"
    p.write_text(f"[statistics]\nn_resamples = 200\n\n[steps]\nprimary = {primary}\n")
    return p


def test_verdict_gates_on_the_primary_count_only(tmp_path, capsys):
    cells, docs = _tables((25, 100))
    cp, dp = _write(tmp_path, cells, docs)
    out = tmp_path / "out"
    code = main(["--cells", str(cp), "--docs", str(dp), "--prereg", str(_prereg(tmp_path, 100)), "--out", str(out),
                 "--no-report", "--no-calibration"])
    printed = capsys.readouterr().out
    assert code in (0, 1)
    v = json.loads((out / "verdict.json").read_text())
    assert v["steps"]["primary"] == 100 and v["steps"]["counts"] == [25, 100]
    assert list(v["steps"]["exploratory"]) == ["25"]
    assert "step counts: primary 100 (the criteria and the gate); 25 exploratory" in printed
    # the gate's numbers are those of the count-100 study alone
    alone = tmp_path / "alone"
    alone.mkdir()
    c100, d100 = _write(alone, cells.filter(pl.col("steps") == 100).drop("steps"),
                        docs.filter(pl.col("steps") == 100).drop("steps"))
    assert main(["--cells", str(c100), "--docs", str(d100), "--prereg", str(_prereg(tmp_path, 100)), "--out",
                 str(alone / "out"), "--no-report", "--no-calibration"]) == code
    w = json.loads((alone / "out" / "verdict.json").read_text())
    assert [u["margin"] for u in w["users"]] == [u["margin"] for u in v["users"]]
    assert w["criteria"] == v["criteria"] and w["gate"] == v["gate"]
    assert w["steps"]["primary"] is None and w["steps"]["exploratory"] == {}


def test_verdict_refuses_a_primary_the_study_lacks_and_writes_nothing(tmp_path, capsys):
    cells, docs = _tables((25, 100))
    cp, dp = _write(tmp_path, cells, docs)
    out = tmp_path / "out"
    code = main(["--cells", str(cp), "--docs", str(dp), "--prereg", str(_prereg(tmp_path, 50)), "--out", str(out),
                 "--no-report", "--no-calibration"])
    err = capsys.readouterr().err
    assert code == 2 and "`[steps] primary = 50`" in err and "[25, 100]" in err
    assert not out.exists()


def test_verdict_refuses_a_partial_steps_column_and_writes_nothing(tmp_path, capsys):
    cells, docs = _tables((25, 100))
    cells = cells.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("steps"))
                               .alias("steps"))
    cp, dp = _write(tmp_path, cells, docs)
    out = tmp_path / "out"
    assert main(["--cells", str(cp), "--docs", str(dp), "--prereg", str(_prereg(tmp_path, 100)), "--out", str(out),
                 "--no-report", "--no-calibration"]) == 2
    assert "column `steps` is partial" in capsys.readouterr().err and not out.exists()
