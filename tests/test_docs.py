"""docs/ is self-sufficient: every relative link resolves, and nothing points outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
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
