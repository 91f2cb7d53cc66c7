"""What `validation.calibrate` simulates: the ladder of true margins, the least-favourable
boundary configurations, and which rung sits below, at and above each criterion's threshold."""

from __future__ import annotations

import numpy as np

from validation.contract.prereg import Prereg

CRITERIA = ("strict", "lenient", "catastrophic")
FAR_ABOVE = 0.20   # how far above the bar the "sure" users of a least-favourable scenario sit


def margin_ladder(prereg: Prereg) -> tuple[float, ...]:
    """True margins simulated: 0, delta, lenient bar, strict bar, one step above strict."""
    step = prereg.strict_margin - prereg.lenient_margin
    rungs = {0.0, prereg.delta, prereg.lenient_margin, prereg.strict_margin,
             prereg.strict_margin + (step if step > 0 else prereg.strict_margin / 2)}
    return tuple(sorted(round(r, 10) for r in rungs))


def least_favourable(prereg: Prereg, n_users: int) -> tuple[tuple[str, np.ndarray], ...]:
    """Per criterion, the boundary configuration most likely to PASS while the truth does not:
    STRICT: one user at the bar, the others far above it; LENIENT: `required - 1` users far
    above, the other users at the bar (so that any one of them, by chance, makes the count).
    """
    req = prereg.lenient_required(n_users)
    strict = np.full(n_users, prereg.strict_margin + FAR_ABOVE)
    strict[0] = prereg.strict_margin
    lenient = np.full(n_users, prereg.lenient_margin)
    lenient[:req - 1] = prereg.lenient_margin + FAR_ABOVE
    return (("strict", strict), ("lenient", lenient))


def thresholds(prereg: Prereg) -> dict[str, float]:
    return {"strict": prereg.strict_margin, "lenient": prereg.lenient_margin,
            "catastrophic": prereg.delta}


def scenarios(prereg: Prereg, n_users: int) -> list[np.ndarray]:
    """Every user at each ladder rung in turn, then the least-favourable configurations."""
    return ([np.full(n_users, m) for m in margin_ladder(prereg)]
            + [v for _, v in least_favourable(prereg, n_users)])


def relations(prereg: Prereg, ladder: tuple[float, ...]) -> list[tuple[str, str, int]]:
    """(criterion, relation, rung index) for below / at / above each threshold."""
    out = []
    for name, t in thresholds(prereg).items():
        at = int(np.argmin(np.abs(np.asarray(ladder) - t)))
        if at > 0:
            out.append((name, "below", at - 1))
        out.append((name, "at", at))
        if at + 1 < len(ladder):
            out.append((name, "above", at + 1))
    return out


# The noise regimes calibrated by default: overrides of `SimParams`' defaults (log-ppl scale).
# seed-dominated: the defaults (seed, seed:adapter and cell terms dominate the margins);
# document-dominated: no seed-level terms, the document x adapter interaction carries the
# uncertainty (the default `classics` run's situation: its seed and seed:adapter variances are
# estimated at 0); mixed: both, of comparable size at 5 seeds x 50 documents.
REGIMES: dict[str, dict[str, float]] = {
    "seed-dominated": {},
    "document-dominated": {"seed_sd": 0.0, "instance_sd": 0.0, "cell_sd": 0.0, "noise_sd": 0.002,
                           "doc_adapter_sd": 0.03},
    "mixed": {"instance_sd": 0.005, "cell_sd": 0.003, "noise_sd": 0.003, "doc_adapter_sd": 0.015},
}


def regime_params(regime: str, users: int | None = None, n_docs: int | None = None):
    """`SimParams` of a named regime (`REGIMES`) for a design of `users` x `n_docs`."""
    from dataclasses import replace

    from validation.simulation.simulate import SimParams
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose from {sorted(REGIMES)}.")
    return replace(SimParams(**REGIMES[regime]).with_design(users=users, n_docs=n_docs),
                   source=f"regime {regime}")
