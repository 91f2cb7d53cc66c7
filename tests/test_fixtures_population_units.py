"""The population set without the network: code blocks, book cleaning, the users' table, and the
fetch verification of its JSON sources (a corrupted cached file is re-fetched or refused)."""

import dataclasses
import io
import json
import re
import zipfile

import pytest

from fixtures import FixtureError, load_fixture_set
from fixtures.fetch import cached_path, ensure_source, files_digest, is_cached
from fixtures.population import (
    CODE,
    HELDOUT_DOCS,
    PROSE,
    SOURCES,
    USERS,
    book_documents,
    code_blocks,
    code_units,
)
from fixtures.population_sources import POPULATION_SOURCES, WHEELS, Wheel, files_payload, wheel_spec
from fixtures.sets import available_sets

PY = '''import os


def a():
    return 1

    # a comment block inside a function, indented 4: a unit of its own
    x = [
        1,

    ]


class B:
    """doc"""

    def m(self):
        if True:

            return 2
'''


def test_code_units_are_exact_slices_cut_only_at_shallow_lines_after_a_blank():
    units = code_units(PY)
    assert "".join(units) == PY
    starts = [u.splitlines()[0] for u in units]
    # cut before `def a`, the 4-indented comment, `class B`, `def m`; never before `]` (a closer)
    # nor before the 12-indented `return 2`
    assert starts == ["import os", "def a():", "    # a comment block inside a function, indented 4: a unit of its own",
                      "class B:", "    def m(self):"]


def test_go_code_cuts_at_top_level_only():
    go = "package x\n\nfunc a() {\n\tb()\n\n\tc()\n}\n\n// Doc.\nfunc d() {}\n"
    assert [u.splitlines()[0] for u in code_units(go)] == ["package x", "func a() {", "// Doc."]


def test_code_blocks_join_units_within_the_band_and_keep_the_text():
    text = "".join(f"def f{i}():\n" + "    x = 1\n" * (i % 7 + 3) + "\n\n" for i in range(200))
    blocks = code_blocks(text, 1000, 2000)
    assert "".join(blocks) == text
    sizes = [len(b.encode()) for b in blocks]
    assert all(s <= 2000 for s in sizes) and all(s >= 1000 for s in sizes[:-1])


def test_book_documents_strip_before_the_start_line():
    text = "An editor's preface.\n\n" * 50 + "Book I\n\n" + ("Of Man's first disobedience, and the fruit.\n\n" * 80)
    docs = book_documents(text, "milton", start=r"^Book I\s*$")
    assert docs[0].text.startswith("Book I") and all("preface" not in d.text for d in docs)
    assert all(d.n_bytes <= PROSE.block_bytes[1] for d in docs)
    with pytest.raises(FixtureError, match=r"`milton`: no line matching"):
        book_documents("no books here\n", "milton", start=r"^Book I\s*$")


def test_the_users_table():
    names = [u.name for u in USERS]
    assert len(names) >= 12 and len(set(names)) == len(names)
    assert len({(u.source, u.what) for u in USERS}) == len(USERS)  # every user a distinct text
    kinds = [u.kind for u in USERS]
    assert set(kinds) == {"code", "prose"} and kinds[:4].count("code") == 2  # `--fixtures N` mixes both
    assert kinds[:12].count("code") == kinds[:12].count("prose") == 6
    assert all(u.source in SOURCES for u in USERS)
    assert HELDOUT_DOCS >= 20 and CODE.heldout_docs == PROSE.heldout_docs == HELDOUT_DOCS
    assert "population" in available_sets()


def test_every_population_source_is_pinned_licensed_and_has_a_route():
    assert len({s.filename for s in SOURCES.values()}) == len(SOURCES)  # one cache file each
    for spec in POPULATION_SOURCES.values():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256) and spec.routes
        assert any(word in spec.licence for word in ("public domain", "MIT", "BSD", "Apache-2.0")), spec.licence
    for w in WHEELS:
        assert re.fullmatch(r"[a-z0-9-]+==[0-9.]+", w.requirement) and re.fullmatch(r"[0-9a-f]{64}", w.wheel_sha256)


# ---- fetch verification of a JSON source (the shape of every population source) ----------------------

FILES = {"pkg/__init__.py": "X = 1\n", "pkg/mod.py": "def f():\n    return 2\n"}
WHEEL = Wheel("pkg", "pkg==1.0", "0" * 64, files_digest(FILES), ("pkg/",), "a fake package", "MIT")


def _wheel(path, files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in {**files, "pkg-1.0.dist-info/METADATA": "Name: pkg\n", "other/x.py": "y = 1\n"}.items():
            zf.writestr(name, text)
    path.write_bytes(buf.getvalue())
    return path


def _with_route(payload):
    calls = []

    def route(work):
        calls.append(work)
        if payload is None:
            raise RuntimeError("registry unreachable")
        return payload
    return dataclasses.replace(wheel_spec(WHEEL), routes=(("fake registry", route),)), calls


def test_a_local_wheel_is_reduced_to_the_package_verified_and_cached(tmp_path):
    spec, calls = _with_route(None)
    payload = ensure_source(spec, tmp_path / "cache", _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", FILES))
    assert json.loads(payload) == FILES and not calls  # METADATA and other/ dropped
    assert is_cached(spec, tmp_path / "cache")
    bad = _wheel(tmp_path / "bad.whl", {**FILES, "pkg/mod.py": "def f():\n    return 3\n"})
    with pytest.raises(FixtureError, match=r"`--source pkg=.*bad.whl`: SHA-256 .* does not match the pin"):
        ensure_source(spec, tmp_path / "cache2", bad)
    assert not (tmp_path / "cache2").exists()


@pytest.mark.parametrize("corrupt", [
    lambda b: b[:-7],  # truncated: not JSON any more
    lambda b: b.replace(b"return 2", b"return 9"),  # valid JSON, one file changed
])
def test_a_corrupted_cached_source_is_refetched(tmp_path, corrupt):
    good = files_payload(FILES)
    spec, calls = _with_route(good)
    path = cached_path(spec, tmp_path)
    path.write_bytes(corrupt(good))
    assert not is_cached(spec, tmp_path)
    assert json.loads(ensure_source(spec, tmp_path)) == FILES and len(calls) == 1
    assert path.read_bytes() == good


def test_a_corrupted_cached_source_is_refused_when_no_route_works(tmp_path):
    spec, _ = _with_route(None)
    path = cached_path(spec, tmp_path)
    path.write_bytes(files_payload({**FILES, "pkg/mod.py": "tampered\n"}))
    with pytest.raises(FixtureError, match=r"(?s)cannot obtain `pkg-1.0.json`.*does not match its SHA-256 pin"
                                           r".*registry unreachable.*`--source pkg=PATH`"):
        ensure_source(spec, tmp_path)
    assert b"tampered" in path.read_bytes()  # left as found, never trusted


def test_unknown_source_for_the_population_set_is_refused(tmp_path):
    with pytest.raises(FixtureError, match=r"`--source gutenberg=...`: unknown source for the population set"):
        load_fixture_set("population", cache_dir=tmp_path, sources={"gutenberg": tmp_path})
