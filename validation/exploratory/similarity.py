"""Domain-similarity structure (docs/methods.md, section 11): which users' adapters transfer to
each other, how stable that grouping is, and whether the adapters' parameters encode it.

Three quantities, all from objects the verdict already has:

* **Transfer distance** between users i and j, in log perplexity (nats/token), from the
  across-seed mean log-ppl matrix L (rows = adapters, columns = evaluation users):
  ``d(i,j) = ((L[i,j] - L[j,j]) + (L[j,i] - L[i,i])) / 2``, the symmetrized penalty of evaluating
  each user's text with the other user's adapter instead of its own. 0 = interchangeable adapters;
  it can be negative when an adapter does better on the other's text than that user's own.
* **Clustering**: average linkage (UPGMA, `scipy.cluster.hierarchy.linkage`) of the users on that
  distance. Every clade of the point tree (a group of 2 .. J-1 users merged before the rest; a
  "split" of the users into that group and the others) gets a **bootstrap support**: the fraction
  of the verdict's own hierarchical-bootstrap resamples (`validation.stats.bootstrap.resample_logppl`,
  the same seed and document draws as every interval of the verdict) whose tree has that clade.
  Supports are descriptive only (`support_note`): the raw bootstrap understates the seed variance.
* **Adapter distance** (with a run directory): the Euclidean distance between two users'
  adapters' deltas from the base LayerNorm gains and biases, per seed, averaged over the seeds
  that have both. The base's values cancel (||(a - base) - (b - base)|| = ||a - b||), so the
  base model is not needed. A **Mantel test** (one-sided: do users with distant adapters also
  transfer badly?) compares the two distance matrices: the Pearson correlation of their upper
  triangles against its distribution over relabelings of the users, exact (all J! permutations)
  for J <= 8, else `n_permutations` seeded random ones (p = (1 + #{r_perm >= r}) / (1 + n)).

Pure numpy/scipy; adapter files are read with `safetensors.numpy` (no torch).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from validation.inputs.tables import InputError
from validation.stats.mantel import MantelTest, mantel
from validation.stats.metrics import transfer_distance
from validation.stats.types import _num

if TYPE_CHECKING:
    from validation.inputs.study import StudyData
    from validation.judgment.results import Verdict



@dataclass(frozen=True)
class Split:
    """One clade of the point tree: `members` merge before any other user joins them."""

    members: tuple[str, ...]   # sorted user names, 2 .. J-1 of them
    support: float | None      # fraction of bootstrap resamples whose tree has this clade; None = no resampling
    height: float              # average-linkage height at which the clade forms (log ppl)

    def to_json(self) -> dict[str, Any]:
        return {"members": list(self.members), "support": _num(self.support), "height": _num(self.height)}


@dataclass(frozen=True, eq=False)
class Similarity:
    """The domain-similarity structure of one study; `verdict.json` key `similarity`."""

    users: tuple[str, ...]                 # the J users, in the matrix's (sorted) order
    transfer: np.ndarray                   # (J, J) transfer distance, log ppl; NaN where a cell is missing
    order: tuple[str, ...]                 # the users in the point tree's leaf order (for the heatmap)
    linkage: np.ndarray | None             # (J-1, 4) scipy linkage of the point tree; None if not clustered
    splits: tuple[Split, ...]              # every clade of the point tree, smallest height first
    n_resamples: int                       # bootstrap resamples the supports are fractions of
    adapter_distance: np.ndarray | None    # (J, J) mean over seeds; None without adapter files
    adapter_seeds: tuple[int, ...]         # seeds whose adapter files were read
    mantel: MantelTest | None
    notes: tuple[str, ...]                 # what cannot be concluded, and why
    # issue 23: supports are the raw bootstrap's (no small-sample correction): descriptive only
    supports_descriptive: bool = False

    def transfer_table(self) -> pl.DataFrame:
        """Tidy `row, col, distance, row_order, col_order`: every (user, user) cell, with the
        users' positions in the tree's leaf order (for an ordered heatmap)."""
        pos = {u: k for k, u in enumerate(self.order)}
        rows = [{"row": a, "col": b, "distance": _num(self.transfer[i, j]),
                 "row_order": pos[a], "col_order": pos[b]}
                for i, a in enumerate(self.users) for j, b in enumerate(self.users)]
        return pl.DataFrame(rows, schema={"row": pl.String, "col": pl.String, "distance": pl.Float64,
                                          "row_order": pl.Int64, "col_order": pl.Int64})

    def pairs_table(self) -> pl.DataFrame:
        """Tidy `pair, transfer_distance, adapter_distance`: one row per user pair (adapter
        distance null without adapter files)."""
        rows = [{"pair": f"{a} – {b}", "transfer_distance": _num(self.transfer[i, j]),
                 "adapter_distance": None if self.adapter_distance is None else _num(self.adapter_distance[i, j])}
                for (i, a), (j, b) in itertools.combinations(enumerate(self.users), 2)]
        return pl.DataFrame(rows, schema={"pair": pl.String, "transfer_distance": pl.Float64,
                                          "adapter_distance": pl.Float64})

    def to_json(self) -> dict[str, Any]:
        return {
            "distance": "symmetrized log-perplexity penalty of the other user's adapter (nats/token)",
            "users": list(self.users),
            "transfer_distance": _matrix_json(self.transfer),
            "clustering": {"method": "average", "order": list(self.order),
                           "linkage": None if self.linkage is None else
                           [[int(a), int(b), _num(h), int(n)] for a, b, h, n in self.linkage]},
            "splits": [s.to_json() for s in self.splits],
            "n_resamples": self.n_resamples,
            "adapter_distance": None if self.adapter_distance is None else _matrix_json(self.adapter_distance),
            "adapter_seeds": list(self.adapter_seeds),
            "mantel": None if self.mantel is None else self.mantel.to_json(),
            "notes": list(self.notes),
            "supports_descriptive": self.supports_descriptive,
        }


# --------------------------------------------------------------------------- distances

def average_linkage(distance: np.ndarray) -> np.ndarray:
    """(J, J) finite symmetric distance -> scipy linkage (J-1, 4), heights in the input's units.

    Average linkage's merge order is unchanged by adding a constant to every distance, so
    negative transfer distances are shifted to >= 0 for scipy and the heights shifted back."""
    y = squareform(np.asarray(distance, dtype=float), checks=False)
    shift = min(0.0, float(y.min())) if y.size else 0.0
    Z = linkage(y - shift, method="average")
    Z[:, 2] += shift
    return Z


def clades(Z: np.ndarray, n: int) -> dict[int, float]:
    """Non-trivial clades (2 .. n-1 leaves) of a linkage, as bitmasks of leaf indices -> height."""
    masks = [1 << k for k in range(n)]
    out: dict[int, float] = {}
    for a, b, h, size in Z:
        m = masks[int(a)] | masks[int(b)]
        masks.append(m)
        if int(size) < n:
            out[m] = float(h)
    return out


def _leaf_order(Z: np.ndarray, n: int) -> list[int]:
    from scipy.cluster.hierarchy import leaves_list
    if n < 2:
        return list(range(n))
    Zs = np.array(Z, dtype=float, copy=True)   # scipy rejects negative heights; the order does not
    Zs[:, 2] -= min(0.0, float(Zs[:, 2].min()))  # depend on a constant shift
    return [int(k) for k in leaves_list(Zs)]


def clade_support(draws: np.ndarray, targets: list[int]) -> tuple[np.ndarray, int]:
    """(B, A, J) bootstrap log-ppl draws -> (fraction of the B resamples whose average-linkage
    tree has each target clade, number of resamples that could be clustered). A resample with a
    missing (NaN) transfer distance counts as not having any clade."""
    B, _, J = draws.shape
    hits = np.zeros(len(targets))
    d = transfer_distance(draws)
    finite = np.isfinite(d).all(axis=(-1, -2))
    for b in np.flatnonzero(finite):
        have = clades(average_linkage(d[b]), J)
        hits += [t in have for t in targets]
    return (hits / B if B else np.full(len(targets), np.nan)), int(finite.sum())


def _mask_members(mask: int, users: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(u for k, u in enumerate(users) if mask >> k & 1))


# --------------------------------------------------------------------------- adapters

_SEED_DIR = re.compile(r"^seed-(-?\d+)$")


def adapter_distances(run_dir: str | Path, users: tuple[str, ...],
                      steps_dir: str = "") -> tuple[np.ndarray, tuple[int, ...]]:
    """Euclidean distances between the users' adapters, per seed, averaged over seeds.

    Reads `run_dir/adapters/seed-<s>/<user>.safetensors` (docs/formats.md); every tensor of an
    adapter, flattened in sorted name order, is its parameter vector. A file whose metadata
    says `status: diverged` is left out for that seed. Raises `InputError` naming the file when
    the folder, a file or a tensor is missing or shapes differ. `steps_dir`: `steps-<k>` in a run of
    several step counts (`adapters/seed-<s>/steps-<k>/<user>.safetensors`)."""
    from safetensors import safe_open
    root = Path(run_dir) / "adapters"
    if not root.is_dir():
        raise InputError(f"{root}: no adapters folder; the similarity's adapter distance needs the "
                         "run's adapters/seed-<s>/<user>.safetensors files.")
    seed_dirs = sorted(((int(m.group(1)), p) for p in root.iterdir()
                        if p.is_dir() and (m := _SEED_DIR.match(p.name))), key=lambda t: t[0])
    if not seed_dirs:
        raise InputError(f"{root}: no seed-<s> folders; expected adapters/seed-<s>/<user>.safetensors.")
    J = len(users)
    total, count = np.zeros((J, J)), np.zeros((J, J))
    names: list[str] | None = None
    seeds = []
    for seed, folder in seed_dirs:
        vecs: list[np.ndarray | None] = []
        for user in users:
            path = folder / steps_dir / f"{user}.safetensors"
            if not path.is_file():
                raise InputError(f"{path}: missing adapter file of user {user!r}, seed {seed}; every "
                                 "seed folder must hold one file per user (re-run or resume the grid).")
            try:
                with safe_open(str(path), "numpy") as f:
                    meta = json.loads((f.metadata() or {}).get("config", "{}"))
                    keys = sorted(f.keys())
                    if names is None:
                        names = keys
                    if keys != names:
                        raise InputError(f"{path}: tensors {keys} differ from the other adapters' {names}.")
                    vec = np.concatenate([np.asarray(f.get_tensor(k), dtype=float).ravel() for k in keys])
            except InputError:
                raise
            except Exception as e:
                raise InputError(f"{path}: cannot read the adapter ({type(e).__name__}: {e}).") from e
            if vecs and any(v is not None and v.shape != vec.shape for v in vecs):
                raise InputError(f"{path}: {vec.size} parameters, other adapters of seed {seed} differ.")
            vecs.append(None if meta.get("status") == "diverged" else vec)
        seeds.append(seed)
        for i, j in itertools.combinations(range(J), 2):
            if vecs[i] is not None and vecs[j] is not None:
                total[i, j] += float(np.linalg.norm(vecs[i] - vecs[j]))
                count[i, j] += 1
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)
    mean = np.triu(mean, 1)
    mean = mean + mean.T
    np.fill_diagonal(mean, 0.0)
    return mean, tuple(seeds)


# --------------------------------------------------------------------------- the structure

def design_notes(n_users: int) -> tuple[str, ...]:
    """What a design with `n_users` users cannot conclude, in words a reader can quote."""
    J = n_users
    if J < 3:
        return (f"with {J} users there is nothing to cluster (one possible tree) and no Mantel "
                "test (one pairwise distance): no similarity structure can be concluded",)
    n_clades = 2 ** J - J - 2
    out = []
    if J == 3:
        out.append("with 3 users there are only 3 possible splits (which pair merges first): a "
                   "split's support says which pair is closest in this matrix, not that the users "
                   "form groups; at least 4 users (informative from about 6) are needed for that")
        out.append("with 3 users there are only 3! = 6 relabelings, so the Mantel p-value cannot go "
                   "below 1/6 = 0.167: agreement between adapter distance and transfer distance "
                   "cannot be significant at any usual level")
    elif J < 6:
        out.append(f"with {J} users there are {n_clades} possible clades and the exact Mantel "
                   f"p-value cannot go below 1/{math.factorial(J)}; group structure is weakly "
                   "identified below about 6 users")
    return tuple(out)


def support_note(n_seeds: int | None) -> str:
    """Why split supports are descriptive: they are fractions of the raw bootstrap's trees, which
    hold (S - 1) / S of the seed variance and ignore that it is estimated from S seeds, as the
    percentile interval does (its margin coverage where seeds dominate: 0.75-0.76 at 3 seeds, 0.85-0.86 at 5, 0.88-0.91
    at 8, docs/calibration.md): overstated, most at 3-5 seeds."""
    few = f"with {n_seeds} seeds " if n_seeds else ""
    return (f"split supports are descriptive only: {few}they are the raw bootstrap's (no small-sample "
            "correction), which understates the seed-to-seed variation as the percentile interval does (its "
            "margin coverage where seeds dominate is 0.75-0.76 at 3 seeds, 0.85-0.86 at 5), so they overstate "
            "stability, most at 3-5 seeds; a support of 0.95 is not a 95% confidence in the split")


def similarity_structure(users: tuple[str, ...], point: np.ndarray, draws: np.ndarray | None, *,
                         adapter_distance: np.ndarray | None = None, adapter_seeds: tuple[int, ...] = (),
                         level: float = 0.95, rng: np.random.Generator | None = None,
                         notes: tuple[str, ...] = (), n_seeds: int | None = None) -> Similarity:
    """point (A, J) mean log ppl, draws (B, A, J) bootstrap replicates (or None) -> Similarity.

    `adapter_distance` (J, J), when given, is tested against the transfer distance (`mantel`;
    `rng` is needed for more than 8 users). `notes` are added to the design's own notes."""
    users = tuple(users)
    J = len(users)
    point = np.asarray(point, dtype=float)
    if point.ndim != 2 or point.shape[1] != J or point.shape[0] < J:
        raise ValueError(f"`point` must be (A, J) with J = {J} users; got {point.shape}.")
    D = transfer_distance(point)
    all_notes = list(design_notes(J)) + list(notes)
    Z, splits, order, n_res = None, (), users, 0
    if J < 3:
        pass
    elif not np.isfinite(D).all():
        missing = sorted({users[k] for k in np.argwhere(~np.isfinite(D)).ravel()})
        all_notes.append(f"transfer distances involving {missing} are missing (a cell is missing or "
                         "diverged in every seed): the users are not clustered")
    else:
        Z = average_linkage(D)
        order = tuple(users[k] for k in _leaf_order(Z, J))
        point_clades = sorted(clades(Z, J).items(), key=lambda t: (t[1], t[0]))
        targets = [m for m, _ in point_clades]
        if draws is None or len(draws) == 0:
            supports = [None] * len(targets)
            all_notes.append("no bootstrap resamples (one seed and no per-document data): split "
                             "supports are not computed")
        else:
            frac, n_ok = clade_support(np.asarray(draws, dtype=float), targets)
            supports = [float(f) for f in frac]
            n_res = int(len(draws))
            all_notes.append(support_note(n_seeds))
            if n_ok < n_res:
                all_notes.append(f"{n_res - n_ok} of {n_res} resamples have a missing transfer "
                                 "distance and count as supporting no split")
        splits = tuple(Split(_mask_members(m, users), s, h) for (m, h), s in zip(point_clades, supports, strict=True))
    test = None
    if adapter_distance is not None:
        adapter_distance = np.asarray(adapter_distance, dtype=float)
        if adapter_distance.shape != (J, J):
            raise ValueError(f"`adapter_distance` must be ({J}, {J}); got {adapter_distance.shape}.")
        if J < 3:
            pass
        elif not (np.isfinite(adapter_distance).all() and np.isfinite(D).all()):
            all_notes.append("some adapter or transfer distances are missing: no Mantel test")
        else:
            test = mantel(adapter_distance, D, rng=rng, level=level)
    return Similarity(users, D, order, Z, splits, n_res, adapter_distance, tuple(adapter_seeds),
                      test, tuple(all_notes), supports_descriptive=n_res > 0)


