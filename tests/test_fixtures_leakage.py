"""Leakage check: exact longest shared substring, the figures per set, refusal above the limit."""

import json
import random

import pytest

from fixtures import LEAKAGE_MAX_BYTES, Document, FixtureError, FixtureSet, Provenance, UserCorpus
from fixtures.leakage import cached_leakage, check_leakage, docs_sharing_runs, leakage_report, longest_shared_substring

PROV = Provenance("test", "public domain", "0" * 64)


def _docs(*texts: str) -> tuple[Document, ...]:
    return tuple(Document(f"d{i}", t) for i, t in enumerate(texts))


def _brute_lss(a: list[str], b: list[str]) -> int:
    best = 0
    for y in (t.encode() for t in b):
        for x in (t.encode() for t in a):
            for i in range(len(y)):
                for j in range(i + best + 1, len(y) + 1):
                    if y[i:j] in x:
                        best = j - i
                    else:
                        break
    return best


def test_hand_computed_cases():
    assert longest_shared_substring(_docs("hello world foo"), _docs("xx world fo yy")) == len(" world fo")
    assert longest_shared_substring(_docs("abc"), _docs("xyz")) == 0
    assert longest_shared_substring(_docs("é€x"), _docs("a€x")) == len("€x".encode())  # bytes, not characters


def test_no_match_across_document_boundaries():
    assert longest_shared_substring(_docs("abc", "def"), _docs("cdef")) == 3
    assert longest_shared_substring(_docs("abcdef"), _docs("abc", "def")) == 3


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_brute_force(seed):
    rng = random.Random(seed)
    a = ["".join(rng.choice("ab c") for _ in range(rng.randint(1, 80))) for _ in range(4)]
    b = ["".join(rng.choice("ab c") for _ in range(rng.randint(1, 80))) for _ in range(3)]
    b[0] += a[1][5:60]  # plant a long shared run
    assert longest_shared_substring(_docs(*a), _docs(*b)) == _brute_lss(a, b)


def test_docs_sharing_runs_finds_twins_only():
    twin = "def f(x):\n    return x + 1\n" * 5
    docs = list(_docs("alpha " * 50, twin + "a", "beta " * 50, "b" + twin))
    assert docs_sharing_runs(docs, 64) == {1, 3}


def _set(train: str, heldout: str, pretrain: str = "unrelated pretraining text") -> FixtureSet:
    user = UserCorpus("alice", _docs(train), _docs(heldout), PROV)
    return FixtureSet("t", (user,), _docs(pretrain), PROV)


def test_report_rows_and_refusal_above_the_limit():
    story = "".join(f"sentence number {i} of a story. " for i in range(40))
    ok = _set("some training text", "a held-out text")
    rows = leakage_report(ok)
    assert [r[:2] for r in rows] == [("alice/train", "alice/heldout"), ("pretrain", "alice/heldout")]
    check_leakage(rows, "t")
    leaky = _set("preface. " + story, story + " epilogue")
    rows = leakage_report(leaky)
    assert rows[0][2] >= len(story) >= LEAKAGE_MAX_BYTES
    with pytest.raises(FixtureError,
                       match=r"leaks held-out text: `alice/train` and `alice/heldout` share a run of \d+ bytes"):
        check_leakage(rows, "t")
    from_pretrain = _set("x", story, pretrain=story)
    with pytest.raises(FixtureError, match="`pretrain` and `alice/heldout`"):
        check_leakage(leakage_report(from_pretrain), "t")


def test_figures_are_cached_by_content_and_a_corrupt_entry_recomputed(tmp_path):
    fs = _set("some training text", "a held-out text")
    rows = cached_leakage(fs, tmp_path)
    (entry,) = (tmp_path / "leakage").glob("*.json")
    assert json.loads(entry.read_text())["rows"] == [list(r) for r in rows]
    entry.write_text("{not json")
    assert cached_leakage(fs, tmp_path) == rows
    other = _set("other training text", "a held-out text")
    cached_leakage(other, tmp_path)
    assert len(list((tmp_path / "leakage").glob("*.json"))) == 2
