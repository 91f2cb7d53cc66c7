"""The suite's one study simulator: a seeded generative model of document-level log perplexities
with known per-user margins.

`simulate_experiment` (with its truth) validates the validator (`validation.calibrate`);
`simulate_study` is the same model with a few named knobs, for tests, benchmarks and examples;
`cells_from_matrix` turns hand-written perplexities into cells. Each simulated experiment produces the
very tables the runner writes (`cells`: seed, adapter, eval, nll_sum, n_tokens, n_bytes, ppl,
bpb, status; `docs`: the same per held-out document plus `doc_id`) and goes through
`validation.judge` unchanged. Step sweeps (`validation.simulation.steps`) and users drawn from a
population (`validation.simulation.population`) are built on this model.

The model, for evaluation user j, document d, seed s and adapter row i (users, then `base`,
`pooled`), on the per-token log-loss scale (a log-ratio scale of perplexity):

    loss[s,i,j,d] = E[i,j]                                   expected cell log ppl (fixed)
                  + doc[j,d]          ~ N(0, doc_sd)          text difficulty of the document
                  + docadapt[i,j,d]   ~ N(0, doc_adapter_sd)  document x adapter, fixed over seeds
                  + seed[s]           ~ N(0, seed_sd)         random intercept per seed
                  + instance[s,i]     ~ N(0, instance_sd)     adapter instance (seed:adapter)
                  + cell[s,i,j]       ~ N(0, cell_sd)         seed x adapter x eval
                  + noise[s,i,j,d]    ~ N(0, noise_sd * sqrt(mean_tokens / tokens_d))
                  [+ snap[s,i,j,k]    ~ N(0, snapshot_sd)     per step count k, `simulate_steps` only]
                  [+ doctrend[i,j,d] x_k  ~ N(0, doc_trend_sd)   seed-shared, `simulate_steps` only]
                  [+ trend[i,j] x_k       ~ N(0, trend_sd)       seed-shared, in E (truth), likewise]

`base` is not trained: it has no seed, instance or cell effect and the same noise in every seed.
A leave-one-out control `loo:<user k>` among the controls has E[loo:k,j] = E[pooled,j] + seen * 1[j == k]:
it lacks, on k's own column only, what pooled gained from having seen k's text.
Cell log ppl = sum_d tokens_d * loss / sum_d tokens_d, exactly as the runner sums NLL.

Expected cells: E[i,j] = text[j] - regularization + quality[i] + offdiag[i,j] for user adapters
off the diagonal, E[pooled,j] = text[j] - regularization, E[base,j] = text[j], and the diagonal
is *set from the target margin*:  E[j,j] = min_{i in U, i != j} E[i,j] + log(1 - m_j).

**True margin.** m_j = 1 - exp(E[j,j] - min_{i in U, i != j} E[i,j]), i.e. the diagonal margin
of docs/methods.md (`validation.stats.metrics.diagonal_margin`) evaluated on the expected cell log
perplexities: the limit of the estimate as the number of seeds and of documents drawn from the
same population grows without bound (every random term above has mean zero). It is a margin
against the best *other* adapter, so the truth is set through the min, not a diagonal coefficient.
**True diagonal effect.** The `diag` coefficient of the OLS fit of `E[i,j]` (user rows) on
`C(adapter) + C(eval) + diag`: on balanced complete data the mixed model's GLS estimate of the
fixed effects equals OLS, so this is what `validation.stats.mixed_model` estimates with infinite data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from common.contract import CONTROLS, loo_user
from validation.inputs.study import StudyData
from validation.inputs.tables import normalize_cells


@dataclass(frozen=True, eq=False)
class SimParams:
    """Parameters of the generative model; all effects are on the log-ppl (nats/token) scale."""

    users: tuple[str, ...] = ("user0", "user1", "user2")
    n_docs: tuple[int, ...] = (50, 50, 50)    # held-out documents per evaluation user
    mean_logppl: float = 3.0                  # log ppl of `base` on an average text
    text_sd: float = 0.3                      # sd of the users' text difficulty text[j]
    regularization: float = 0.10              # what any trained adapter buys over `base`
    adapter_sd: float = 0.03                  # sd of user-adapter quality[i] (regularization quality)
    offdiag_sd: float = 0.01                  # sd of the off-diagonal adapter x eval interaction
    # Defaults: the order of magnitude `params_from_run` finds in the tiny-preset runs of the
    # `null`, `synthetic-null` and `synthetic` sets (seed-level variation dominates the margins;
    # seed_sd itself cancels from every margin), scaled up so that 5-seed intervals are a few
    # points wide rather than a fraction of a point.
    seed_sd: float = 0.01
    instance_sd: float = 0.01
    cell_sd: float = 0.005
    doc_sd: float = 0.1
    doc_adapter_sd: float = 0.005
    noise_sd: float = 0.005                   # per-token log-loss noise of a document of mean length
    mean_tokens: float = 400.0                # doc lengths ~ lognormal around this (unless doc_tokens)
    tokens_log_sd: float = 0.5
    bytes_per_token: float = 4.0
    controls: tuple[str, ...] = CONTROLS        # `base`, `pooled`, and `loo:<user>` rows
    seen: float = 0.0                         # what `loo:<user k>` lacks on k's column (log-ratio)
    # Step sweeps only (`simulate_steps`): sd of a seed x adapter x eval term drawn afresh at every
    # step count (what one snapshot of a training run adds on top of the run's shared terms).
    snapshot_sd: float = 0.0
    # Step sweeps only: seed-shared count trends (slopes per doubling on centred log2(steps), drawn
    # once and shared by every seed). `doc_trend_sd`: per (trained adapter, held-out document), mean
    # zero, so it leaves the true margins (the many-document limit) unchanged: the finite set of
    # documents scored at every count and seed makes of it a cell-level trend of sd about
    # doc_trend_sd / sqrt(n_docs) that is noise. `trend_sd`: per (trained adapter, eval user), every
    # document alike: a real trend of that adapter on that user's text, part of the truth.
    doc_trend_sd: float = 0.0
    trend_sd: float = 0.0
    # From a real run (`params_from_run`): fixed expected cells of every row but the diagonal,
    # (A, J) in the row order users + controls; and the run's document lengths per user.
    expected: np.ndarray | None = None
    doc_tokens: tuple[np.ndarray, ...] | None = None
    source: str = "defaults"                  # "defaults" or the run directory it came from

    def __post_init__(self) -> None:
        _params_iv(self)

    @property
    def adapters(self) -> tuple[str, ...]:
        return tuple(self.users) + tuple(self.controls)

    def with_design(self, users: int | None = None, n_docs: int | None = None) -> SimParams:
        """The same parameters for another number of users / documents per user (defaults only)."""
        J = len(self.users) if users is None else users
        D = int(np.mean(self.n_docs)) if n_docs is None else n_docs
        if self.expected is not None and (J != len(self.users) or n_docs is not None):
            raise ValueError("`with_design`: parameters estimated from a run keep its users and documents.")
        return replace(self, users=tuple(f"user{k}" for k in range(J)) if users else self.users,
                       n_docs=(D,) * J)

    def to_json(self) -> dict:
        skip = {"expected", "doc_tokens"}
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}
        d["users"], d["n_docs"], d["controls"] = list(self.users), list(self.n_docs), list(self.controls)
        d["expected_from_run"] = self.expected is not None
        if not self.snapshot_sd:
            del d["snapshot_sd"]   # step sweeps only: single-count parameter files keep their keys
        for k in ("doc_trend_sd", "trend_sd"):
            if not getattr(self, k):
                del d[k]           # step sweeps only, likewise
        return d


def _params_iv(p: SimParams) -> None:
    if len(p.users) < 2:
        raise ValueError(f"`users` must name at least two users; got {list(p.users)}.")
    if len(p.n_docs) != len(p.users) or any(int(n) < 1 for n in p.n_docs):
        raise ValueError(f"`n_docs` must hold one positive count per user; got {list(p.n_docs)}.")
    for name in ("text_sd", "adapter_sd", "offdiag_sd", "seed_sd", "instance_sd", "cell_sd",
                 "doc_sd", "doc_adapter_sd", "noise_sd", "tokens_log_sd", "snapshot_sd", "doc_trend_sd",
                 "trend_sd"):
        v = getattr(p, name)
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"`{name}` must be a finite number >= 0; got {v!r}.")
    if not (p.mean_tokens >= 1 and p.bytes_per_token > 0):
        raise ValueError("`mean_tokens` must be >= 1 and `bytes_per_token` > 0.")
    bad = [c for c in p.controls if c not in CONTROLS and loo_user(c) not in p.users]
    if bad:
        raise ValueError(f"`controls` may hold only {CONTROLS} and `loo:<user>` of a user; got {bad}.")
    if p.expected is not None and p.expected.shape != (len(p.adapters), len(p.users)):
        raise ValueError(f"`expected` must have shape (A, J) = {(len(p.adapters), len(p.users))}; "
                         f"got {p.expected.shape}.")


@dataclass(frozen=True, eq=False)
class Truth:
    """The known answer of one simulated experiment."""

    expected: np.ndarray          # (A, J) expected cell log ppl, rows users + controls (+ any added `rows`)
    margins: np.ndarray           # (J,) true diagonal margins (see module doc)
    diagonal_effect: float        # true `diag` coefficient (log-ratio), see module doc


@dataclass(frozen=True, eq=False)
class SimulatedStudy:
    data: StudyData
    truth: Truth


def true_margins(expected: np.ndarray) -> np.ndarray:
    """(A, J) expected log ppl -> (J,) 1 - exp(E[j,j] - min_{i in U, i != j} E[i,j])."""
    from validation.stats.metrics import diagonal_margin
    return diagonal_margin(expected)


def true_diagonal_effect(expected: np.ndarray) -> float:
    """OLS `diag` coefficient of E[i,j] (user rows) on adapter + eval + diag (see module doc)."""
    J = expected.shape[1]
    i, j = np.meshgrid(np.arange(J), np.arange(J), indexing="ij")
    i, j = i.ravel(), j.ravel()
    X = np.column_stack([np.ones(J * J)]
                        + [(i == k).astype(float) for k in range(1, J)]
                        + [(j == k).astype(float) for k in range(1, J)]
                        + [(i == j).astype(float)])
    coef, *_ = np.linalg.lstsq(X, expected[:J, :J].ravel(), rcond=None)
    return float(coef[-1])


def expected_cells(params: SimParams, margins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(A, J) expected cell log ppl with the diagonal set so that the true margins are `margins`.

    Without `params.expected`, text difficulty, adapter quality and off-diagonal interactions are
    drawn afresh (so calibration averages over configurations of the other adapters).
    """
    J, A = len(params.users), len(params.adapters)
    margins = np.broadcast_to(np.asarray(margins, dtype=float), (J,))
    if np.any(margins >= 1):
        raise ValueError(f"`margins` must be < 1 (a margin of 1 is a perplexity of 0); got {margins}.")
    if params.expected is not None:
        E = np.array(params.expected, dtype=float, copy=True)
    else:
        text = params.mean_logppl + rng.normal(0, params.text_sd, size=J)
        quality = rng.normal(0, params.adapter_sd, size=J)
        E = np.empty((A, J))
        E[:J] = (text[None, :] - params.regularization + quality[:, None]
                 + rng.normal(0, params.offdiag_sd, size=(J, J)))
        for k, c in enumerate(params.controls):
            E[J + k] = text - (0.0 if c == "base" else params.regularization)
            if loo_user(c) is not None:
                E[J + k, params.users.index(loo_user(c))] += params.seen
    others = E[:J].copy()
    others[np.arange(J), np.arange(J)] = np.inf
    E[np.arange(J), np.arange(J)] = others.min(axis=0) + np.log1p(-margins)
    return E


