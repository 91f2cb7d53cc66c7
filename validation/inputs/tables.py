"""The input tables: reading a CSV or Parquet file, and validating and normalizing cells (and
documents) into the columns the statistics use. `validation.inputs.load` (a run directory, external
files) and `validation.inputs.sweep` (every step count) load studies with these.

Every error is an `InputError` (a ValueError) naming the file, the row (1-based, header not
counted) or the column at fault, and saying how to fix it. Nothing here writes a file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from common.contract import (
    CONTROLS,
)
from common.limits import gib, memory_budget
from common.names import InvalidName, check_name, lookalikes, shown

STATUSES = ("ok", "diverged", "worse_than_base")
KEY = ["seed", "adapter", "eval"]


# A table in memory takes up to about this many times its file's size (CSV text -> columns).
TABLE_MEMORY_FACTOR = 3


class InputError(ValueError):
    """Bad input: the message names the file, row or column."""


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a CSV or Parquet file; an empty or undecodable file is an InputError naming it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found.")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a table file; pass the CSV or Parquet file inside it "
                         "(a run directory goes to `--run DIR`).")
    if not path.is_file():
        raise InputError(f"{path}: is not a regular file (a FIFO, socket or device); pass a CSV or Parquet "
                         "file saved on disk.")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: the file is empty.")
    if size * TABLE_MEMORY_FACTOR > memory_budget():
        raise InputError(f"{path}: the file is {gib(size)}; reading it needs about {gib(size * TABLE_MEMORY_FACTOR)}, "
                         f"more than this machine can give ({gib(memory_budget())}); convert it to Parquet, "
                         "drop unused columns, or judge on a machine with more memory.")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            with open(path, "rb") as f:  # a file object: polars reads a path with `[` or `*` as a glob
                df = pl.read_parquet(f)
        elif path.suffix.lower() in (".csv", ".txt", ".tsv"):
            raw = path.read_bytes()
            try:
                if b"\x00" in raw:
                    raise UnicodeDecodeError("utf-8", raw, raw.index(b"\x00"), raw.index(b"\x00") + 1, "NUL byte")
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}: cannot be read as csv: not UTF-8 text (byte {e.start}).") from None
            df = pl.read_csv(io.BytesIO(raw), separator="\t" if path.suffix.lower() == ".tsv" else ",",
                             infer_schema_length=None)
        else:
            raise InputError(f"{path}: unknown format `{path.suffix}`; use .csv or .parquet.")
    except InputError:
        raise
    except Exception as e:  # polars raises many types for undecodable input
        raise InputError(f"{path}: cannot be read as {path.suffix.lstrip('.') or 'a table'}: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if df.height == 0:
        raise InputError(f"{path}: the file has no rows.")
    return df


def row_numbers(mask: pl.Series, limit: int = 5) -> str:
    idx = np.flatnonzero(mask.fill_null(True).to_numpy())[:limit] + 1
    return ", ".join(str(i) for i in idx)


def _require_columns(df: pl.DataFrame, src: str, required: list[str]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{src}: missing column(s) {missing}; found {df.columns}.")


# exp(700) ~ 1e304: a larger log perplexity overflows float64 once exponentiated; no language model
# on real text comes near it, so it means a wrong unit or a token count far too small.
MAX_LOG_PPL = 700.0
# A token stands for at least one byte of text in a byte-level or byte-fallback tokenizer; only special
# tokens (BOS, EOS, ...) stand for none. More than this many tokens per byte is a wrong count.
MAX_TOKENS_PER_BYTE = 4


def _check_bytes_per_token(nbytes: pl.Series, tok: pl.Series, checked: pl.Series, src: str) -> None:
    """`n_tokens` <= MAX_TOKENS_PER_BYTE * `n_bytes` on the checked rows (docs/formats.md)."""
    b, t = nbytes.to_numpy(), tok.to_numpy()
    with np.errstate(invalid="ignore"):
        bad = checked.to_numpy() & (t > MAX_TOKENS_PER_BYTE * b)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise InputError(f"{src}: column `n_bytes` is impossibly small for `n_tokens` at row(s) "
                         f"{row_numbers(pl.Series(bad))} (e.g. {int(t[k])} tokens in {int(b[k])} byte(s)): a token is "
                         f"at least one byte of text, so more than {MAX_TOKENS_PER_BYTE} tokens per byte is a wrong "
                         "count; `n_bytes` is the UTF-8 bytes of the held-out text the tokens cover.")


def _numeric(df: pl.DataFrame, src: str, col: str, *, minimum: float | None = None, strict: bool = False,
             integer: bool = False, finite_only: pl.Series) -> pl.Series:
    """Column `col` as Float64, checked on the rows of `finite_only`: finite, >= (or >) `minimum`,
    integral when `integer`. Booleans are refused (true/false would read as 1/0)."""
    if df[col].dtype == pl.Boolean:
        raise InputError(f"{src}: column `{col}` holds true/false values; it must hold numbers.")
    try:
        s = df[col].cast(pl.Float64, strict=True)
    except Exception:
        raise InputError(f"{src}: column `{col}` must be numeric; got {df[col].dtype}.") from None
    v = s.to_numpy()
    rows = finite_only.to_numpy()
    bad = rows & ~np.isfinite(v)
    if bad.any():
        raise InputError(f"{src}: column `{col}` has NaN, infinite or missing values at row(s) "
                         f"{row_numbers(pl.Series(bad))}.")
    with np.errstate(invalid="ignore"):
        if integer:
            bad = rows & (v != np.round(v))
            if bad.any():
                raise InputError(f"{src}: column `{col}` is a count and must hold whole numbers; not at "
                                 f"row(s) {row_numbers(pl.Series(bad))} (e.g. {float(v[bad][0])!r}).")
        if minimum is not None:
            bad = rows & ~((v > minimum) if strict else (v >= minimum))
            if bad.any():
                op = ">" if strict else ">="
                why = {"ppl": " (a perplexity below 1 means a negative log-likelihood)",
                       "nll_sum": " (a negative log-likelihood is never negative)"}.get(col, "")
                raise InputError(f"{src}: column `{col}` must be {op} {minimum:g}{why}; not at row(s) "
                                 f"{row_numbers(pl.Series(bad))} (e.g. {float(v[bad][0])!r}).")
    return s


def normalize_cells(df: pl.DataFrame, source: str | Path = "<cells>", *, per_doc: bool = False,
                    exempt: pl.Series | None = None) -> pl.DataFrame:
    """Validate one cells (or docs, `per_doc=True`) table and return it with canonical columns.

    Output columns: seed (i64), adapter, eval, [doc_id], nll_sum, n_tokens, n_bytes, logppl, ppl,
    bpb, status; nll_sum/n_tokens/n_bytes/bpb may be null (only `ppl` given). Rows of status
    "diverged" (and rows where the boolean `exempt` is True, e.g. documents of a diverged cell)
    may hold any number: they are excluded from every statistic.
    """
    src = str(source)
    _require_columns(df, src, ["adapter", "eval"] + (["doc_id"] if per_doc else []))
    has_nll = "nll_sum" in df.columns and "n_tokens" in df.columns
    if per_doc and not has_nll:
        raise InputError(f"{src}: per-document rows need columns `nll_sum` and `n_tokens`; found {df.columns}.")
    if not has_nll and "ppl" not in df.columns:
        raise InputError(f"{src}: need a `ppl` column, or `nll_sum` and `n_tokens`; found {df.columns}.")
    n = df.height
    if "seed" not in df.columns:
        df = df.with_columns(pl.lit(0, dtype=pl.Int64).alias("seed"))
    seed = _seed_column(df["seed"], src)
    for col in ("adapter", "eval") + (("doc_id",) if per_doc else ()):
        s = df[col].cast(pl.Utf8)
        bad = s.is_null() | (s.str.strip_chars() == "")
        if bad.any():
            raise InputError(f"{src}: column `{col}` is empty at row(s) {row_numbers(bad)}.")
    status = (df["status"].cast(pl.Utf8).fill_null("ok") if "status" in df.columns
              else pl.Series("status", ["ok"] * n))
    unknown = ~status.is_in(list(STATUSES))
    if unknown.any():
        raise InputError(f"{src}: column `status` must be one of {list(STATUSES)}; row(s) "
                         f"{row_numbers(unknown)} hold {status.filter(unknown).unique().to_list()[:3]}.")
    checked = status != "diverged"
    if exempt is not None:
        checked = checked & ~exempt
    out: dict[str, Any] = {
        "seed": seed,
        "adapter": _names(df["adapter"].cast(pl.Utf8), src, "adapter"),
        "eval": _names(df["eval"].cast(pl.Utf8), src, "eval"),
    }
    if per_doc:
        out["doc_id"] = df["doc_id"].cast(pl.Utf8)
    nll = tok = nbytes = None
    if has_nll:
        nll = _numeric(df, src, "nll_sum", minimum=0.0, finite_only=checked)
        tok = _numeric(df, src, "n_tokens", minimum=1.0, integer=True, finite_only=checked)
        logppl = nll / tok
    else:
        ppl_in = _numeric(df, src, "ppl", minimum=1.0, finite_only=checked)
        logppl = ppl_in.log()
    over = checked.to_numpy() & ~(logppl.to_numpy() <= MAX_LOG_PPL)
    if over.any():
        what = "exp(`nll_sum` / `n_tokens`)" if has_nll else "`ppl`"
        raise InputError(f"{src}: the perplexity {what} overflows (log perplexity > {MAX_LOG_PPL:g}) at row(s) "
                         f"{row_numbers(pl.Series(over))}: a token count far too small, or NLL in the wrong unit; "
                         "fix the file (`nll_sum` is the sum of natural-log losses over `n_tokens` tokens).")
    if "ppl" in df.columns and has_nll:
        given = _numeric(df, src, "ppl", minimum=1.0, finite_only=checked).log()
        # a `ppl` that disagrees with exp(nll_sum / n_tokens) means a corrupted or mixed-up file
        off = checked.to_numpy() & ~(np.abs(given.to_numpy() - logppl.to_numpy())
                                     <= 1e-6 * np.maximum(1.0, np.abs(logppl.to_numpy())))
        if off.any():
            raise InputError(f"{src}: column `ppl` disagrees with exp(`nll_sum` / `n_tokens`) at row(s) "
                             f"{row_numbers(pl.Series(off))}; drop `ppl` or fix the file.")
    if "n_bytes" in df.columns:
        nbytes = _numeric(df, src, "n_bytes", minimum=1.0, integer=True, finite_only=checked)
        if tok is not None:
            _check_bytes_per_token(nbytes, tok, checked, src)
    null = pl.Series([None] * n, dtype=pl.Float64)
    out.update(
        nll_sum=nll if nll is not None else null,
        n_tokens=tok if tok is not None else null,
        n_bytes=nbytes if nbytes is not None else null,
        logppl=logppl,
        ppl=logppl.exp(),
        bpb=(nll / nbytes / np.log(2)) if (nll is not None and nbytes is not None) else null,
        status=status,
    )
    return pl.DataFrame(out)


def _names(col: pl.Series, src: str, column: str) -> pl.Series:
    """User and adapter names by the one rule of `common.names` (NFC, no control characters, no
    leading or trailing spaces, a length limit; a user may not be named like a control). The same
    rule admits the user folders of the runner, so the verdict never refuses the grid's own run."""
    fixed: dict[str, str] = {}
    for raw in col.unique().to_list():
        try:  # an adapter row may be a control (`base`, `pooled`, `loo:<user>`); an eval column never
            fixed[raw] = check_name(raw, "", user=column == "eval" or raw not in CONTROLS and ":" not in raw)
        except InvalidName as e:
            rows = row_numbers(col == raw)
            raise InputError(f"{src}: column `{column}` at row(s) {rows}{e}") from None
    out = col.replace_strict(fixed, return_dtype=pl.Utf8) if any(k != v for k, v in fixed.items()) else col
    pair = lookalikes(name for name in out.unique(maintain_order=True).to_list()
                      if column == "eval" or (name not in CONTROLS and ":" not in name))
    if pair is not None:
        a, b = pair
        raise InputError(f"{src}: column `{column}` holds the user names {shown(a)} (row(s) {row_numbers(out == a)}) "
                         f"and {shown(b)} (row(s) {row_numbers(out == b)}), which look alike (the same after "
                         "compatibility normalization, case folding and Unicode confusable folding) and would print "
                         "as one user; rename one of them (docs/gate.md, section 3).")
    return out


