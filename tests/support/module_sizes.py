"""No module over 450 lines, no folder of more than 16 modules: `python -m tests.support.module_sizes`
(run by `make lint`, so by CI) exits 1 naming every module and folder over its limit, 0 otherwise.

Counted over the project's packages (the tests are not): a module's lines as `wc -l` counts them; a
folder's modules are its `*.py` files other than `__init__.py` (sub-packages not counted). The limits
keep one idea per file and a folder a reader can take in at a glance (issue #24).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGES = ("common", "fixtures", "runners", "validation", "reports")
MAX_LINES = 450
MAX_MODULES = 16
ROOT = Path(__file__).resolve().parents[2]
# Modules allowed over MAX_LINES for now, each with the reason and what lifts it. Keep this short.
EXEMPT: dict[str, str] = {}  # path -> why it may be longer for now; an exemption is a debt


def line_count(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def oversized(root: Path, packages: Iterable[str] = PACKAGES, max_lines: int = MAX_LINES,
              max_modules: int = MAX_MODULES, exempt: dict[str, str] | None = None) -> list[str]:
    """One line per module over `max_lines` (unless in `exempt`, by path relative to `root`) and per
    folder over `max_modules`."""
    exempt = EXEMPT if exempt is None else exempt
    problems = []
    for package in packages:
        for folder in sorted(p for p in [root / package, *(root / package).rglob("*")] if p.is_dir()):
            if folder.name == "__pycache__":
                continue
            modules = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
            if len(modules) > max_modules:
                problems.append(f"{folder.relative_to(root)}/: {len(modules)} modules (at most {max_modules}): "
                                "split it into sub-packages by idea")
            for module in [*modules, *folder.glob("__init__.py")]:
                n = line_count(module)
                if n > max_lines and module.relative_to(root).as_posix() not in exempt:
                    problems.append(f"{module.relative_to(root)}: {n} lines (at most {max_lines}): "
                                    "split it along its ideas")
    return problems


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    packages = argv if argv else PACKAGES
    problems = oversized(root, packages)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"every module of {', '.join(packages)} at most {MAX_LINES} lines, every folder at most "
          f"{MAX_MODULES} modules" + "".join(f"; exempt for now: {m} ({why})" for m, why in EXEMPT.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
