"""The README is one screenful that points into docs/, and docs/ is self-sufficient: every relative
link resolves, every docs page is reachable from both indexes, the commands the README shows exist
as written, and nothing points outside the repository."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README = ROOT / "README.md"
README_MAX_CHARS = 12_000
# the commands whose flags the README may show: each module has `build_parser()`
PARSERS = ("runners.grid", "validation.verdict", "validation.calibrate")
OUTSIDE = re.compile(r"\.\./shared|\bDESIGN\.md\b|\bSTYLE\.md\b|\bSOURCES\.md\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings of a Markdown page: lower case, punctuation dropped,
    spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"^#+\s+(.*)$", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_github_anchors():
    assert github_anchors("## 4. The model and what trains\n# calibration.json\n") == {
        "4-the-model-and-what-trains", "calibrationjson"}


def _relative_links(page: Path) -> list[str]:
    return [m for m in LINK.findall(page.read_text(encoding="utf-8"))
            if not m.startswith(("http://", "https://", "mailto:"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path):
    broken = []
    for link in _relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in github_anchors(target.read_text(encoding="utf-8")):
            broken.append(f"{link} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in PAGES if p.parent.name == "docs" and p.name != "README.md"
               and f"({p.name})" not in index]
    assert not missing, f"docs/README.md does not link {missing}"


def test_the_readme_is_one_screenful_that_points_to_every_docs_page():
    text = README.read_text(encoding="utf-8")
    assert len(text) <= README_MAX_CHARS, (f"README.md has {len(text):,} characters (at most {README_MAX_CHARS:,}): "
                                           "move the detail into its page of docs/ and link it")
    linked = {link.partition("#")[0] for link in _relative_links(README)}
    missing = [p.name for p in PAGES if p.parent.name == "docs" and p.name != "README.md"
               and f"docs/{p.name}" not in linked]
    assert not missing, f"README.md's table of topics does not link {missing}"


def _shown_commands(markdown: str) -> list[str]:
    """Every `python -m MODULE ...` and `make TARGET` line inside the page's code blocks."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", markdown, flags=re.S | re.M)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()
            if re.match(r"\s*(python -m |make )", line)]


def test_the_commands_the_readme_shows_exist_with_their_flags():
    shown = _shown_commands(README.read_text(encoding="utf-8"))
    assert "python -m runners.grid --seeds 5 --fixtures 3" in shown and "python -m validation.verdict" in shown
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M))
    unknown = []
    for command in shown:
        words = command.split()
        if words[0] == "make":
            unknown += [f"`{command}`: no target {w!r} in the Makefile" for w in words[1:] if w not in targets]
            continue
        module = words[2]
        if module not in PARSERS:
            importlib.import_module(module)  # a module the README names must exist
            continue
        options = importlib.import_module(module).build_parser()._option_string_actions
        unknown += [f"`{command}`: {module} has no flag {w}" for w in words[3:]
                    if w.startswith("-") and w not in options]
    assert not unknown, "\n".join(unknown)


def test_the_shown_commands_are_found_and_checked():
    page = "```bash\nmake run    # x\npython -m runners.grid --seeds 5 --no-such-flag  # y\n```\nmake nothing\n"
    assert _shown_commands(page) == ["make run", "python -m runners.grid --seeds 5 --no-such-flag"]
    options = importlib.import_module("runners.grid").build_parser()._option_string_actions
    assert "--seeds" in options and "--no-such-flag" not in options


def test_no_reference_outside_the_repository():
    """The README, docstrings, errors and the report point into docs/, never to files a user
    who installs the suite does not have."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    here = Path(__file__).resolve()
    hits = []
    for rel in tracked:
        path = ROOT / rel
        suffixes = (".py", ".md", ".toml", ".j2", ".html", ".css", ".txt", "")
        if path == here or not path.is_file() or path.suffix not in suffixes:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert not hits, "references outside the repository (point to docs/ instead):\n" + "\n".join(hits)


def test_every_module_path_the_docs_name_resolves():
    """A `validation.x.y` / `runners.x` / ... reference in README.md or docs/ names a module or an
    attribute that exists (the sub-packaging of issue #24 moved 40 modules; a stale path misleads)."""
    import importlib
    import re

    pattern = re.compile(r"`((?:validation|runners|reports|fixtures|common)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")
    stale = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for ref in sorted(set(pattern.findall(page.read_text()))):
            parts = ref.split(".")
            for i in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                for name in parts[i:]:
                    obj = getattr(obj, name, None)
                break
            else:
                obj = None
            if obj is None:
                stale.append(f"{page.name}: {ref}")
    assert not stale, f"docs name modules or attributes that do not exist: {stale}"