def _seed_column(col: pl.Series, src: str) -> pl.Series:
    """Seeds are whole numbers >= 0 (the runner's seeds); true/false and 1.5 are refused."""
    if col.dtype == pl.Boolean:
        raise InputError(f"{src}: column `seed` holds true/false values; it must hold integers >= 0.")
    if col.null_count():
        raise InputError(f"{src}: column `seed` is empty at row(s) {row_numbers(col.is_null())}.")
    if col.dtype.is_float():
        v = col.to_numpy()
        bad = ~np.isfinite(v) | (v != np.round(v)) | (np.abs(v) > 2**53)
        if bad.any():
            raise InputError(f"{src}: column `seed` must hold integers; not at row(s) {row_numbers(pl.Series(bad))} "
                             f"(e.g. {float(v[bad][0])!r}).")
    try:
        seed = col.cast(pl.Int64, strict=True)
    except Exception:
        raise InputError(f"{src}: column `seed` must hold integers; got {col.dtype}.") from None
    if (seed < 0).any():
        raise InputError(f"{src}: column `seed` must hold integers >= 0; not at row(s) {row_numbers(seed < 0)}.")
    return seed


def check_duplicates(cells: pl.DataFrame, src: str, key: list[str]) -> None:
    dup = cells.select(key).is_duplicated()
    if dup.any():
        first = cells.filter(dup).row(0, named=True)
        raise InputError(f"{src}: duplicated cell(s) at row(s) {row_numbers(dup)}: "
                         + ", ".join(f"{k}={first[k]!r}" for k in key)
                         + " appears more than once; keep one row per " + " x ".join(key) + ".")