def _doc_tokens(params: SimParams, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    if params.doc_tokens is not None:
        return tuple(np.asarray(t, dtype=float) for t in params.doc_tokens)
    mu = np.log(params.mean_tokens) - params.tokens_log_sd ** 2 / 2
    return tuple(np.maximum(1, np.round(rng.lognormal(mu, params.tokens_log_sd, size=int(n))))
                 for n in params.n_docs)


def simulate_experiment(params: SimParams, margins, n_seeds: int, rng: np.random.Generator,
                        *, seeds: tuple[int, ...] | None = None,
                        rows: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None) -> SimulatedStudy:
    """One experiment: S seeds x A rows x J users x n_docs documents, with known truth.

    `margins` (scalar or (J,)) are the true margins m_j (module doc). Deterministic given `rng`.
    `rows` adds rows after the controls (e.g. the routing rows `avg:`, `ens:`, `noise:`): given the
    expected cells E (A, J), it returns {name: (J,) expected log ppl}; each added row is a trained
    row of the model (seed, instance, cell, document x adapter and document noise terms of its own,
    the seed and document terms shared), and `Truth.expected` holds it below the others.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"`rng` must be a numpy.random.Generator; got {type(rng).__name__}.")
    if not isinstance(n_seeds, (int, np.integer)) or n_seeds < 1:
        raise ValueError(f"`n_seeds` must be a positive integer; got {n_seeds!r}.")
    seeds = tuple(range(n_seeds)) if seeds is None else tuple(seeds)
    p, S = params, int(n_seeds)
    E = expected_cells(p, margins, rng)
    adapters, E_all = p.adapters, E
    if rows is not None:
        extra = rows(E)
        if set(extra) & set(adapters):
            raise ValueError(f"`rows` must name new rows; {sorted(set(extra) & set(adapters))} already exist.")
        adapters = adapters + tuple(extra)
        E_all = np.vstack([E, *(np.broadcast_to(np.asarray(v, dtype=float), (E.shape[1],))[None]
                                for v in extra.values())])
    (nll_cols, tok_cols), = _simulate_columns(p, [E_all], S, rng, adapters=adapters)
    data = study_tables(nll_cols, tok_cols, adapters, p.users, seeds, p.bytes_per_token)
    return SimulatedStudy(data, Truth(E_all, true_margins(E), true_diagonal_effect(E)))


def _simulate_columns(p: SimParams, Es: list[np.ndarray], S: int, rng: np.random.Generator,
                      xs: np.ndarray | None = None, adapters: tuple[str, ...] | None = None):
    """Per expected matrix E_k (A, J) in `Es`: per column j, (S, A, D) document NLL sums and token
    counts. Seed, instance, cell, document and document x adapter terms are drawn once and shared
    by every E_k (snapshots of the same trained adapters, evaluated on the same documents); the
    per-document noise is drawn afresh for each. With one E the draws are those of
    `simulate_experiment` (one fixed order). `xs` (one centred log2 step count per E) carries the
    seed-shared document x adapter trend `doc_trend_sd` (drawn only when it is > 0, so that every
    other draw is unchanged without it)."""
    adapters = p.adapters if adapters is None else adapters
    J, A = len(p.users), len(adapters)
    trained = np.array([a != "base" for a in adapters], dtype=float)             # (A,)
    seed_eff = rng.normal(0, p.seed_sd, size=S)[:, None] * trained[None, :]      # (S, A)
    inst = rng.normal(0, p.instance_sd, size=(S, A)) * trained[None, :]          # (S, A)
    tokens = _doc_tokens(p, rng)
    out = [([], []) for _ in Es]
    for j in range(J):
        tok = tokens[j]                                                          # (D,)
        D = tok.size
        cell = rng.normal(0, p.cell_sd, size=(S, A)) * trained[None, :]
        doc = rng.normal(0, p.doc_sd, size=D)
        docadapt = rng.normal(0, p.doc_adapter_sd, size=(A, D))
        doctrend = (rng.normal(0, p.doc_trend_sd, size=(A, D)) * trained[:, None]
                    if p.doc_trend_sd > 0 and xs is not None else None)
        for k, (E, (nll_cols, tok_cols)) in enumerate(zip(Es, out, strict=True)):
            noise = rng.normal(0, 1, size=(S, A, D)) * (p.noise_sd * np.sqrt(p.mean_tokens / tok))
            noise[:, ~trained.astype(bool)] = noise[:1, ~trained.astype(bool)]  # base: deterministic
            snap = (rng.normal(0, p.snapshot_sd, size=(S, A)) * trained[None, :] if p.snapshot_sd > 0
                    else 0.0)                                                    # (S, A) per count
            loss = (E[None, :, j, None] + doc[None, None, :] + docadapt[None]
                    + (seed_eff + inst + cell + snap)[:, :, None] + noise)       # (S, A, D)
            if doctrend is not None:
                loss = loss + (doctrend * xs[k])[None]                          # shared by seeds
            nll_cols.append(loss * tok)
            tok_cols.append(np.broadcast_to(tok, loss.shape))
    return out


def study_tables(nll_cols, tok_cols, adapters, users, seeds, bytes_per_token: float = 4.0) -> StudyData:
    """Per column j arrays (S, A, n_j) of document NLL sums and token counts -> StudyData.

    The tables have the runner's columns (docs/formats.md); cells are the document sums.
    """
    parts_docs, parts_cells = [], []
    for j, (nll, tok) in enumerate(zip(nll_cols, tok_cols, strict=True)):
        S, A, D = nll.shape
        s, a, d = (x.ravel() for x in np.meshgrid(np.arange(S), np.arange(A), np.arange(D), indexing="ij"))
        nbytes = np.round(tok * bytes_per_token)
        parts_docs.append(pl.DataFrame({
            "seed": np.asarray(seeds, dtype=np.int64)[s], "adapter": np.asarray(adapters)[a],
            "eval": np.full(s.size, users[j]), "doc_id": d,  # integers; normalize_cells makes them strings
            "nll_sum": nll.ravel(), "n_tokens": tok.ravel().astype(np.int64),
            "n_bytes": nbytes.ravel().astype(np.int64),
        }))
        cs, ca = (x.ravel() for x in np.meshgrid(np.arange(S), np.arange(A), indexing="ij"))
        c_nll, c_tok, c_bytes = nll.sum(-1).ravel(), tok.sum(-1).ravel(), nbytes.sum(-1).ravel()
        parts_cells.append(pl.DataFrame({
            "seed": np.asarray(seeds, dtype=np.int64)[cs], "adapter": np.asarray(adapters)[ca],
            "eval": np.full(cs.size, users[j]), "nll_sum": c_nll, "n_tokens": c_tok.astype(np.int64),
            "n_bytes": c_bytes.astype(np.int64), "ppl": np.exp(c_nll / c_tok),
            "bpb": c_nll / c_bytes / np.log(2), "status": np.full(cs.size, "ok"),
        }))
    docs = pl.concat(parts_docs).with_columns(
        (pl.col("nll_sum") / pl.col("n_tokens")).exp().alias("ppl"),
        (pl.col("nll_sum") / pl.col("n_bytes") / np.log(2)).alias("bpb"), pl.lit("ok").alias("status"))
    return StudyData(cells=normalize_cells(pl.concat(parts_cells), "<simulated cells>"),
                     docs=normalize_cells(docs, "<simulated docs>", per_doc=True))


def write_study(data: StudyData, out_dir: str | Path) -> Path:
    """Write `cells.parquet` and `docs.parquet` as the runner would (atomically)."""
    from common.atomic import atomic_write_with
    out = Path(out_dir)
    cols = ["seed", "adapter", "eval", "nll_sum", "n_tokens", "n_bytes", "ppl", "bpb", "status"]
    atomic_write_with(out / "cells.parquet", lambda t: data.cells.select(cols).write_parquet(t))
    if data.docs is not None:
        atomic_write_with(out / "docs.parquet",
                          lambda t: data.docs.select(cols[:3] + ["doc_id"] + cols[3:]).write_parquet(t))
    return out


def simulate_study(
    rng: np.random.Generator,
    *,
    n_seeds: int = 5,
    users: tuple[str, ...] = ("alice", "bob", "carol"),
    n_docs: int = 50,
    personalization: float | np.ndarray = 0.15,
    regularization: float = 0.10,
    controls: tuple[str, ...] = CONTROLS,
    seed_sd: float = 0.02,
    instance_sd: float = 0.02,
    doc_sd: float = 0.3,
    noise_sd: float = 0.05,
    with_docs: bool = True,
    groups: tuple[int, ...] | None = None,
    group_penalty: float = 0.10,
    seen: float = 0.0,
) -> StudyData:
    """A study of S seeds x (J users + controls) x J users x `n_docs`, from `simulate_experiment`.

    The model of the module doc with every user adapter equally good off its own column
    (no adapter quality, off-diagonal, cell or document x adapter terms): the own adapter is
    `personalization` (a log-ratio, scalar or per user) better than the others, so the true
    margin is 1 - exp(-personalization). `with_docs=False` drops the per-document rows.
    `groups` (one group label per user) plants a domain-similarity structure: an adapter
    evaluated on the text of a user of another group is `group_penalty` (log ppl) worse than one
    of the same group, so the margin (against the best other, a same-group adapter) is unchanged.
    `controls` may add `loo:<user>` rows, `seen` (log-ratio) worse than pooled on their user's column.
    """
    pers = np.broadcast_to(np.asarray(personalization, dtype=float), (len(users),))
    params = SimParams(users=tuple(users), n_docs=(int(n_docs),) * len(users), controls=tuple(controls),
                       regularization=regularization, adapter_sd=0.0, offdiag_sd=0.0,
                       seed_sd=seed_sd, instance_sd=instance_sd, cell_sd=0.0, doc_sd=doc_sd,
                       doc_adapter_sd=0.0, noise_sd=noise_sd, mean_tokens=240.0, seen=seen)
    if groups is not None:
        params = replace(params, expected=_grouped_expected(params, groups, group_penalty, rng))
    data = simulate_experiment(params, -np.expm1(-pers), n_seeds, rng).data
    return data if with_docs else StudyData(cells=data.cells)


def _grouped_expected(params: SimParams, groups, penalty: float, rng: np.random.Generator) -> np.ndarray:
    """(A, J) expected cells of `simulate_study` with a between-group transfer penalty."""
    J = len(params.users)
    g = np.asarray(groups)
    if g.shape != (J,):
        raise ValueError(f"`groups` must hold one label per user ({J}); got {list(groups)}.")
    if not (np.isfinite(penalty) and penalty >= 0):
        raise ValueError(f"`group_penalty` must be a finite number >= 0; got {penalty!r}.")
    text = params.mean_logppl + rng.normal(0, params.text_sd, size=J)
    E = np.empty((len(params.adapters), J))
    E[:J] = text[None, :] - params.regularization + penalty * (g[:, None] != g[None, :])
    for k, c in enumerate(params.controls):
        E[J + k] = text - (params.regularization if c == "pooled" else 0.0)
    return E


def cells_from_matrix(ppl: np.ndarray, adapters: tuple[str, ...], users: tuple[str, ...]) -> StudyData:
    """(S, A, J) or (A, J) perplexities -> StudyData without documents (hand-computed tests)."""
    ppl = np.asarray(ppl, dtype=float)
    if ppl.ndim == 2:
        ppl = ppl[None]
    S, A, J = ppl.shape
    s, a, j = np.meshgrid(np.arange(S), np.arange(A), np.arange(J), indexing="ij")
    df = pl.DataFrame({"seed": s.ravel(), "adapter": np.asarray(adapters)[a.ravel()],
                       "eval": np.asarray(users)[j.ravel()], "ppl": ppl.ravel()})
    return StudyData(cells=normalize_cells(df, "<matrix>"))


# ---- issue 23: failure modes the calibration must be able to produce -----------------------------

def diverge(data: StudyData, seed: int, adapter: str) -> StudyData:
    """`data` with every cell (and per-document row) of `adapter` in `seed` marked `diverged`, as
    the runner marks an adapter whose training diverged: that seed drops out of every figure that
    needs the adapter (its own user's margin among them) and only of those."""
    if seed not in set(data.cells["seed"].to_list()):
        raise ValueError(f"`seed` {seed!r} is not a seed of the study; have {sorted(set(data.cells['seed']))}.")
    if adapter not in set(data.cells["adapter"].to_list()):
        raise ValueError(f"`adapter` {adapter!r} is not an adapter row of the study.")

    def mark(df: pl.DataFrame | None) -> pl.DataFrame | None:
        if df is None:
            return None
        hit = (pl.col("seed") == seed) & (pl.col("adapter") == adapter)
        return df.with_columns(pl.when(hit).then(pl.lit("diverged")).otherwise(pl.col("status")).alias("status"))

    return replace(data, cells=mark(data.cells), docs=mark(data.docs))
