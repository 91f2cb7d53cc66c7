"""The interval design of one study: what every interval of a verdict needs besides its draws.

`IntervalDesign` holds the interval method and level, the number of seeds, and for each evaluation
column its held-out documents and their effective df (`validation.stats.intervals.document_df` of
the documents' token counts), computed once from the study's arrays. The verdict (`judge`), the
step analysis and the decomposition read every interval through `interval`, instead of each
rebuilding the document counts, the df and an interval closure of its own.
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass

import numpy as np

from validation.inputs.arrays import StudyArrays
from validation.stats.intervals import bootstrap_interval, document_df
from validation.stats.types import Interval


@dataclass(frozen=True)
class IntervalDesign:
    method: str                           # the interval method (prereg.toml `interval_method`)
    level: float                          # the confidence level
    n_seeds: int
    n_docs: tuple[int, ...] | None        # held-out documents per evaluation column; None without documents
    doc_df: tuple[float, ...] | None      # their effective df (token-weighted); None without documents

    @classmethod
    def of(cls, arrays: StudyArrays, method: str, level: float) -> IntervalDesign:
        """The design of `arrays`' study, read with `method` at `level`."""
        return cls(method, level, len(arrays.seeds), _n_docs(arrays), _doc_df(arrays))

    def docs_of(self, j: int) -> int | None:
        return None if self.n_docs is None else self.n_docs[j]

    def df_of(self, j: int) -> float | None:
        return None if self.doc_df is None else self.doc_df[j]

    def interval(self, draws: np.ndarray, point: float, j: int, seed_values: np.ndarray | None = None,
                 level: float | None = None) -> Interval:
        """`bootstrap_interval` of column j's statistic (draws (B,), its per-seed values (S,))."""
        return bootstrap_interval(draws, point, self.level if level is None else level, method=self.method,
                                  n_seeds=self.n_seeds, seed_values=seed_values, n_docs=self.docs_of(j),
                                  doc_df=self.df_of(j))

    def pooled_interval(self, draws: np.ndarray, point: float, seed_values: np.ndarray | None = None) -> Interval:
        """An interval of a statistic over every column (each column's documents resampled): the
        document level read on the smallest column's documents and df."""
        return bootstrap_interval(draws, point, self.level, method=self.method, n_seeds=self.n_seeds,
                                  seed_values=seed_values, n_docs=None if self.n_docs is None else min(self.n_docs),
                                  doc_df=None if self.doc_df is None else min(self.doc_df))


def _doc_df(arrays: StudyArrays) -> tuple[float, ...] | None:
    """Effective df of each column's document level (`document_df` of its documents' token counts);
    None without per-document data."""
    if arrays.doc_tok is None:
        return None
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)
        return tuple(document_df(np.nanmean(t.reshape(t.shape[0], -1), axis=1)) for t in arrays.doc_tok)


def _n_docs(arrays: StudyArrays) -> tuple[int, ...] | None:
    """Held-out documents per evaluation user; None without per-document data."""
    return None if arrays.doc_nll is None else tuple(int(n.shape[0]) for n in arrays.doc_nll)
