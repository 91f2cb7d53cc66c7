"""The user's own corpora (`--fixture-set DIR`) and the `python -m fixtures` command line."""

from pathlib import Path

import pytest

from fixtures import FixtureError, load_fixture_set
from fixtures.__main__ import main
from fixtures.userdir import MIN_HELDOUT_DOCS


def _doc(user: str, k: int, n_words: int = 40) -> str:
    return " ".join(f"{user}{k}w{i}" for i in range(n_words)) + ".\n"


def _user(root: Path, name: str, n_train: int = 12, n_held: int = 12) -> Path:
    for part, n in (("train", n_train), ("heldout", n_held)):
        (root / name / part).mkdir(parents=True)
        for k in range(n):
            (root / name / part / f"{k:03d}.txt").write_text(_doc(f"{name}{part}", k))
    return root / name


@pytest.fixture
def userdir(tmp_path: Path) -> Path:
    root = tmp_path / "corpora"
    for name in ("carol", "alice", "bob"):
        _user(root, name)
    (root / "pretrain").mkdir()
    (root / "pretrain" / "base.txt").write_text("general text for the base model. " * 200)
    return root


def test_loads_users_in_alphabetical_order_with_own_pretraining(userdir, tmp_path):
    fs = load_fixture_set(str(userdir), cache_dir=tmp_path / "cache")
    assert [u.name for u in fs.users] == ["alice", "bob", "carol"]
    assert [u.name for u in fs.take(2).users] == ["alice", "bob"]
    alice = fs.users[0]
    assert len(alice.train) == 12 and len(alice.heldout) == MIN_HELDOUT_DOCS + 2
    assert alice.heldout[0].doc_id == "000.txt" and alice.heldout[0].text == _doc("aliceheldout", 0)
    assert fs.pretrain[0].doc_id == "base.txt" and fs.leakage
    assert load_fixture_set(str(userdir), cache_dir=tmp_path / "cache") == fs  # deterministic


def test_one_text_file_is_split_by_the_suite(tmp_path):
    root = tmp_path / "d"
    (root / "dana").mkdir(parents=True)
    paras = [_doc("dana", k, n_words=60) for k in range(120)]  # ~1 KB paragraphs
    (root / "dana" / "all.txt").write_text("\n".join(paras))
    (root / "pretrain").mkdir()
    (root / "pretrain" / "p.txt").write_text("base text. " * 100)
    (user,) = load_fixture_set(str(root), cache_dir=tmp_path / "cache").users
    assert len(user.heldout) >= MIN_HELDOUT_DOCS
    assert not {d.doc_id for d in user.train} & {d.doc_id for d in user.heldout}
    assert all(d.doc_id.startswith("all.txt#") for d in user.train + user.heldout)
    words = {w for d in user.train + user.heldout for w in d.text.split()}
    assert words == {w for p in paras for w in p.split()}  # cut between paragraphs, nothing lost


