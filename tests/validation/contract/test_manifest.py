"""manifest.json is read in one place (validation.contract.manifest), validated, with a format version."""

import json

import pytest

from tests.support.examples import example_manifest
from validation.contract.manifest import MANIFEST_FORMAT, ManifestError, manifest_from_json, read_manifest


def _doc() -> dict:
    return example_manifest(("alice", "bob"), (0, 1, 2)).to_json()


def test_round_trip_through_a_file(tmp_path):
    doc = _doc()
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    m = read_manifest(tmp_path / "manifest.json")
    assert m.to_json() == doc and m.format == MANIFEST_FORMAT
    assert m.seeds == (0, 1, 2) and [u.name for u in m.fixture_set.users] == ["alice", "bob"]
    assert m.fixture_set.users[1].licence == "CC0-1.0" and m.prereg.sha256 == "cd" * 32


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("prereg"), r"field `prereg: missing`"),
    (lambda d: d["prereg"].pop("sha256"), r"field `prereg.sha256: missing`"),
    (lambda d: d.update(seeds=[0, "1"]), r"`seeds: expected a list of integers"),
    (lambda d: d.update(seeds=[True]), r"`seeds: expected a list of integers"),
    (lambda d: d["adapter"].update(params=1.5), r"`adapter.params: expected int, got 1.5"),
    (lambda d: d["fixture_set"]["users"][1].update(train_bytes="many"),
     r"`fixture_set.users\[1\].train_bytes: expected int"),
    (lambda d: d["git"].update(dirty="no"), r"`git.dirty: expected bool"),
    (lambda d: d.update(format=MANIFEST_FORMAT + 1), r"newer than this suite reads"),
    (lambda d: d.update(format="1"), r"`format` must be a positive integer"),
])
def test_a_malformed_manifest_names_the_field(edit, message):
    doc = _doc()
    edit(doc)
    with pytest.raises(ManifestError, match=message):
        manifest_from_json(doc, "runs/x/manifest.json")


def test_older_manifests_without_a_format_are_format_1_and_extra_keys_are_ignored():
    doc = _doc()
    del doc["format"]
    doc["written_by_a_newer_minor_version"] = {"anything": 1}
    m = manifest_from_json(doc)
    assert m.format == 1 and "written_by_a_newer_minor_version" not in m.to_json()


def test_not_json_is_refused_naming_the_file(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"manifest.json: not valid JSON"):
        read_manifest(tmp_path / "manifest.json")