def similarity_for_verdict(verdict: Verdict, data: StudyData, run_dir: str | Path | None = None) -> Similarity:
    """The similarity structure of a judged study, from the verdict's own bootstrap draws.

    The draws are regenerated with `validation.stats.bootstrap.resample_logppl` from the verdict's
    recorded `rng_seed` and `n_resamples` (`judge` draws them first, so the same seed gives the
    same draws) and checked against the verdict's per-user margin draws; if they differ (the
    verdict was judged with a Generator of unknown seed), supports are not computed and a note
    says so. With `run_dir` holding `adapters/`, adapter distances and the Mantel test are added.
    """
    import warnings as _warnings

    from validation.inputs.arrays import build_arrays
    from validation.stats.bootstrap import bootstrap_mode, resample_logppl
    from validation.stats.metrics import diagonal_margin
    from validation.stats.types import BootstrapMode

    arrays = build_arrays(data)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)
        point = np.nanmean(arrays.logppl, axis=0)
    notes: list[str] = []
    draws = None
    info = verdict.bootstrap
    if bootstrap_mode(arrays) is not BootstrapMode.NONE and info.n_resamples > 0:
        if info.rng_seed is None:
            notes.append("the verdict's bootstrap seed is unknown: split supports are not computed")
        else:
            draws = resample_logppl(arrays, info.n_resamples, np.random.default_rng(info.rng_seed))
            with np.errstate(invalid="ignore"), _warnings.catch_warnings():
                _warnings.simplefilter("ignore", RuntimeWarning)
                margins = diagonal_margin(draws)
            same = all(np.array_equal(margins[:, j], u.draws_margin, equal_nan=True)
                       for j, u in enumerate(verdict.users))
            if not same:
                notes.append("the regenerated bootstrap draws differ from the verdict's: split "
                             "supports are not computed")
                draws = None
    adapter_d, seeds = None, ()
    if run_dir is not None and (Path(run_dir) / "adapters").is_dir():
        steps = verdict.steps  # a run of several step counts: the primary count's files
        sub = f"steps-{steps.primary}" if steps is not None and len(steps.counts) > 1 else ""
        adapter_d, seeds = adapter_distances(run_dir, arrays.users, sub)
    elif run_dir is not None:
        notes.append(f"{Path(run_dir) / 'adapters'} does not exist: no adapter distance or Mantel test")
    seed = info.rng_seed if info.rng_seed is not None else 0
    return similarity_structure(arrays.users, point, draws, adapter_distance=adapter_d,
                                adapter_seeds=seeds, level=info.level,
                                rng=np.random.default_rng([seed, 13]), notes=tuple(notes),
                                n_seeds=len(arrays.seeds))


def _matrix_json(m: np.ndarray) -> list[list[float | None]]:
    return [[_num(v) for v in row] for row in np.asarray(m, dtype=float)]