def _break(userdir: Path, how: str) -> str:
    """Apply one defect to a good directory; return the regex its error must match."""
    alice = userdir / "alice"
    if how == "missing-dir":
        return r"`--fixture-set .*nowhere`: no such directory"
    if how == "no-users":
        for p in ("alice", "bob", "carol"):
            for f in sorted((userdir / p).rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
            (userdir / p).rmdir()
        return r"no user folders; create one folder per user"
    if how == "missing-heldout":
        for f in (alice / "heldout").iterdir():
            f.unlink()
        (alice / "heldout").rmdir()
        return r"`.*alice/heldout/`: missing folder; .* create it"
    if how == "empty-user":
        (userdir / "dave").mkdir()
        return r"`.*dave/`: empty user: no text files"
    if how == "empty-train":
        for f in (alice / "train").iterdir():
            f.unlink()
        return r"`.*alice/train/`: empty user: no training documents"
    if how == "non-utf8":
        (alice / "train" / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
        return r"`.*alice/train/latin1.txt` is not UTF-8 text \(byte 3.*iconv"
    if how == "empty-file":
        (alice / "heldout" / "blank.txt").write_text("  \n")
        return r"`.*alice/heldout/blank.txt` is empty; remove it"
    if how == "too-few-heldout":
        for f in sorted((alice / "heldout").iterdir())[MIN_HELDOUT_DOCS - 1:]:
            f.unlink()
        return rf"`.*alice/heldout/`: held-out part too small to resample: {MIN_HELDOUT_DOCS - 1} documents"
    if how == "tiny-heldout-doc":
        (alice / "heldout" / "000.txt").write_text("short.\n")
        return r"`.*alice/heldout/000.txt`: held-out document of 7 bytes, at least 100"
    if how == "reserved-name":
        _user(userdir, "pooled")
        return r"`.*pooled`: the name 'pooled' is reserved for a control row"
    if how == "loose-files":
        (userdir / "erin").mkdir()
        (userdir / "erin" / "a.txt").write_text("a. " * 100)
        (userdir / "erin" / "b.txt").write_text("b. " * 100)
        return r"`.*erin/` holds 2 files .* move them into `train/` and `heldout/`"
    if how == "small-single-file":
        (userdir / "erin").mkdir()
        (userdir / "erin" / "all.txt").write_text("\n\n".join(_doc("e", k, 60) for k in range(20)))
        return r"`.*erin/all.txt`: held-out part too small to resample"
    if how == "leak":
        (alice / "train" / "copy.txt").write_text((alice / "heldout" / "003.txt").read_text() * 3)
        (alice / "heldout" / "003.txt").write_text((alice / "heldout" / "003.txt").read_text() * 3)
        return r"leaks held-out text: `alice/train` and `alice/heldout` share a run"
    if how == "empty-pretrain":
        (userdir / "pretrain" / "base.txt").unlink()
        return r"`.*pretrain/` is empty"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing-dir", "no-users", "missing-heldout", "empty-user", "empty-train",
                                 "non-utf8", "empty-file", "too-few-heldout", "tiny-heldout-doc",
                                 "reserved-name", "loose-files", "small-single-file", "leak", "empty-pretrain"])
def test_every_bad_input_names_the_file_and_the_fix(userdir, how, tmp_path):
    match = _break(userdir, how)
    target = userdir.parent / "nowhere" if how == "missing-dir" else userdir
    with pytest.raises(FixtureError, match=match):
        load_fixture_set(str(target), cache_dir=tmp_path / "cache")


def test_unknown_set_name(tmp_path):
    with pytest.raises(FixtureError, match="`--fixture-set classic`: no such fixture set or directory; use one of"):
        load_fixture_set("classic")


def test_without_pretrain_folder_the_classics_corpus_is_needed(userdir, tmp_path):
    (userdir / "pretrain" / "base.txt").unlink()
    (userdir / "pretrain").rmdir()
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    with pytest.raises(FixtureError, match=r"`--source django=.*bogus.json`: SHA-256"):
        load_fixture_set(str(userdir), cache_dir=tmp_path / "cache", sources={"django": bogus})


def test_cli_lists_sets_and_exits_2_on_errors(userdir, tmp_path, capsys):
    assert main(["synthetic", "synthetic-null", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "synthetic: 3 synthetic users" in out and "user3" in out and "leakage" in out
    assert main(["list", str(userdir), "--cache-dir", str(tmp_path)]) == 0 and "carol" in capsys.readouterr().out
    assert main(["classics", "--cache-dir", str(tmp_path / "empty")]) == 0  # nothing fetched: says so
    assert "not fetched yet: run `python -m fixtures fetch`" in capsys.readouterr().out
    for argv, message in ((["nope"], "`--fixture-set nope`"), (["fetch", "--source", "x"], "expected NAME=PATH"),
                          (["fetch", "--source", "gutenberg=/x"], "unknown source 'gutenberg'"),
                          (["fetch", "synthetic"], "`fetch synthetic`: not a fetched set")):
        assert main(argv) == 2
        assert message in capsys.readouterr().err