def _cell_text(r: dict) -> str:
    return f"seed={r['seed']}, adapter={r['adapter']!r}, eval={r['eval']!r}"


def check_docs_match(docs: pl.DataFrame, cells: pl.DataFrame, src: str) -> None:
    """The documents must pair with the cells, or the bootstrap would silently weaken: every cell
    has documents, every cell of a column has the same doc ids, and the documents' sums equal the
    cell (diverged cells excepted from the sums). Any mismatch is an InputError."""
    extra = docs.select(KEY).unique().join(cells.select(KEY), on=KEY, how="anti").sort(KEY)
    if extra.height:
        raise InputError(f"{src}: documents for cell(s) absent from the cells table, e.g. "
                         f"{_cell_text(extra.row(0, named=True))}.")
    missing = cells.select(KEY).join(docs.select(KEY).unique(), on=KEY, how="anti").sort(KEY)
    if missing.height:
        raise InputError(f"{src}: no documents for {missing.height} cell(s) of the cells table, e.g. "
                         f"{_cell_text(missing.row(0, named=True))}; every adapter and seed needs the documents "
                         "of every column it is scored on (or pass the cells without `--docs`).")
    per_column = docs.group_by("eval").agg(pl.col("doc_id").n_unique().alias("_n_docs"))
    per_cell = docs.group_by(KEY).agg(pl.len().alias("_n")).join(per_column, on="eval")
    short = per_cell.filter(pl.col("_n") != pl.col("_n_docs")).sort(KEY)
    if short.height:
        r = short.row(0, named=True)
        have = set(docs.filter((pl.col("seed") == r["seed"]) & (pl.col("adapter") == r["adapter"])
                               & (pl.col("eval") == r["eval"]))["doc_id"].to_list())
        absent = sorted(set(docs.filter(pl.col("eval") == r["eval"])["doc_id"].to_list()) - have)
        raise InputError(f"{src}: the documents of column eval={r['eval']!r} differ between cells: "
                         f"{_cell_text(r)} has {r['_n']} of the column's {r['_n_docs']} doc ids (missing e.g. "
                         f"{absent[:3]}); every adapter and seed must be scored on the same documents.")
    scored = cells.filter(pl.col("status") != "diverged")
    sums = docs.group_by(KEY).agg(pl.col("nll_sum").sum().alias("_nll"), pl.col("n_tokens").sum().alias("_tok"))
    both = scored.join(sums, on=KEY, how="inner").sort(KEY)
    from_docs = (both["_nll"] / both["_tok"]).to_numpy()
    off = ~np.isclose(from_docs, both["logppl"].to_numpy(), rtol=1e-6, atol=1e-9)
    if both["nll_sum"].null_count() == 0:  # the cells give sums: those must match too
        off |= ~np.isclose(both["_nll"].to_numpy(), both["nll_sum"].to_numpy(), rtol=1e-6, atol=1e-6)
        off |= ~np.isclose(both["_tok"].to_numpy(), both["n_tokens"].to_numpy(), rtol=0, atol=0.5)
    if off.any():
        r = both.filter(pl.Series(off)).row(0, named=True)
        raise InputError(f"{src}: the documents disagree with the cells table for {int(off.sum())} cell(s), e.g. "
                         f"{_cell_text(r)}: documents sum to nll_sum={r['_nll']:.6g} over n_tokens={r['_tok']:.6g} "
                         f"(log ppl {r['_nll'] / r['_tok']:.6g}), the cell says log ppl {r['logppl']:.6g}; "
                         "the two files come from different runs or one is corrupted.")
