"""Are two verdict.json files the same verdict? `python benchmarks/compare_verdicts.py A.json B.json`

Compares every figure, status, word and list of the two documents, key by key, and prints each
difference with its path (e.g. `users[2].ci[0]: 0.0412 != 0.0413`). Left out of the comparison:
timing and where files were (`--ignore`, default: `calibration.wall_s`, `preregistration.path`,
`settings.path`), and keys present in only one document when they are listed in `--added` (fields
a change adds on purpose). Numbers are equal only when they are exactly equal (`--rel-tol` to allow
more), so "no behaviour change" means the same bits, not "close".

Exit codes: 0 the same, 1 differences (listed), 2 a file that cannot be read as JSON.
Used for issue #24 (the sub-package move): the default study judged by the code before and after.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

IGNORED = ("calibration.wall_s", "preregistration.path", "settings.path")


def differences(a: Any, b: Any, *, ignore: tuple[str, ...] = IGNORED, added: tuple[str, ...] = (),
                rel_tol: float = 0.0, path: str = "") -> list[str]:
    """Every difference between two JSON values, as `path: a != b` lines (paths in `ignore` and, when
    in one document only, in `added` are skipped; both take fnmatch patterns, `[]` matching any index)."""
    generic = re.sub(r"\[\d+\]", "[]", path)
    if any(fnmatch.fnmatch(p, pat) for p in (path, generic) for pat in ignore):
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else key
            if key not in a or key not in b:
                if not any(fnmatch.fnmatch(sub, pat) for pat in added):
                    out.append(f"{sub}: only in {'the second' if key not in a else 'the first'} document")
                continue
            out += differences(a[key], b[key], ignore=ignore, added=added, rel_tol=rel_tol, path=sub)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)} items"]
        out = []
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            out += differences(x, y, ignore=ignore, added=added, rel_tol=rel_tol, path=f"{path}[{k}]")
        return out
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        same = a == b or (rel_tol > 0 and math.isclose(a, b, rel_tol=rel_tol))
    else:
        same = type(a) is type(b) and a == b
    return [] if same else [f"{path}: {a!r} != {b!r}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--ignore", nargs="*", default=list(IGNORED), help="paths left out (fnmatch patterns)")
    ap.add_argument("--added", nargs="*", default=[], help="paths a change adds: skipped when in one document only")
    ap.add_argument("--rel-tol", type=float, default=0.0, help="relative tolerance for numbers (default: exact)")
    args = ap.parse_args(argv)
    docs = []
    for p in (args.first, args.second):
        try:
            docs.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            print(f"error: {p}: not a readable JSON file ({e}); pass two verdict.json files", file=sys.stderr)
            return 2
    diff = differences(*docs, ignore=tuple(args.ignore), added=tuple(args.added), rel_tol=args.rel_tol)
    for line in diff:
        print(line)
    print(f"{len(diff)} difference(s) between {args.first} and {args.second}" if diff else
          f"the same verdict: {args.first} and {args.second} (ignored: {', '.join(args.ignore) or 'nothing'})")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
