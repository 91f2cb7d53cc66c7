"""Every bad input of issue 4 section 8, and the pre-registration file: messages name the culprit."""

import hashlib
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from tests.support.examples import example_manifest
from validation import InputError, Prereg, PreregError, check_prereg, load_external, load_prereg
from validation.contract.manifest import PreregRecord
from validation.simulation.simulate import simulate_study


def _cells() -> pl.DataFrame:
    return simulate_study(np.random.default_rng(0), n_seeds=2, n_docs=3, with_docs=False).cells.select(
        "seed", "adapter", "eval", "nll_sum", "n_tokens", "ppl", "status")


def _write(tmp_path, df, name="cells.csv"):
    p = tmp_path / name
    df.write_csv(p) if name.endswith(".csv") else df.write_parquet(p)
    return p


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.drop("eval"), r"missing column\(s\) \['eval'\]"),
    (lambda d: d.drop("ppl", "nll_sum"), r"need a `ppl` column, or `nll_sum` and `n_tokens`"),
    (lambda d: d.drop("nll_sum").with_columns(pl.when(pl.int_range(pl.len()) == 3).then(float("nan"))
                                              .otherwise(pl.col("ppl")).alias("ppl")),
     r"column `ppl` has NaN, infinite or missing values at row\(s\) 4"),
    (lambda d: d.drop("nll_sum").with_columns(pl.when(pl.int_range(pl.len()) == 0).then(float("inf"))
                                              .otherwise(pl.col("ppl")).alias("ppl")),
     r"column `ppl` has NaN, infinite .* row\(s\) 1\b"),
    (lambda d: d.drop("nll_sum").with_columns(pl.when(pl.int_range(pl.len()) == 5).then(0.0)
                                              .otherwise(pl.col("ppl")).alias("ppl")),
     r"column `ppl` must be >= 1 .*; not at row\(s\) 6"),
    (lambda d: d.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(-1.0)
                              .otherwise(pl.col("ppl")).alias("ppl")),
     r"column `ppl` must be >= 1 .*; not at row\(s\) 3"),
    (lambda d: d.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(0)
                              .otherwise(pl.col("n_tokens")).alias("n_tokens")),
     r"column `n_tokens` must be >= 1; not at row\(s\) 2"),
    (lambda d: pl.concat([d, d.slice(4, 1)]), r"duplicated cell\(s\) at row\(s\) 5, \d+"),
    (lambda d: d.filter(~((pl.col("adapter") == "bob") & (pl.col("eval") == "bob"))),
     r"user\(s\) \['bob'\] have no diagonal cell"),
    (lambda d: d.filter(pl.col("adapter") != "carol"), r"\['carol'\] in column `eval` have no diagonal cell"),
    (lambda d: d.filter(pl.col("eval") == "alice"), r"column `eval` names 1 user\(s\) \['alice'\]"),
    (lambda d: d.with_columns(pl.lit("exploded").alias("status")), r"column `status` must be one of"),
    (lambda d: d.with_columns(pl.lit("x").alias("seed")), r"column `seed` must hold integers"),
    (lambda d: d.with_columns(pl.when(pl.col("adapter") == "pooled").then(pl.lit("mystery"))
                              .otherwise(pl.col("adapter")).alias("adapter")),
     r"column `adapter` holds \['mystery'\]"),
    (lambda d: d.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(""))
                              .otherwise(pl.col("eval")).alias("eval")), r"column `eval` is empty at row\(s\) 1"),
])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bad_cells_name_file_row_and_column(tmp_path, mutate, match, fmt):
    p = _write(tmp_path, mutate(_cells()), f"cells.{fmt}")
    with pytest.raises(InputError, match=match) as e:
        load_external(p)
    assert str(p) in str(e.value)


def test_diverged_rows_may_hold_any_number(tmp_path):
    d = _cells().with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(float("inf")).otherwise(pl.col("ppl")).alias("ppl"),
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("diverged")).otherwise(pl.col("status")).alias("status"),
    ).drop("nll_sum")
    assert load_external(_write(tmp_path, d)).cells.height == d.height


@pytest.mark.parametrize("content,match", [
    (b"", r"the file is empty"),
    (b"seed,adapter,eval,ppl\n", r"has no rows"),
    (b"\x00\xff\xfe garbage \x89PNG", r"cannot be read"),
])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_empty_or_undecodable_file(tmp_path, content, match, suffix):
    if content.startswith(b"seed") and suffix == ".parquet":
        match = r"cannot be read"
    p = tmp_path / f"cells{suffix}"
    p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_external(p)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"unknown format `.json`"):
        (tmp_path / "c.json").write_text("{}")
        load_external(tmp_path / "c.json")
    with pytest.raises(InputError, match=r"nope.csv: file not found"):
        load_external(tmp_path / "nope.csv")


def test_docs_must_need_nll_and_match_cells(tmp_path):
    data = simulate_study(np.random.default_rng(0), n_seeds=2, n_docs=3)
    cells = _write(tmp_path, data.cells.select("seed", "adapter", "eval", "nll_sum", "n_tokens"))
    docs = _write(tmp_path, data.docs.select("seed", "adapter", "eval", "doc_id", "ppl"), "docs.csv")
    with pytest.raises(InputError, match=r"docs.csv: per-document rows need columns `nll_sum` and `n_tokens`"):
        load_external(cells, docs)
    extra = data.docs.select("seed", "adapter", "eval", "doc_id", "nll_sum", "n_tokens") \
        .with_columns(pl.col("seed") + 10)
    docs = _write(tmp_path, extra, "docs2.csv")
    with pytest.raises(InputError, match=r"documents for cell\(s\) absent from the cells table, e.g. seed=10"):
        load_external(cells, docs)


