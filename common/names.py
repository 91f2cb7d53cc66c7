"""One rule for user and adapter names, applied where names enter (docs/gate.md, section 3).

A name is normalized to Unicode NFC (so the composed and decomposed spellings of `José` are one
user), then must be: non-empty; at most `MAX_NAME_LENGTH` characters; free of control, format,
separator-line and unassigned/private code points (no newline, tab, escape, NUL, bidi override,
zero-width character), of every default-ignorable code point (Unicode's Default_Ignorable_Code_Point:
U+034F, U+3164, variation selectors, tags, the soft hyphen, ...) and of every space but the ASCII
one (no no-break space); free of leading or trailing whitespace; free of the path separators `/`
and `\\`; and, for a user, not a control row's name (`base`, `pooled`), nor one that looks like it,
and free of the reserved character `:` and its look-alikes (control rows derived from a user are
named `<kind>:<user>`, e.g. `loo:alice`).

Two names *look alike* when they are equal after NFKC compatibility normalization, case folding
and Unicode TR39 confusable folding (`fold_keys`): `Base` and `base`, `bаse` with a Cyrillic `а`,
fullwidth `ｂａｓｅ`, `alice` and `ALICE`. No two users of a study may look alike (`lookalikes`).

The runner (user directories) and the verdict (external files) both call `check_name`, so the
grid never produces a run that the verdict refuses. Outputs still escape names for their format.
Standard library only.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from common.confusables import skeleton
from common.contract import CONTROLS

MAX_NAME_LENGTH = 64
# ':' separates a derived control's kind from its user (`loo:alice`) and '+' joins the two users of
# an average (`avg:alice+bob`): never part of a user name.
RESERVED_CHARACTERS = (":", "+")
FORBIDDEN_CHARACTERS = ("/", "\\")
# Unicode general categories refused anywhere in a name: Cc control (newline, tab, ESC, NUL),
# Cf format (zero-width joiners, bidi overrides), Cs surrogates, Co private use, Cn unassigned,
# Zl / Zp line and paragraph separators.
FORBIDDEN_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15.1): characters that
# render as nothing, several of them outside category Cf (U+034F COMBINING GRAPHEME JOINER, U+3164
# HANGUL FILLER, U+115F/U+1160, U+FFA0, the variation selectors), so `base` + U+034F prints "base".
DEFAULT_IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
                     (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
                     (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
                     (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
# Blank but not default-ignorable: BRAILLE PATTERN BLANK.
BLANK = ("\u2800",)


class InvalidName(ValueError):
    """A name breaks the rule; the message says which part and how to fix it."""


def normalize_name(raw: str) -> str:
    """The canonical (NFC) spelling of a name; no validation."""
    return unicodedata.normalize("NFC", raw)


def is_invisible(ch: str) -> bool:
    """A default-ignorable or blank character (see DEFAULT_IGNORABLE)."""
    cp = ord(ch)
    return ch in BLANK or any(lo <= cp <= hi for lo, hi in DEFAULT_IGNORABLE)


def fold_keys(name: str) -> tuple[str, str]:
    """What a name looks like: its TR39 skeleton after NFKC, and the same after case folding as well
    (folded again until stable, so a prototype's own case is folded too). Two names look alike when
    either key is equal: `Ian` and `lan` share the first (TR39 maps `I` to `l`), `ALICE` and `alice`
    the second."""
    plain = skeleton(unicodedata.normalize("NFKC", name))
    folded = name
    for _ in range(4):
        nxt = unicodedata.normalize("NFKC", skeleton(unicodedata.normalize("NFKC", folded).casefold())).casefold()
        if nxt == folded:
            break
        folded = nxt
    return plain, folded


def looks_alike(a: str, b: str) -> bool:
    """`a` and `b` are different names that print the same (see `fold_keys`)."""
    return a != b and any(x == y for x, y in zip(fold_keys(a), fold_keys(b), strict=True))


def lookalikes(names: Iterable[str]) -> tuple[str, str] | None:
    """The first pair of distinct names (in the given order) that look alike, or None."""
    seen: list[tuple[dict[str, str], int]] = [({}, 0), ({}, 1)]
    for name in dict.fromkeys(names):
        for index, i in seen:
            key = fold_keys(name)[i]
            if key in index:
                return index[key], name
        for index, i in seen:
            index[fold_keys(name)[i]] = name
    return None


def shown(name: str) -> str:
    """A name as it can be printed unambiguously: quoted, every non-ASCII character as its code point."""
    return ascii(name)


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
        if is_invisible(ch):
            label = unicodedata.name(ch, "")
            return (f"holds the invisible (default-ignorable) character U+{ord(ch):04X}"
                    f"{f' ({label})' if label else ''} at position {i + 1}")
        if unicodedata.category(ch) == "Zs" and ch != " ":
            return (f"holds the space character U+{ord(ch):04X} ({unicodedata.name(ch, 'SPACE')}) at position "
                    f"{i + 1}; the only space allowed is the ASCII one")
        if ch in FORBIDDEN_CHARACTERS:
            return f"holds the path separator {ch!r}"
    if name != name.strip():
        return "starts or ends with whitespace"
    if user:
        if name in CONTROLS:
            return f"is reserved for a control row ({', '.join(CONTROLS)})"
        for ch in RESERVED_CHARACTERS:
            if ch in name:
                return f"holds {ch!r}, which is reserved for control rows such as `loo:<user>` and `avg:<a>+<b>`"
        for control in CONTROLS:
            if looks_alike(name, control):
                return (f"looks like the control row `{control}` (the same after compatibility normalization, "
                        "case folding and Unicode confusable folding)")
        for ch in RESERVED_CHARACTERS:
            if any(ch in key for key in fold_keys(name)):
                return (f"holds a look-alike of {ch!r}, which is reserved for control rows such as "
                        "`loo:<user>` and `avg:<a>+<b>`")
    return None


def check_name(raw: str, what: str, *, user: bool = True) -> str:
    """The NFC form of `raw`, or InvalidName naming `what` (e.g. "folder `x/bob `") and the fix."""
    name = normalize_name(raw) if isinstance(raw, str) else raw
    problem = name_problem(name, user=user)
    if problem:
        raise InvalidName(f"{what}: the name {_shown(raw)} {problem}; rename it (names are 1 to "
                          f"{MAX_NAME_LENGTH} visible characters, no leading or trailing spaces, "
                          f"no control or invisible characters, no space but the ASCII one, no '/', '\\', "
                          f"':' or '+'; not {' or '.join(CONTROLS)} nor a look-alike of them)")
    return name


def _shown(raw: object) -> str:
    """A name as it can be printed safely: Python's escaped ascii() (every non-ASCII character as its code point)."""
    text = ascii(raw)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["MAX_NAME_LENGTH", "RESERVED_CHARACTERS", "InvalidName", "check_name", "fold_keys", "is_invisible",
           "looks_alike", "lookalikes", "name_problem", "normalize_name", "shown"]
