"""Renderings of a Verdict as text: the stdout table, junit.xml, the Markdown step summary, JSON.

Pure functions returning strings; the CLI writes them (atomically).
"""

from __future__ import annotations

import math
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from validation.judgment.decomposition import share_fig
from validation.judgment.population import DESCRIPTIONS, NO_USER_MEASURED, descriptive_note, population_sentence
from validation.judgment.results import Verdict
from validation.stats.types import signed_pct, threshold_pct
from validation.text.model_reading import diagnostic_readings, effect_line, is_raw_model_warning
from validation.text.routing import routing_lines
from validation.text.summary_sentence import POPULATION_USERS, summary_sentence

# -- escaping: every name or free text is escaped for the format it lands in (docs/gate.md) ---------

def _visible(ch: str) -> str:
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"


def term(text: object) -> str:
    """One line for a terminal: control, format and separator characters (ESC, CR, newline, bidi
    overrides, ...) shown as \\uXXXX escapes, so no input can move the cursor or fake a line."""
    return "".join(_visible(ch) if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") else ch
                   for ch in str(text))


# characters XML 1.0 cannot hold at all (even escaped): C0 controls but tab/LF/CR, surrogates, FFFE/FFFF
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: object) -> str:
    """Text that ElementTree can write as well-formed XML (it escapes <, >, &, quotes itself)."""
    return _XML_INVALID.sub(lambda m: _visible(m.group()), str(text))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # emphasis, code, links, table cells, strike


