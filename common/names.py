"""One rule for user and adapter names, applied where names enter (docs/gate.md, section 3).

A name is normalized to Unicode NFC (so the composed and decomposed spellings of `José` are one
user), then must be: non-empty; at most `MAX_NAME_LENGTH` characters; free of control, format,
separator-line and unassigned/private code points (no newline, tab, escape, NUL, bidi override,
zero-width character); free of leading or trailing whitespace; free of the path separators `/`
and `\\`; and, for a user, not a control row's name (`base`, `pooled`) and free of the reserved
character `:` (control rows derived from a user are named `<kind>:<user>`, e.g. `loo:alice`).

The runner (user directories) and the verdict (external files) both call `check_name`, so the
grid never produces a run that the verdict refuses. Outputs still escape names for their format.
Standard library only.
"""

from __future__ import annotations

import unicodedata

from common.contract import CONTROLS

MAX_NAME_LENGTH = 64
# ':' separates a derived control's kind from its user (`loo:alice`): never part of a user name.
RESERVED_CHARACTERS = (":",)
FORBIDDEN_CHARACTERS = ("/", "\\")
# Unicode general categories refused anywhere in a name: Cc control (newline, tab, ESC, NUL),
# Cf format (zero-width joiners, bidi overrides), Cs surrogates, Co private use, Cn unassigned,
# Zl / Zp line and paragraph separators.
FORBIDDEN_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


class InvalidName(ValueError):
    """A name breaks the rule; the message says which part and how to fix it."""


def normalize_name(raw: str) -> str:
    """The canonical (NFC) spelling of a name; no validation."""
    return unicodedata.normalize("NFC", raw)


def name_problem(name: str, *, user: bool = True) -> str | None:
    """What is wrong with the (already normalized) `name`, or None. `user=False` checks an adapter
    name that may be a control (reserved names and ':' allowed)."""
    if not isinstance(name, str):
        return f"is not text ({type(name).__name__})"
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long, more than the {MAX_NAME_LENGTH} allowed"
    for i, ch in enumerate(name):
        if unicodedata.category(ch) in FORBIDDEN_CATEGORIES:
            label = unicodedata.name(ch, "")
            return (f"holds the invisible or control character U+{ord(ch):04X}"
                    f"{f' ({label})' if label else ''} at position {i + 1}")
        if ch in FORBIDDEN_CHARACTERS:
            return f"holds the path separator {ch!r}"
    if name != name.strip():
        return "starts or ends with whitespace"
    if user:
        if name in CONTROLS:
            return f"is reserved for a control row ({', '.join(CONTROLS)})"
        for ch in RESERVED_CHARACTERS:
            if ch in name:
                return f"holds {ch!r}, which is reserved for control rows such as `loo{ch}<user>`"
    return None


def check_name(raw: str, what: str, *, user: bool = True) -> str:
    """The NFC form of `raw`, or InvalidName naming `what` (e.g. "folder `x/bob `") and the fix."""
    name = normalize_name(raw) if isinstance(raw, str) else raw
    problem = name_problem(name, user=user)
    if problem:
        raise InvalidName(f"{what}: the name {_shown(raw)} {problem}; rename it (names are 1 to "
                          f"{MAX_NAME_LENGTH} visible characters, no leading or trailing spaces, "
                          f"no control characters, no '/', '\\' or ':'; not {' or '.join(CONTROLS)})")
    return name


def _shown(raw: object) -> str:
    """A name as it can be printed safely: Python's escaped repr (control characters as \\x..)."""
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["MAX_NAME_LENGTH", "RESERVED_CHARACTERS", "InvalidName", "check_name", "name_problem",
           "normalize_name"]
