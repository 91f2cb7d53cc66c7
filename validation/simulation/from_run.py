"""Simulation parameters estimated from a real run (`params_from_run`), for `validation.calibrate`.

The generative model itself is `validation.simulation.simulate`; this module only fits its variance
components to a run's cells and per-document rows, so that the calibration is that of the run's
own design and noise regime.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from common.contract import LOO_PREFIX
from validation.inputs.structure import drop_routing
from validation.inputs.study import StudyData
from validation.simulation.simulate import SimParams


def params_from_run(source: str | Path | StudyData) -> tuple[SimParams, tuple[str, ...]]:
    """Estimate `SimParams` from a run directory (or loaded StudyData); returns (params, notes).

    Method of moments on the balanced layout, every variance clipped at 0:
    - expected cells: the across-seed mean log ppl of every row (the diagonal is later replaced
      by the target margin), so the other adapters keep the run's spacing (and its near-ties);
    - documents: the run's held-out document lengths per user;
    - per column, per-token document losses x[d,s,i] of the trained rows: centred within each
      cell, their seed-to-seed spread (scaled by sqrt(tokens / mean tokens)) gives `noise_sd`,
      their adapter-to-adapter spread of the seed means `doc_adapter_sd`, the rest `doc_sd`;
    - cells: two-way ANOVA of z = logppl - seed mean on seeds x (adapter, eval) gives the seed,
      instance (seed:adapter) and cell (seed:adapter:eval) variances, less the part the document
      noise explains. Balanced-data ANOVA estimates equal REML's when none is clipped.
    """
    from validation.inputs.arrays import build_arrays
    from validation.inputs.load import load_run

    data = source if isinstance(source, StudyData) else load_run(source)
    name = str(getattr(data, "source", None) or "<study data>")
    loo = pl.col("adapter").str.starts_with(LOO_PREFIX)
    dropped = data.cells.filter(loo).height > 0
    if dropped:  # the criteria read no leave-one-out control, so the simulation has none
        data = replace(data, cells=data.cells.filter(~loo),
                       docs=None if data.docs is None else data.docs.filter(~loo))
    # nor a routing row (docs/routing.md): the calibrated criteria are the margins'
    data = replace(data, cells=drop_routing(data.cells), docs=drop_routing(data.docs))
    arrays = build_arrays(data)
    notes: list[str] = list(arrays.warnings)
    if dropped:
        notes.append("leave-one-out controls (loo:<user>) left out: no criterion reads them")
    users, adapters = arrays.users, arrays.adapters
    J = len(users)
    controls = tuple(a for a in adapters[J:])
    with np.errstate(invalid="ignore"):
        expected = np.nanmean(arrays.logppl, axis=0)                       # (A, J)
    if not np.all(np.isfinite(expected)):
        raise ValueError(f"{name}: some cells are missing or diverged in every seed; cannot "
                         "estimate expected perplexities for the simulation.")
    trained = np.array([a != "base" for a in adapters])
    kw: dict = {}
    if arrays.doc_nll is None:
        notes.append("no per-document data: document-level spreads keep their defaults")
        doc_tokens = None
        n_docs = (50,) * J
        mean_tok = SimParams.mean_tokens
    else:
        doc_tokens = tuple(t[:, 0, 0].copy() for t in arrays.doc_tok)
        n_docs = tuple(int(t.size) for t in doc_tokens)
        mean_tok = float(np.mean(np.concatenate(doc_tokens)))
        kw.update(_doc_components(arrays.doc_nll, arrays.doc_tok, trained, mean_tok, notes))
    noise_cell = (kw.get("noise_sd", SimParams.noise_sd) ** 2 * mean_tok
                  / np.mean([t.sum() for t in doc_tokens]) if doc_tokens else 0.0)
    kw.update(_cell_components(arrays.logppl[:, trained], noise_cell, notes))
    bpt = 4.0
    cells = data.cells.filter(data.cells["n_bytes"].is_not_null() & data.cells["n_tokens"].is_not_null())
    if cells.height:
        bpt = float(cells["n_bytes"].sum() / cells["n_tokens"].sum())
    params = SimParams(users=users, n_docs=n_docs, controls=controls, expected=expected,
                       doc_tokens=doc_tokens, mean_tokens=mean_tok, bytes_per_token=bpt,
                       mean_logppl=float(expected.mean()), source=name, **kw)
    return params, tuple(notes)


def _doc_components(doc_nll, doc_tok, trained, mean_tok, notes) -> dict:
    ss = {"noise": [0.0, 0], "da": [0.0, 0], "doc": [0.0, 0]}
    inv_tok = []
    for nll, tok in zip(doc_nll, doc_tok, strict=True):
        x = (nll / tok)[:, :, trained]                                      # (n, S, A')
        n, S, A = x.shape
        w = np.sqrt(tok[:, 0, 0] / mean_tok)[:, None, None]
        xc = x - x.mean(axis=0, keepdims=True)                              # remove cell level
        xbar = xc.mean(axis=1)                                              # (n, A')
        if S > 1:
            ss["noise"][0] += float(np.sum(((xc - xbar[:, None]) * w) ** 2))
            ss["noise"][1] += n * A * (S - 1)
        ss["da"][0] += float(np.sum((xbar - xbar.mean(axis=1, keepdims=True)) ** 2))
        ss["da"][1] += n * (A - 1)
        ss["doc"][0] += float(np.sum((xbar.mean(axis=1) - xbar.mean()) ** 2))
        ss["doc"][1] += n - 1
        inv_tok.append(np.mean(mean_tok / tok[:, 0, 0]))
    noise_var = ss["noise"][0] / ss["noise"][1] if ss["noise"][1] else 0.0
    if not ss["noise"][1]:
        notes.append("one seed: document noise cannot be told from the document x adapter "
                     "interaction; all of it is put in `doc_adapter_sd`")
    da_var = max(0.0, ss["da"][0] / max(ss["da"][1], 1) - noise_var * float(np.mean(inv_tok)) / x.shape[1])
    doc_var = max(0.0, ss["doc"][0] / max(ss["doc"][1], 1))
    return {"noise_sd": float(np.sqrt(noise_var)), "doc_adapter_sd": float(np.sqrt(da_var)),
            "doc_sd": float(np.sqrt(doc_var))}


def _cell_components(logppl: np.ndarray, noise_cell_var: float, notes) -> dict:
    """logppl (S, A', J) of the trained rows -> seed_sd, instance_sd, cell_sd (ANOVA)."""
    S, A, J = logppl.shape
    if S < 2:
        notes.append("one seed: seed, instance and cell variances cannot be estimated; set to 0")
        return {"seed_sd": 0.0, "instance_sd": 0.0, "cell_sd": 0.0}
    z = logppl - np.nanmean(logppl, axis=0, keepdims=True)                 # (S, A', J)
    z = np.nan_to_num(z)
    zi = z.mean(axis=2)                                                     # (S, A')
    zs = zi.mean(axis=1)                                                    # (S,)
    ms_cell = np.sum((z - zi[:, :, None]) ** 2) / ((S - 1) * A * (J - 1))
    ms_inst = J * np.sum((zi - zs[:, None]) ** 2) / ((S - 1) * (A - 1))
    ms_seed = A * J * np.sum(zs ** 2) / (S - 1)
    cell_var = max(0.0, ms_cell - noise_cell_var)
    inst_var = max(0.0, (ms_inst - ms_cell) / J)
    seed_var = max(0.0, (ms_seed - ms_inst) / (A * J))
    for nm, v in (("cell", cell_var), ("instance", inst_var), ("seed", seed_var)):
        if v == 0.0:
            notes.append(f"{nm} variance estimated at the boundary (0)")
    return {"seed_sd": float(np.sqrt(seed_var)), "instance_sd": float(np.sqrt(inst_var)),
            "cell_sd": float(np.sqrt(cell_var))}
