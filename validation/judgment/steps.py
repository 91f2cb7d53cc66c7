"""The verdict of a study of several adapter training-step counts: the primary count gates, the
others are exploratory.

STRICT / LENIENT / CATASTROPHIC and the gate are judged at the pre-registered primary count
(`[steps] primary`, `Prereg.primary_steps`) only, so a sweep can never be used to pick the count
that passes; every other count is judged by the same `judge`, with the same bootstrap seed (the
same seed and document draws wherever the counts share a design), and reported under
verdict.json's `steps.exploratory` (docs/formats.md). `resample_counts` bootstraps every count once, with
one set of draws, for the verdict and the step analysis alike. Pure: no file I/O.
"""

from __future__ import annotations

import numpy as np

from validation.contract.prereg import Prereg
from validation.contract.prereg_check import Settings
from validation.contract.status import PreregStatus
from validation.inputs.arrays import build_arrays
from validation.inputs.sweep import StepsStudy
from validation.inputs.tables import InputError
from validation.judgment.results import ExploratoryCount, StepsResult
from validation.judgment.study import judge
from validation.stats.bootstrap import Resampled, bootstrap_mode, draw_weights


def primary_count(study: StepsStudy, prereg: Prereg) -> tuple[int | None, tuple[str, ...]]:
    """The step count the gate is judged at, and warnings; InputError when the study has several
    counts and the pre-registered primary is not among them (exit 2 naming the setting)."""
    if not study.counts:
        listed = _manifest_counts(study)
        if len(listed) > 1:   # a sweep's tables always carry `steps`: these are not the run's own
            raise InputError(f"{study.source}: no `steps` column, but the run's manifest says it trained the step "
                             f"counts {list(listed)}: the tables are not the ones the run wrote (each row of a "
                             "sweep names its count); restore the run's cells.parquet and docs.parquet.")
        return None, ()
    if len(study.counts) == 1:
        k = study.counts[0]
        if k == prereg.primary_steps:
            return k, ()
        return k, (f"the run trained {k} adapter steps, not the pre-registered primary count `[steps] primary = "
                   f"{prereg.primary_steps}`; judged at its only count, {k}",)
    if prereg.primary_steps not in study.counts:
        raise InputError(f"{prereg.path or 'prereg.toml'}: `[steps] primary = {prereg.primary_steps}`, but "
                         f"{study.source} holds the step counts {list(study.counts)}: the criteria and the gate "
                         "are judged at the pre-registered primary count only; judge a run that trained it "
                         "(`python -m runners.grid --steps ...` including it).")
    return prereg.primary_steps, ()


def unregistered_count(study: StepsStudy, prereg: Prereg) -> str | None:
    """Why a one-count run is not pre-registered, or None.

    A file that states `[steps] primary` fixes the count before the run; a run of one other count
    (`--steps 25` against `primary = 100`) is a count chosen afterwards, and separate runs at several
    counts could be picked from, so its verdict reads NOT PRE-REGISTERED (the gate fails unless
    `--accept-not-preregistered`). A file without `[steps]` fixes no count: a one-count run is judged
    at its own count, as before.
    """
    k = prereg.other_count(study.counts or _manifest_counts(study))   # no `steps`: the run's own record
    if k is None:
        return None
    return (f"the run trained {k} adapter steps but {prereg.path or 'prereg.toml'} pre-registers `[steps] primary = "
            f"{prereg.primary_steps}`: a count other than the pre-registered one is not pre-registered (run "
            f"`--steps {prereg.primary_steps}`, or a list that includes it)")


def _manifest_counts(study: StepsStudy) -> tuple[int, ...]:
    """The step counts the run's manifest says it trained (`config.train.steps_list`, else
    `.steps`), for cells without a `steps` column (runs made before it existed); () if unknown."""
    train = (study.manifest.config or {}).get("train") if study.manifest is not None else None
    if not isinstance(train, dict):
        return ()
    counts = train.get("steps_list") or ([train["steps"]] if "steps" in train else [])
    ok = isinstance(counts, list) and all(isinstance(k, int) and not isinstance(k, bool) for k in counts)
    return tuple(counts) if ok else ()


def resample_counts(study: StepsStudy, settings: Settings) -> dict[int, Resampled]:
    """Every step count's arrays and bootstrap under ONE set of draws: `settings.n_resamples` draws
    from a Generator seeded `settings.rng_seed`, made on the first count and applied to each (every
    count holds the same seeds, rows, users and documents: `load_steps` checks, and this raises
    InputError if not). They are the draws `judge` makes for any one count from that seed, so the
    verdict, the exploratory counts and the step analysis (`validation.exploratory.steps`) read the
    same, paired resamples, each count bootstrapped once. {} without a `steps` column."""
    if not study.counts:
        return {}
    arrays = {k: build_arrays(study.at(k)) for k in study.counts}
    first = arrays[study.counts[0]]
    for k, a in arrays.items():
        if (a.seeds, a.adapters, a.users) != (first.seeds, first.adapters, first.users) or \
                bootstrap_mode(a) is not bootstrap_mode(first) or (a.doc_nll is not None and [
                    x.shape[0] for x in a.doc_nll] != [x.shape[0] for x in first.doc_nll]):
            raise InputError(f"{study.source}: step count {k} holds other seeds, adapter rows, users or documents "
                             f"than step count {study.counts[0]}; every count must be evaluated on the same "
                             "design so that counts can be paired (resume the run).")
    weights = draw_weights(first, settings.n_resamples, np.random.default_rng(settings.rng_seed))
    return {k: Resampled.of(a, weights) for k, a in arrays.items()}


def judge_exploratory(study: StepsStudy, primary: int | None, settings: Settings, *,
                      prereg_status: PreregStatus | None = None,
                      resampled: dict[int, Resampled] | None = None) -> StepsResult:
    """`judge` at every count but the primary, each with a fresh Generator seeded `settings.rng_seed`,
    or on `resampled[k]` (`resample_counts`: the same draws, made once) where given."""
    prereg = settings.prereg
    resampled = {} if resampled is None else resampled
    out = []
    for k in study.counts:
        if k == primary:
            continue
        v = judge(study.at(k), prereg, rng=np.random.default_rng(settings.rng_seed),
                  n_resamples=settings.n_resamples_flag, prereg_status=prereg_status, resampled=resampled.get(k))
        out.append(ExploratoryCount(k, v))
    return StepsResult(primary, study.counts, prereg.primary_steps, tuple(out))
