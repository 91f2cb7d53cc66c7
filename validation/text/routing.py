"""The routing verdict in terminal lines (docs/verdict.md, docs/routing.md)."""

from __future__ import annotations

import math

from validation.judgment.routing_results import (
    RUN_WITH_ROUTING,
    Comparison,
    RoutingResult,
)
from validation.stats.types import signed_pct

TERMINAL_FIGURES = 9   # more figures than this in a terminal line: the lowest shown, every one in verdict.json


def _lowest_first(items: list, key) -> tuple[list, str]:
    """At most TERMINAL_FIGURES items, lowest `key` first, and the words for the rest."""
    if len(items) <= TERMINAL_FIGURES:
        return items, ""
    ranked = sorted(items, key=lambda c: (not math.isfinite(key(c)), key(c)))
    return ranked[:TERMINAL_FIGURES], f" ... and {len(items) - TERMINAL_FIGURES} more (verdict.json `routing`)"


def routing_lines(r: RoutingResult | None) -> list[str]:
    """The terminal's routing block: each criterion with its meaning, the figures (the lowest
    intervals first when there are many), the storage bill."""
    if r is None:
        return []
    level = f"{r.level:.0%}"
    if not r.present:
        return [f"routing (docs/routing.md): no routing rows; {RUN_WITH_ROUTING}", f"  storage: {r.storage.words}", ""]
    out = [f"routing (docs/routing.md; {level} {r.interval_method} intervals, paired with the margins):"]
    for c in r.criteria:
        text = c.result.explanation if c.result is not None else c.reason
        out.append(f"  {c.name.upper()} {c.status_text}: {text}")
        out.append(f"    meaning: {c.meaning}")
    if r.generic:
        shown, more = _lowest_first(list(r.generic), lambda c: c.ci.low)
        out.append("  own adapter vs the generic options: " + "; ".join(
            f"{c.user} vs {c.against} {_fig(c)}" for c in shown) + more)
    pairs, more = _lowest_first(list(r.pairs), lambda p: min(c.ci.low for c in p.own_vs_average))
    for p in pairs:
        own = ", ".join(f"on {c.user} {_fig(c)}" for c in p.own_vs_average)
        base = "" if p.average_vs_base is None else "; average vs base " + ", ".join(
            f"on {c.user} {_fig(c)}" for c in p.average_vs_base) + f" ({p.reading})"
        out.append(f"  {p.name}: own vs average {own}{base}; transfer distance {p.transfer_distance:.3f}")
    if more:
        out.append(f"  {more.strip(' .')}")
    if r.link is not None:
        out.append(f"  {r.link.words}")
    if r.sigmas:
        out.append("  noise curve, the margin at each sigma (0: unperturbed):")
        for s in (0.0,) + r.sigmas:
            shown, more = _lowest_first(list(r.curve_at(s)), lambda c: c.ci.low)
            out.append(f"    {s:g}: " + ", ".join(f"{c.user} {_fig(c)}" for c in shown) + more)
    out.append(f"  storage: {r.storage.words}")
    out += [f"  note: {n}" for n in r.notes]
    out.append("")
    return out


def _fig(c: Comparison) -> str:
    ci = "" if not c.ci.known else f" [{signed_pct(c.ci.low)}, {signed_pct(c.ci.high)}]"
    return f"{signed_pct(c.gain)}{ci}"