# --- pre-registration ---------------------------------------------------------------------------

def test_repository_prereg_is_valid_and_matches_defaults():
    p = load_prereg("prereg.toml")
    assert p == Prereg()
    assert p.sha256 == hashlib.sha256(open("prereg.toml", "rb").read()).hexdigest()


@pytest.mark.parametrize("text,match", [
    ("[criteria]\nstrict_margin = 1.5\n", r"`\[criteria\] strict_margin` must be a number in \[0.01, 0.5\]"),
    ("[criteria]\ncomparator = 'mean'\n", r"`comparator` must be one of"),
    ("[statistics]\nn_resamples = 0\n", r"`n_resamples` must be an integer >= 200"),
    ("[statistics]\ninterval_method = 'bca'\n", r"`interval_method` must be one of"),
    ("[gate]\nlenient = ['MAYBE']\n", r"`gate.lenient` must be a non-empty list"),
    ("[criteria]\nstrictmargin = 0.1\n", r"unknown setting\(s\) \['strictmargin'\] in `\[criteria\]`"),
    ("[criteria\n", r"not valid TOML"),
    ("[gate]\nfail_on_inverted = \"false\"\n", r"`gate.fail_on_inverted` must be true or false"),
    ("[statistics]\nrng_seed = \"x\"\n", r"`rng_seed` must be an integer >= 0"),
    ("[statistics]\nn_resamples = true\n", r"`n_resamples` must be an integer >= 200"),
])
def test_bad_prereg_names_the_setting(tmp_path, text, match):
    p = tmp_path / "prereg.toml"
    p.write_text(text)
    with pytest.raises(PreregError, match=match):
        load_prereg(p)


def test_prereg_hash_check(tmp_path):
    p = tmp_path / "prereg.toml"
    p.write_text("[criteria]\ndelta = 0.02\n")
    prereg = load_prereg(p)
    run = example_manifest(("a", "b"), (0, 1))
    ok = check_prereg(prereg, replace(run, prereg=PreregRecord("prereg.toml", prereg.sha256)), allow_change=False)
    assert ok.locked and ok.label == "pre-registered"
    changed = replace(run, prereg=PreregRecord("prereg.toml", "0" * 64))
    with pytest.raises(PreregError, match=r"pre-registration changed since the run .*--allow-prereg-change"):
        check_prereg(prereg, changed, allow_change=False)
    st = check_prereg(prereg, changed, allow_change=True)
    assert not st.locked and st.label == "NOT PRE-REGISTERED" and st.expected_sha256 == "0" * 64
    assert check_prereg(prereg, None, allow_change=False).label == "NOT PRE-REGISTERED"


def test_documents_of_a_diverged_cell_may_be_nan(tmp_path):
    data = simulate_study(np.random.default_rng(0), n_seeds=2, n_docs=3)
    hit = (pl.col("seed") == 1) & (pl.col("adapter") == "bob") & (pl.col("eval") == "alice")
    cells = data.cells.with_columns(pl.when(hit).then(pl.lit("diverged")).otherwise(pl.col("status")).alias("status"),
                                    pl.when(hit).then(float("nan")).otherwise(pl.col("nll_sum")).alias("nll_sum"))
    docs = data.docs.with_columns(pl.when(hit).then(float("nan")).otherwise(pl.col("nll_sum")).alias("nll_sum"))
    c, d = _write(tmp_path, cells), _write(tmp_path, docs, "docs.parquet")
    loaded = load_external(c, d)
    assert loaded.docs.height == docs.height
    from validation import judge
    v = judge(loaded, rng=np.random.default_rng(0), n_resamples=100, fit=True)
    assert v.bootstrap.mode.value == "hierarchical" and np.isfinite(v.user("alice").ci_low)
    assert any("1 diverged cell(s): seed=1 adapter='bob' eval='alice'" in r for r in v.gate.reasons)
    d2 = _write(tmp_path, data.docs.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(float("nan")).otherwise(pl.col("nll_sum")).alias("nll_sum")),
        "docs2.parquet")
    with pytest.raises(InputError,
                       match=r"docs2.parquet: column `nll_sum` has NaN, infinite or missing values at row\(s\) 8"):
        load_external(_write(tmp_path, data.cells, "cells2.csv"), d2)



@pytest.mark.parametrize("extra, message", [
    ({"ppl": [2.718281828, 3.320116923, 3.004166024, 9.9]},   # row 4 is not exp(9/10)
     r"column `ppl` disagrees with exp\(`nll_sum` / `n_tokens`\) at row\(s\) 4"),
    ({"n_bytes": [10, 0, 10, 10]}, r"column `n_bytes` must be >= 1; not at row\(s\) 2"),
])
def test_external_columns_must_agree_and_be_positive(tmp_path, extra, message):
    cells = tmp_path / "cells.csv"
    pl.DataFrame({"adapter": ["a", "b", "a", "b"], "eval": ["a", "a", "b", "b"],
                  "nll_sum": [10.0, 12.0, 11.0, 9.0], "n_tokens": [10, 10, 10, 10], **extra}).write_csv(cells)
    with pytest.raises(InputError, match=message):
        load_external(cells)
