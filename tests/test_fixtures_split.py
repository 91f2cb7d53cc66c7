"""Cutting text into documents and splitting them: disjoint, deterministic, sized, counted."""

import pytest

from fixtures import Document, FixtureError
from fixtures.classics import CODE_EXCLUDED, code_documents, programmer, prose_documents
from fixtures.split import SplitRule, evenly_spaced, paragraphs, prose_blocks, split_documents, strip_gutenberg, thin_to

GUTENBERG = (
    "\ufeffProject Gutenberg's Example, by Somebody\r\nThis eBook is for the use of anyone\r\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK EXAMPLE ***\r\n"
    "Produced by Some Volunteers\r\n"
    "CHAPTER I\r\nIt was a dark night.\r\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK EXAMPLE ***\r\n"
    "*** START: FULL LICENSE ***\r\nTHE FULL PROJECT GUTENBERG LICENSE\r\n"
)


def _prose(n_paras: int, words: int = 30) -> str:
    return "\n\n".join(" ".join(f"w{p}x{i}" for i in range(words)) + "." for p in range(n_paras)) + "\n"


def test_strip_gutenberg_keeps_only_the_book():
    text = strip_gutenberg(GUTENBERG)
    assert text == "CHAPTER I\nIt was a dark night.\n"


def test_paragraphs_from_blank_lines_and_from_short_sentence_ending_lines():
    assert len(paragraphs(_prose(30))) == 30
    wrapped = ("This line is long enough to be a wrapped line of a paragraph, and\n"
               "it ends here.\n"
               "A new paragraph starts, long enough to be wrapped at the wrap width\n"
               "and ends.\nCHAPTER II\nMore.\n")
    assert paragraphs(wrapped) == [
        "This line is long enough to be a wrapped line of a paragraph, and\nit ends here.",
        "A new paragraph starts, long enough to be wrapped at the wrap width\nand ends.",
        "CHAPTER II\nMore.",
    ]


def test_prose_blocks_are_whole_paragraphs_within_the_band():
    paras = paragraphs(_prose(200))
    blocks = prose_blocks(paras, 1000, 1600)
    assert all(1000 <= len(b.encode()) <= 1600 for b in blocks[:-1])
    assert [p for b in blocks for p in b.strip().split("\n\n")] == paras  # nothing lost, nothing cut


def test_evenly_spaced_and_thin_to():
    assert evenly_spaced(10, 5) == [1, 3, 5, 7, 9]
    docs = [Document(f"d{i}", "x" * 100) for i in range(50)]
    kept = thin_to(docs, 2_000)
    assert sum(d.n_bytes for d in kept) <= 2_000 and len(kept) == 20
    assert [d.doc_id for d in kept] == sorted((d.doc_id for d in kept), key=lambda s: int(s[1:]))


def test_split_is_disjoint_deterministic_and_counted():
    docs = prose_documents(_prose(600).encode(), "book", SplitRule())
    rule = SplitRule(heldout_docs=40, heldout_band=(1000, 1600), train_max_bytes=100_000)
    train, held = split_documents(docs, rule, "`book`")
    assert len(held) == 40 and all(1000 <= d.n_bytes <= 1600 for d in held)
    assert not {d.doc_id for d in train} & {d.doc_id for d in held}
    assert sum(d.n_bytes for d in train) <= 100_000
    assert split_documents(docs, rule, "`book`") == (train, held)
    # spread over the whole source, not its end
    ids = [int(d.doc_id.split("-")[1]) for d in held]
    assert ids[0] < len(docs) // 10 and ids[-1] > len(docs) * 9 // 10


def test_split_refuses_too_few_documents_in_band():
    docs = [Document(f"d{i}", "y" * 1200) for i in range(10)]
    with pytest.raises(FixtureError, match=r"`book`: only 10 documents of 1000\.\.1600 bytes, 50 needed"):
        split_documents(docs, SplitRule(), "`book`")


def test_programmer_takes_whole_files_and_keeps_twins_out_of_heldout():
    body = "\n".join(f"def f{{}}_{i}(x):\n    return x * {i}\n" for i in range(40))
    files = {f"django/app{k:03d}/mod.py": f"# module {k}\n" + body.replace("{}", str(k))[:1400] for k in range(150)}
    files["django/conf/locale/fr/formats.py"] = "X = 1\n" * 300  # templated: excluded
    files["django/db/migrations/0001_x.py"] = "Y = 2\n" * 300
    twin = "# twin\n" + "".join(f"value_{i} = compute('{i}')\n" for i in range(60))
    files["django/twin_a.py"], files["django/twin_b.py"] = twin, twin
    assert not any(x in d.doc_id for d in code_documents(files) for x in CODE_EXCLUDED)
    user = programmer(files, "test")
    held_ids = {d.doc_id for d in user.heldout}
    assert len(user.heldout) == 50 and not held_ids & {d.doc_id for d in user.train}
    assert not held_ids & {"django/twin_a.py", "django/twin_b.py"}
    assert all(d.text == files[d.doc_id] for d in user.train + user.heldout)