def md(text: object) -> str:
    """Text for one Markdown table cell or list item of $GITHUB_STEP_SUMMARY: HTML escaped (GitHub
    renders inline HTML), Markdown punctuation backslash-escaped, `|` cannot split a cell and a
    newline cannot start a new line."""
    t = term(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", t)


_pct = signed_pct


def _ci(iv) -> str:
    return "n/a" if iv is None else f"[{_pct(iv.low)}, {_pct(iv.high)}]"


def _share(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.0%}"


def _banner(v: Verdict) -> str:
    if v.prereg.locked:
        return f"pre-registered (prereg sha256 {v.prereg.sha256[:12]}, matches the run manifest)"
    accepted = "; accepted with --accept-not-preregistered" if v.prereg.accepted else ""
    return f"*** NOT PRE-REGISTERED *** ({v.prereg.note}{accepted})"


def _bar(c) -> str:
    """A criterion's threshold in the margins' unit: 'bar 10%', or '+-2%' for the equivalence band."""
    pct = threshold_pct(c.threshold)
    return f"within +-{pct}" if c.name == "catastrophic" else f"bar {pct}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return [fmt(header)] + [fmt(r) for r in rows]


def verdict_text(v: Verdict, source: str = "", exploratory: Sequence[str] = ()) -> str:
    """The readable verdict table printed on stdout; `exploratory`: the lines of the analyses above
    judgment (`validation.study_verdict.StudyVerdict.text`), before the gate's lines."""
    level = f"{v.bootstrap.level:.0%}"
    lines = [f"VERDICT: gate {'PASSED' if v.gate.passed else 'FAILED'} (exit {v.exit_code})   {term(_banner(v))}",
             term(summary_sentence(v)), ""]
    if source:
        lines.append(f"input: {term(source)}")
    b = v.bootstrap
    lines.append(f"seeds: {b.n_seeds}   bootstrap: {b.mode.value}, {b.n_resamples} resamples, "
                 f"{level} {b.method} intervals, rng seed {b.rng_seed}   comparator: {v.comparator}")
    if b.regime is not None:
        lines.append(f"regime: {b.regime.label} (estimated seed share of the margins' variance "
                     f"{_share(b.regime.seed_share)}, the rest from the held-out documents)")
    lines.append("")
    rows = [[term(u.user), _pct(u.margin), _ci(u.ci), term(u.best_other), _pct(u.worst_other_margin),
             _pct(u.personalization_gain), _pct(u.regularization_gain), _pct(u.total_gain),
             inverted_cell(u)] for u in v.users]
    rows, folded = fold_rows(rows, v)
    lines += _table(["user", "margin", f"{level} CI", "best other", "worst-other*",
                     "personalization", "regularization", "total", ""], rows)
    if folded:
        lines.append(folded)
    lines.append("margin = 1 - ppl(own) / ppl(best other user adapter); "
                 "* worst-other margin is anti-conservative, for comparison only; "
                 "personalization = pooled -> own, regularization = base -> pooled")
    lines.append("")
    lines += decomposition_lines(v)
    lines += population_lines(v)
    lines += [term(line) for line in routing_lines(v.routing)]
    rows = [[c.name.upper(), c.status.value, c.point.value, _bar(c), term(c.explanation)]
            for c in v.criteria]
    rows += [[c.name.upper(), c.status_text, c.result.point.value if c.result else "-",
              _bar(c.result) if c.result else "-", term(c.result.explanation if c.result else c.reason)]
             for c in _extra_criteria(v)]
    lines += _table(["criterion", "status (CI)", "point reading", "threshold", "why"], rows)
    lines.append("")
    if v.model is not None:
        lines.append(effect_line(v.model, v.bootstrap.level))
        lines += [f"  - {r}" for r in diagnostic_readings(v.model)]
        lines.append("  (the fit's optimizer and diagnostics: verdict.json, `model`; and the report)")
    lines += list(exploratory)
    lines.append(f"gate: {'PASSED' if v.gate.passed else 'FAILED'}")
    lines += [f"  - {term(r)}" for r in v.gate.reasons]
    shown = [w for w in v.warnings if not is_raw_model_warning(w) and not w.startswith("raw: ")]
    n_raw = sum(w.startswith("raw: ") for w in v.warnings)
    if n_raw:
        shown.append(f"{n_raw} numerical library warning{'s' if n_raw > 1 else ''} while judging "
                     "(verdict.json, `warnings`, entries starting `raw:`)")
    if shown:
        lines.append("warnings:")
        lines += [f"  - {term(w)}" for w in shown]
    return "\n".join(lines) + "\n"


def _extra_criteria(v: Verdict) -> tuple:
    """The off-by-default criteria: the population's, then the routing ones (docs/routing.md)."""
    routing = v.routing
    return ((v.population.criteria if v.population is not None else ())
            + (routing.criteria if routing is not None else ()))


def inverted_cell(u) -> str:
    """The terminal's inverted column: INVERTED (interval below 0), or, without an interval, unknown
    with the point reading beside it (a negative point margin is not hidden, nor read as sure)."""
    if u.inverted:
        return "INVERTED"
    if u.inverted is None:
        return "unknown (no CI; point < 0)" if u.inverted_point else "unknown (no CI)"
    return ""


TERMINAL_USERS = 20   # more users than this: the table shows the lowest and highest margins only


def fold_rows(rows: list[list[str]], v: Verdict, keep: int = TERMINAL_USERS,
              keys: list[float] | None = None, by: str = "margin") -> tuple[list[list[str]], str]:
    """Per-user rows; above `keep` users, sorted by `keys` (default: the margins) and folded to the
    `keep // 2` lowest and highest, with a line saying where the rest are."""
    if len(rows) <= keep:
        return rows, ""
    keys = [u.margin for u in v.users] if keys is None else keys
    order = sorted(range(len(rows)), key=lambda k: (not math.isfinite(keys[k]), keys[k]))
    half = keep // 2
    shown = [rows[k] for k in order[:half]] + [["..."] + [""] * (len(rows[0]) - 1)] + [rows[k] for k in order[-half:]]
    return shown, (f"{len(rows)} users, sorted by {by}: the {half} lowest and {half} highest shown; "
                   "every user in verdict.json and report.html")


def population_lines(v: Verdict) -> list[str]:
    """The population figures: shares clearing the bars, the population-average effects."""
    p = v.population
    if p is None:
        return []
    level = f"{p.level:.0%}"
    out = [f"population ({p.n_users} users as a sample of a population; {level} intervals):"]
    for s in p.shares:
        what = "own vs loo:<user>" if s.against == "loo" else "margin"
        if not s.n_users:
            out.append(f"  share with {what} >= {threshold_pct(s.bar)}: {NO_USER_MEASURED}")
            continue
        out.append(f"  share with {what} >= {threshold_pct(s.bar)}: {s.share:.0%} ({s.n_point} of {s.n_users}), "
                   f"interval [{s.ci.low:.0%}, {s.ci.high:.0%}]")
    def gain(x: float) -> str:  # log-ratio of perplexity -> perplexity reduction
        return _pct(-math.expm1(x))

    for e in p.effects:
        out.append(f"  {e.key}: {DESCRIPTIONS[e.key]}: average {gain(e.effect)} [{gain(e.ci.high)}, "
                   f"{gain(e.ci.low)}]; a new user {gain(e.prediction.high)} to {gain(e.prediction.low)} "
                   f"(user sd {e.user_sd:.3f} log-ratio{', singular' if e.singular else ''})")
    if (few := descriptive_note(p)) is not None:
        out.append(f"  note: {few}")
    out += [f"  note: {term(n)}" for n in p.notes]
    out.append("")
    return out


# (step key, column header) of the decomposition table: the chain, then the summaries
DECOMPOSITION_COLUMNS = (("new_user", "base -> loo"), ("seen_user", "loo -> pooled"),
                         ("pooled_to_own", "pooled -> own"), ("loo_to_own", "loo -> own"))


def decomposition_lines(v: Verdict) -> list[str]:
    """The base -> loo:<user> -> pooled -> own table with intervals, and each user in words."""
    if not v.decomposition:
        return []
    level = f"{v.bootstrap.level:.0%}"
    rows = []
    for d in v.decomposition:
        cells = [f"{_pct(st.gain)} {_ci(st.ci)}" if (st := d.step(k)) is not None else "n/a"
                 for k, _ in DECOMPOSITION_COLUMNS]
        rows.append([term(d.user), *cells, share_fig(d.seen_share, d.seen_share_ci, d.seen_share_note)])
    out = [f"decomposition of each user's gain, {level} intervals (loo = loo:<user>, trained on every other "
           "user's text: what a new user gets)"]
    keys = [st.gain if (st := d.step("loo_to_own")) is not None else math.nan for d in v.decomposition]
    rows, folded = fold_rows(rows, v, keys=keys, by="loo -> own")
    out += _table(["user", *(h for _, h in DECOMPOSITION_COLUMNS), "pooled's gain from seeing the user"], rows)
    if folded:
        out.append(folded + " (each user in words there too)")
    else:
        out += [f"  {term(d.words)}" for d in v.decomposition]
    out.append("")
    return out


def junit_xml(v: Verdict) -> str:
    """One testsuite; a testcase per criterion (fails when the gate rejects its status), per
    user (fails when inverted) and one for the gate itself."""
    suite = ET.Element("testsuite", name="validation.verdict")
    props = ET.SubElement(suite, "properties")
    for k, val in (("preregistration", v.prereg.label), ("prereg_sha256", v.prereg.sha256),
                   ("prereg_overrides", "; ".join(v.prereg.overrides)),
                   ("accepted_not_preregistered", str(v.prereg.accepted).lower()),
                   ("bootstrap_mode", v.bootstrap.mode.value), ("comparator", v.comparator)):
        ET.SubElement(props, "property", name=k, value=xml_text(val))
    failures = 0

    def case(classname: str, name: str, failed: str | None, out: str) -> None:
        nonlocal failures
        tc = ET.SubElement(suite, "testcase", classname=classname, name=xml_text(name), time="0")
        if failed:
            failures += 1
            ET.SubElement(tc, "failure", message=xml_text(failed)).text = xml_text(out)
        ET.SubElement(tc, "system-out").text = xml_text(out)

    for c in v.criteria:
        ok = v.settings.gate_allows(c.name, c.status)
        out = f"{c.status.value} (point reading {c.point.value}); {c.explanation}"
        case("verdict.criteria", c.name, None if ok else f"{c.name.upper()} is {c.status.value}", out)
    routing_names = {c.name for c in (v.routing.criteria if v.routing is not None else ())}
    for pc in _extra_criteria(v):
        gated = v.settings.gates_population(pc.name)
        if pc.result is None and not gated:
            continue   # not applicable and not gating: no test case
        ok = pc.result is not None and v.settings.gate_allows(pc.name, pc.result.status) or not gated
        case("verdict.routing" if pc.name in routing_names else "verdict.population", pc.name,
             None if ok else f"{pc.name.upper()} is {pc.status_text}",
             f"{pc.status_text}; {pc.result.explanation if pc.result else pc.reason}")
    for u in v.users:
        out = (f"margin {_pct(u.margin)} CI {_ci(u.ci)} vs best other {u.best_other}; "
               f"personalization {_pct(u.personalization_gain)}, regularization {_pct(u.regularization_gain)}")
        case("verdict.users", u.user, f"{u.user} is inverted" if u.inverted else None, out)
    case("verdict", "preregistration",
         None if v.prereg.locked or v.prereg.accepted else "NOT PRE-REGISTERED",
         f"{v.prereg.label}: {v.prereg.note}"
         + ("; accepted with --accept-not-preregistered" if v.prereg.accepted else ""))
    case("verdict", "gate", None if v.gate.passed else "gate failed",
         "\n".join(v.gate.reasons) or "passed")
    suite.set("tests", str(len(suite.findall("testcase"))))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def markdown_summary(v: Verdict) -> str:
    """For $GITHUB_STEP_SUMMARY."""
    level = f"{v.bootstrap.level:.0%}"
    out = [f"## Verdict: gate {'PASSED ✅' if v.gate.passed else 'FAILED ❌'}", "", md(summary_sentence(v)), ""]
    if not v.prereg.locked:
        accepted = " (accepted with `--accept-not-preregistered`)" if v.prereg.accepted else ""
        out += [f"> **NOT PRE-REGISTERED**: {md(v.prereg.note)}{accepted}", ""]
    out += ["| criterion | status | point reading | threshold |", "|---|---|---|---|"]
    out += [f"| {c.name.upper()} | **{c.status.value}** | {c.point.value} | {c.threshold:g} |"
            for c in v.criteria]
    out += [f"| {c.name.upper()} | **{c.status_text}** | {c.result.point.value if c.result else '-'} | "
            f"{f'{c.result.threshold:g}' if c.result else '-'} |"
            for c in _extra_criteria(v)]
    many = len(v.users) > TERMINAL_USERS
    if many:   # GitHub renders <details>: the per-user tables fold
        out += ["", f"<details><summary>{len(v.users)} users: per-user table</summary>"]
    out += ["", f"| user | margin | {level} CI | best other | personalization | regularization | inverted |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| {md(u.user)} | {_pct(u.margin)} | {_ci(u.ci)} | {md(u.best_other)} | "
            f"{_pct(u.personalization_gain)} | {_pct(u.regularization_gain)} | "
            f"{'**yes**' if u.inverted else 'unknown' if u.inverted is None else 'no'} |"
            for u in v.users]
    if v.decomposition:
        out += ["", f"Decomposition ({level} intervals; `loo:<user>` never saw the user's text):", "",
                "| user | " + " | ".join(h.replace("->", "→") for _, h in DECOMPOSITION_COLUMNS)
                + " | pooled's gain from seeing the user |", "|---" * (len(DECOMPOSITION_COLUMNS) + 2) + "|"]
        for d in v.decomposition:
            cells = [f"{_pct(st.gain)} {_ci(st.ci)}" if (st := d.step(k)) is not None else "n/a"
                     for k, _ in DECOMPOSITION_COLUMNS]
            out.append(f"| {md(d.user)} | " + " | ".join(cells)
                       + f" | {share_fig(d.seen_share, d.seen_share_ci, d.seen_share_note)} |")
    if many:
        out += ["", "</details>"]
    if v.population is not None and len(v.users) >= POPULATION_USERS:
        out += ["", "Population: " + md(population_sentence(v.population))]
    if v.gate.reasons:
        out += ["", "Gate failed because:"] + [f"- {md(r)}" for r in v.gate.reasons]
    if v.warnings:
        out += ["", "Warnings:"] + [f"- {md(w)}" for w in v.warnings]
    return "\n".join(out) + "\n\n"


__all__ = ["junit_xml", "markdown_summary", "md", "term", "verdict_text", "xml_text"]
