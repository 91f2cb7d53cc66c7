"""Hash verification of cached sources: good cache reused, tampered cache refetched or refused."""

import hashlib
import io
import json
import lzma
import re
import tarfile
from pathlib import Path

import pytest

from fixtures import FixtureError, load_fixture_set
from fixtures.fetch import (
    SourceSpec,
    cached_route,
    deb_member,
    ensure_source,
    files_digest,
    is_cached,
    json_files_digest,
    tar_member,
)
from fixtures.sources import ALL_SOURCES, BOTCHAN

TEXT = b"It was a dark and stormy night.\n" * 100
PIN = hashlib.sha256(TEXT).hexdigest()


class Route:
    """A fetch route that counts its calls and returns `payload` (or raises)."""

    def __init__(self, payload: bytes | None):
        self.payload, self.calls = payload, 0

    def __call__(self, work: Path) -> bytes:
        self.calls += 1
        assert work.is_dir()
        if self.payload is None:
            raise RuntimeError("network unreachable")
        return self.payload


def _spec(*routes) -> SourceSpec:
    return SourceSpec(name="fake", filename="fake.txt", title="a fake book", licence="public domain",
                      sha256=PIN, routes=tuple((f"route {i}", r) for i, r in enumerate(routes)),
                      from_local=lambda p: p.read_bytes(), local_hint="`fake.txt`")


def test_first_route_that_works_is_cached_and_the_cache_reused(tmp_path):
    broken, good = Route(None), Route(TEXT)
    spec = _spec(broken, good)
    assert ensure_source(spec, tmp_path) == TEXT
    assert (broken.calls, good.calls) == (1, 1) and (tmp_path / "fake.txt").read_bytes() == TEXT
    assert ensure_source(spec, tmp_path) == TEXT and good.calls == 1  # from the cache
    assert is_cached(spec, tmp_path)
    # the provenance names the route that actually fetched it, not every possible one
    assert cached_route(spec, tmp_path).startswith("route 1, fetched ")


def test_a_cache_without_a_route_record_says_so(tmp_path):
    (tmp_path / "fake.txt").write_bytes(TEXT)
    assert cached_route(_spec(Route(None)), tmp_path) == "cached copy (route not recorded)"


def test_tampered_cache_is_refetched(tmp_path):
    (tmp_path / "fake.txt").write_bytes(TEXT.replace(b"dark", b"DARK", 1))
    good = Route(TEXT)
    spec = _spec(good)
    assert not is_cached(spec, tmp_path)
    assert ensure_source(spec, tmp_path) == TEXT and good.calls == 1
    assert (tmp_path / "fake.txt").read_bytes() == TEXT


def test_tampered_cache_is_refused_when_no_route_works(tmp_path):
    (tmp_path / "fake.txt").write_bytes(TEXT[:-5])
    with pytest.raises(FixtureError, match=r"(?s)cannot obtain `fake.txt`.*does not match its SHA-256 pin.*"
                                           r"network unreachable.*`--source fake=PATH`"):
        ensure_source(_spec(Route(None)), tmp_path)
    assert (tmp_path / "fake.txt").read_bytes() == TEXT[:-5]  # left as found: never trusted, never replaced


def test_a_route_returning_the_wrong_text_is_not_cached(tmp_path):
    with pytest.raises(FixtureError, match="route 0: SHA-256 .* does not match the pin"):
        ensure_source(_spec(Route(b"other text")), tmp_path)
    assert not (tmp_path / "fake.txt").exists()


def test_local_copy_is_verified_then_cached(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_bytes(TEXT)
    bad.write_bytes(TEXT + b"!")
    cache = tmp_path / "cache"
    never = Route(None)
    assert ensure_source(_spec(never), cache, good) == TEXT and never.calls == 0
    assert (cache / "fake.txt").read_bytes() == TEXT
    with pytest.raises(FixtureError, match=r"`--source fake=.*bad.txt`: SHA-256 .* does not match the pin"):
        ensure_source(_spec(never), cache, bad)
    with pytest.raises(FixtureError, match=r"`--source fake=.*nope.txt`: no such file or folder"):
        ensure_source(_spec(never), cache, tmp_path / "nope.txt")


def test_wrong_local_copy_of_a_real_source_is_refused(tmp_path):
    fake = tmp_path / "Django-5.2"
    (fake / "django").mkdir(parents=True)
    (fake / "django" / "a.py").write_text("x = 1\n")
    with pytest.raises(FixtureError, match=r"`--source django=.*Django-5.2`: SHA-256 .* does not match the pin"):
        load_fixture_set("classics", cache_dir=tmp_path / "cache", sources={"django": fake})
    assert not (tmp_path / "cache" / "django-5.2.json").exists()


def test_unknown_source_name_is_refused(tmp_path):
    with pytest.raises(FixtureError, match=r"`--source gutenberg=...`: unknown source"):
        load_fixture_set("classics", cache_dir=tmp_path, sources={"gutenberg": tmp_path})


def test_every_real_source_has_a_pin_and_a_route():
    assert set(ALL_SOURCES) == {"botchan", "opticks", "django"}
    for spec in ALL_SOURCES.values():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256) and spec.routes  # a SHA-256 as hashlib spells it
    assert BOTCHAN.sha256 == "464bd5300c24fce16fcc4555d4231a57632caae4d0090ad6aa92854a3b227ba7"


def test_file_list_digest_is_order_free_and_content_sensitive():
    a = {"django/a.py": "x = 1\n", "docs/b.txt": "B\n"}
    assert files_digest(a) == files_digest(dict(reversed(a.items())))
    assert files_digest(a) != files_digest({**a, "docs/b.txt": "B!\n"})
    assert json_files_digest(json.dumps(a).encode()) == files_digest(a)
    assert json_files_digest(b"{truncated") == "unreadable"


def _tar_bytes(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def test_deb_and_tar_members_are_read_without_dpkg(tmp_path):
    data_tar = lzma.compress(_tar_bytes({"./usr/share/go-1.19/src/testdata/book.txt": TEXT}, "w"))
    deb = tmp_path / "pkg.deb"
    deb.write_bytes(b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n")
                    + _ar_member("control.tar.xz", b"x") + _ar_member("data.tar.xz", data_tar))
    assert deb_member(deb, "usr/share/go-1.19/src/testdata/book.txt") == TEXT
    with pytest.raises(RuntimeError, match="no `usr/missing.txt`"):
        deb_member(deb, "usr/missing.txt")
    sdist = tmp_path / "pkg-1.0.tar.gz"
    sdist.write_bytes(_tar_bytes({"pkg-1.0/test/book.txt": TEXT}, "w:gz"))
    assert tar_member(sdist, "pkg-1.0/test/book.txt") == TEXT
