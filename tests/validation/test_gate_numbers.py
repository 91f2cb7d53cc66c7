"""Numbers validated at the edge (docs/gate.md, section 2): counts are whole numbers, ranges hold,
nothing overflows, and a per-document file that does not pair with the cells is an input error
(exit 2), never a silent fallback to a seeds-only bootstrap."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from validation import InputError, load_external
from validation.simulation.simulate import simulate_study
from validation.verdict import main

PREREG = Path(__file__).resolve().parents[1] / "data" / "prereg_fast.toml"


def _cells() -> pl.DataFrame:
    return pl.DataFrame({"seed": [0] * 4 + [1] * 4, "adapter": ["a", "b", "a", "b"] * 2,
                         "eval": ["a", "a", "b", "b"] * 2,
                         "nll_sum": [10.0, 12.0, 13.0, 9.0, 10.5, 12.5, 13.5, 9.5],
                         "n_tokens": [10, 10, 10, 10, 10, 10, 10, 10]})


def _set(df: pl.DataFrame, col: str, row: int, value) -> pl.DataFrame:
    values = df[col].to_list()
    values[row] = value
    return df.with_columns(pl.Series(col, values))


CASES = [
    ("fractional count", lambda d: _set(d.with_columns(pl.col("n_tokens").cast(pl.Float64)), "n_tokens", 2, 10.5),
     r"column `n_tokens` is a count and must hold whole numbers; not at row\(s\) 3"),
    ("boolean count", lambda d: d.with_columns(pl.Series("n_tokens", [True] * 8)),
     r"column `n_tokens` holds true/false values"),
    ("tiny count overflows", lambda d: _set(_set(d, "n_tokens", 0, 1), "nll_sum", 0, 5000.0),
     r"overflows \(log perplexity > 700\) at row\(s\) 1\b"),
    ("overflow off the diagonal", lambda d: _set(_set(d, "n_tokens", 1, 1), "nll_sum", 1, 1e6),
     r"overflows .* at row\(s\) 2\b"),
    ("negative nll", lambda d: _set(d, "nll_sum", 3, -4.0),
     r"column `nll_sum` must be >= 0 \(a negative log-likelihood is never negative\); not at row\(s\) 4"),
    ("fractional seed", lambda d: d.with_columns(pl.Series("seed", [0.0] * 4 + [1.5] * 4)),
     r"column `seed` must hold integers; not at row\(s\) 5, 6, 7, 8"),
    ("boolean seed", lambda d: d.with_columns(pl.Series("seed", [False] * 4 + [True] * 4)),
     r"column `seed` holds true/false values"),
    ("negative seed", lambda d: d.with_columns(pl.Series("seed", [0] * 4 + [-1] * 4)),
     r"column `seed` must hold integers >= 0; not at row\(s\) 5"),
]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("what, mutate, message", CASES, ids=[c[0] for c in CASES])
def test_bad_numbers_are_refused_naming_row_and_column(tmp_path, what, mutate, message, fmt):
    p = tmp_path / f"cells.{fmt}"
    df = mutate(_cells())
    df.write_csv(p) if fmt == "csv" else df.write_parquet(p)
    with pytest.raises(InputError, match=message) as e:
        load_external(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("ppl, message", [(0.5, r"`ppl` must be >= 1 \(a perplexity below 1"),
                                          (float("inf"), r"`ppl` has NaN, infinite"),
                                          (1e305, r"overflows")])
def test_perplexity_only_input_is_bounded(tmp_path, ppl, message):
    df = _cells().with_columns((pl.col("nll_sum") / pl.col("n_tokens")).exp().alias("ppl")).drop("nll_sum", "n_tokens")
    p = tmp_path / "c.parquet"
    _set(df, "ppl", 0, ppl).write_parquet(p)
    with pytest.raises(InputError, match=message):
        load_external(p)


def test_overflow_is_exit_2_with_no_numpy_warning(tmp_path, capsys):
    p = tmp_path / "c.csv"
    _set(_set(_cells(), "n_tokens", 0, 1), "nll_sum", 0, 9000.0).write_csv(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["--cells", str(p), "--prereg", str(PREREG), "--no-report", "--no-calibration"]) == 2
    err = capsys.readouterr().err
    assert "c.csv" in err and "row(s) 1" in err and "Traceback" not in err and "RuntimeWarning" not in err


def _study(tmp_path: Path, personalization=0.2):
    data = simulate_study(np.random.default_rng(3), n_seeds=3, n_docs=8, personalization=personalization)
    cells = tmp_path / "cells.parquet"
    data.cells.write_parquet(cells)
    return data, cells


DOC_BREAKS = [
    ("documents missing for one adapter", lambda d: d.filter(pl.col("adapter") != "bob"),
     r"no documents for \d+ cell\(s\) of the cells table, e.g. seed=0, adapter='bob'"),
    ("one document missing in one cell",
     lambda d: d.filter(~((pl.col("adapter") == "bob") & (pl.col("seed") == 1)
                          & (pl.col("doc_id") == d["doc_id"].unique().sort()[3]))),
     r"the documents of column eval='\w+' differ between cells: seed=1, adapter='bob'"),
    ("mismatched doc ids",
     lambda d: d.with_columns(pl.when(pl.col("adapter") == "pooled").then(pl.col("doc_id") + "x")
                              .otherwise(pl.col("doc_id")).alias("doc_id")),
     r"differ between cells"),
    ("nll sums disagree with the cells",
     lambda d: d.with_columns(pl.when((pl.col("adapter") == "alice") & (pl.col("eval") == "alice"))
                              .then(pl.col("nll_sum") * 0.5).otherwise(pl.col("nll_sum")).alias("nll_sum"))
     .drop("ppl", "logppl", "bpb"),
     r"the documents disagree with the cells table for \d+ cell\(s\), e.g. seed=0, adapter='alice', eval='alice'"),
]


@pytest.mark.parametrize("what, mutate, message", DOC_BREAKS, ids=[c[0] for c in DOC_BREAKS])
def test_a_broken_docs_file_is_exit_2_never_a_weaker_analysis(tmp_path, capsys, what, mutate, message):
    data, cells = _study(tmp_path)
    docs = tmp_path / "docs.parquet"
    mutate(data.docs).write_parquet(docs)
    with pytest.raises(InputError, match=message):
        load_external(cells, docs)
    args = ["--cells", str(cells), "--docs", str(docs), "--prereg", str(PREREG), "--no-report",
            "--no-calibration", "--accept-not-preregistered"]
    assert main(args) == 2
    assert "docs.parquet" in capsys.readouterr().err
    assert not (tmp_path / "cells.verdict").exists()


def test_intact_docs_still_load_hierarchically(tmp_path):
    data, cells = _study(tmp_path)
    docs = tmp_path / "docs.parquet"
    data.docs.write_parquet(docs)
    assert load_external(cells, docs).docs.height == data.docs.height
