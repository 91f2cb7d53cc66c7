"""Names (docs/gate.md, section 3): one rule where names enter (common.names), applied to user
folders and external files alike; every output escapes names for its format, and the page, opened
in headless Chromium, draws every chart with hostile names and holds no injected element."""

from __future__ import annotations

import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import reports
from common.names import MAX_NAME_LENGTH, InvalidName, check_name, lookalikes
from fixtures.corpus import FixtureError
from fixtures.userdir import userdir_fixture_set
from tests.support.browser import missing as browser_missing
from validation import InputError, judge, load_external
from validation.inputs.study import StudyData
from validation.simulation.simulate import simulate_study
from validation.text.outputs import junit_xml, markdown_summary, verdict_text
from validation.verdict import main

PREREG = Path(__file__).resolve().parents[1] / "data" / "prereg_fast.toml"

# Valid under the rule, hostile for HTML, inline JSON, Markdown and Vega: they must be escaped.
HOSTILE_VALID = ("<!--<script>", "<img src=x onerror=console.error('INJECTED')>", "a|b *c* [d](e) `f`")
# Refused by the rule: they can only reach an output through the library, never through a file.
HOSTILE_INVALID = ("</script><b>x\"'\\", "two\nlines", "esc\x1b[31mred")


@pytest.mark.parametrize("raw, fixed", [("alice", "alice"), ("Jose\u0301", "Jos\u00e9"),
                                        ("O'Brien & <co>", "O'Brien & <co>"),
                                        ("x" * MAX_NAME_LENGTH, "x" * MAX_NAME_LENGTH)])
def test_valid_names_come_back_in_nfc(raw, fixed):
    assert check_name(raw, "t") == fixed and unicodedata.is_normalized("NFC", fixed)


@pytest.mark.parametrize("raw, problem", [
    ("", "is empty"), ("bob ", "whitespace"), (" bob", "whitespace"), ("a\tb", "U+0009"), ("a\nb", "U+000A"),
    ("a\x00b", "U+0000"), ("b\u202eob", "RIGHT-TO-LEFT OVERRIDE"), ("zero\u200bwidth", "ZERO WIDTH SPACE"),
    ("a/b", "path separator"), ("a\\b", "path separator"), ("loo:alice", "reserved for control rows"),
    ("alice+bob", "holds '+', which is reserved"), ("base", "reserved for a control row"),
    ("pooled", "reserved for a control row"),
    ("x" * (MAX_NAME_LENGTH + 1), "more than the 64 allowed"),
])
def test_invalid_names_are_refused_with_the_reason(raw, problem):
    with pytest.raises(InvalidName, match=re.escape(problem)) as e:
        check_name(raw, "folder `x`")
    assert "folder `x`" in str(e.value) and "\n" not in str(e.value) and "\x1b" not in str(e.value)


def _users(root: Path, names) -> Path:
    for n in names:
        for part, k in (("train", 3), ("heldout", 10)):
            d = root / n / part
            d.mkdir(parents=True)
            for i in range(k):
                (d / f"{i}.txt").write_text(f"{n} writes document {i}. " * 20)
    (root / "pretrain").mkdir()
    (root / "pretrain" / "p.txt").write_text("pretraining text. " * 50)
    return root


@pytest.mark.parametrize("names, message", [
    (("bob", "bob "), "starts or ends with whitespace"),
    (("Jos\u00e9", "Jose\u0301"), "are the same user name 'José' once normalized"),
    (("alice", "a:b"), "reserved for control rows"),
    (("alice", "tab\there"), r"U\+0009"),
])
def test_user_folders_follow_the_same_rule(tmp_path, names, message):
    root = _users(tmp_path / "set", names)
    with pytest.raises(FixtureError, match=message):
        userdir_fixture_set(root)


def test_user_folder_names_are_nfc_and_accepted_by_the_verdict(tmp_path):
    """A user folder the runner accepts is a name the verdict accepts, and the same spelling."""
    fs = userdir_fixture_set(_users(tmp_path / "set", ("Jose\u0301", "<!--<script", "a|b")))
    names = [u.name for u in fs.users]
    assert names == sorted(names) and "Jos\u00e9" in names
    for n in names:
        assert check_name(n, "user") == n


def test_symlinks_out_of_a_user_folder_and_nul_files_are_refused(tmp_path):
    root = _users(tmp_path / "set", ("alice", "bob"))
    secret = tmp_path / "secret.txt"
    secret.write_text("outside text " * 20)
    (root / "alice" / "train" / "link.txt").symlink_to(secret)
    with pytest.raises(FixtureError, match=r"link.txt` is a symlink to .*secret.txt`, outside"):
        userdir_fixture_set(root)
    (root / "alice" / "train" / "link.txt").unlink()
    (root / "bob" / "train" / "0.txt").write_bytes(b"\x00" * 100)
    with pytest.raises(FixtureError, match=r"0.txt` holds NUL bytes"):
        userdir_fixture_set(root)


def _cells(names=("alice", "bob", "carol")):
    data = simulate_study(np.random.default_rng(0), n_seeds=3, n_docs=8, personalization=0.2)
    mapping = dict(zip(("alice", "bob", "carol"), names, strict=True))

    def ren(df):
        return df.with_columns(pl.col("adapter").replace(mapping), pl.col("eval").replace(mapping))
    return StudyData(cells=ren(data.cells), docs=ren(data.docs))


@pytest.mark.parametrize("bad", ["bob ", "two\nlines", "base", "x:y", "b\u202eob"])
def test_external_files_follow_the_same_rule(tmp_path, bad):
    p = tmp_path / "cells.parquet"
    _cells(("alice", bad, "carol")).cells.write_parquet(p)
    with pytest.raises(InputError, match=r"cells.parquet: column `(adapter|eval)` at row\(s\) \d+"):
        load_external(p)


def test_nfc_and_nfd_spellings_in_a_file_are_one_user(tmp_path):
    p = tmp_path / "cells.parquet"
    cells = _cells(("Jos\u00e9", "bob", "carol")).cells
    nfd = cells.with_columns(pl.when(pl.col("seed") == 1).then(pl.col("adapter").replace({"Jos\u00e9": "Jose\u0301"}))
                             .otherwise(pl.col("adapter")).alias("adapter"))
    nfd.write_parquet(p)
    assert "Jos\u00e9" in load_external(p).users and len(load_external(p).users) == 3


def _verdict(names):
    data = _cells(names)
    return judge(data, rng=np.random.default_rng(0), n_resamples=200, fit=True), data


def test_every_text_output_escapes_hostile_names():
    names = HOSTILE_VALID[:1] + HOSTILE_INVALID[1:]  # "<!--<script>", "two\nlines", "esc\x1b[31mred"
    v, _ = _verdict(names)
    text = verdict_text(v)
    assert "\x1b" not in text and "two\\u000alines" in text
    suite = ET.fromstring(junit_xml(v))   # well-formed XML despite the control characters
    assert {tc.get("name") for tc in suite.iter("testcase")} >= {"<!--<script>", "two\nlines"}
    summary = markdown_summary(v)
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "%" in line and "| user |" not in line]
    assert len(rows) == 3 and all(line.count("|") - line.count("\\|") == 8 for line in rows)
    assert "<" not in summary.replace("&lt;", "") and "\x1b" not in summary
    md_pipes = markdown_summary(_verdict(("a|b", "c", "d"))[0])
    assert "a\\|b" in md_pipes


def test_junit_and_summary_through_the_command(tmp_path, monkeypatch, capsys):
    names = HOSTILE_VALID
    data = _cells(names)
    cells, docs = tmp_path / "c.parquet", tmp_path / "d.parquet"
    data.cells.write_parquet(cells)
    data.docs.write_parquet(docs)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "out"
    assert main(["--cells", str(cells), "--docs", str(docs), "--prereg", str(PREREG), "--out", str(out),
                 "--no-calibration", "--accept-not-preregistered"]) in (0, 1)
    ET.parse(out / "junit.xml")
    assert {u["user"] for u in json.loads((out / "verdict.json").read_text())["users"]} == set(names)
    text = summary.read_text()
    assert "<img" not in text and "&lt;img" in text
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in html and "<!--<script>" not in html


needs_chromium = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")


@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize("names", [HOSTILE_VALID, HOSTILE_INVALID], ids=["valid-hostile", "refused-hostile"])
def test_the_page_draws_every_chart_with_hostile_names(tmp_path, names):
    from tests.support.browser import Chromium

    v, data = _verdict(names)
    path = reports.write_report(v, data, tmp_path / "report.html")
    with Chromium() as b:
        load = b.load(path, screenshot=False)
    assert load.status is not None and load.status["ok"], load.status
    assert load.console_errors == (), load.console_errors   # the onerror= name never ran
    assert load.refused_requests == ()
    assert {c.id for c in load.charts} == {"chart-matrix", "chart-margins", "chart-seed_margins", "chart-decomposition",
                                           "chart-model", "chart-bootstrap"}
    assert all(c.drew for c in load.charts), load.charts
    for n in names:   # shown as text, so never parsed as markup
        assert n.split("\n")[0] in load.text, n
    assert "INJECTED" not in "".join(load.console_messages)


def test_error_messages_reach_the_terminal_escaped(tmp_path, capsys):
    bad = tmp_path / "evil\x1b[2J\rname.csv"
    bad.write_text("seed,adapter,eval,ppl\n0,a,a,2\n0,b,a,3\n0,a,b,3\n0,b,b,0.5\n")
    assert main(["--cells", str(bad), "--prereg", str(PREREG), "--no-report", "--no-calibration"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "evil\\u001b[2J\\u000dname.csv" in err and "`ppl`" in err


# --- look-alikes and invisible characters (issue 22) ----------------------------------------------

@pytest.mark.parametrize("raw, problem", [
    ("Base", "looks like the control row `base`"),
    ("b\u0430se", "looks like the control row `base`"),              # Cyrillic a
    ("\uff42\uff41\uff53\uff45", "looks like the control row `base`"),  # fullwidth
    ("POOLED", "looks like the control row `pooled`"),
    ("p\u043eoled", "looks like the control row `pooled`"),          # Cyrillic o
    ("base\u034f", "U+034F (COMBINING GRAPHEME JOINER)"),
    ("al\u3164ice", "U+3164 (HANGUL FILLER)"),
    ("\u115fbob", "U+115F"), ("bob\u1160x", "U+1160"), ("bob\uffa0x", "U+FFA0"),
    ("bob\u180bx", "U+180B"), ("bob\ufe0f", "U+FE0F"), ("bob\U000e0061", "U+E0061"), ("bo\u00adb", "U+00AD"),
    ("bob\u00a0smith", "U+00A0 (NO-BREAK SPACE)"), ("bob\u3000smith", "U+3000"), ("bob\u2800", "U+2800"),
    ("loo\ua789alice", "look-alike of ':'"), ("alice\uff0bbob", "look-alike of '+'"),
])
def test_names_that_print_like_a_control_or_hide_characters_are_refused(raw, problem):
    with pytest.raises(InvalidName, match=re.escape(problem)) as e:
        check_name(raw, "folder `x`")
    assert str(e.value).isascii(), "the refused name is shown with its code points escaped"


def test_plain_names_stay_valid_and_distinct():
    for n in ("alice", "bob smith", "Jos\u00e9", "user_2", "O'Brien & <co>", "based", "baseline"):
        assert check_name(n, "t") == unicodedata.normalize("NFC", n)
    assert lookalikes(["alice", "bob", "carol", "Jos\u00e9", "Jose"]) is None


@pytest.mark.parametrize("pair", [("alice", "ALICE"), ("paul", "p\u0430ul"), ("Ian", "lan"), ("bob", "\uff42ob")])
def test_two_user_folders_that_look_alike_are_refused(tmp_path, pair):
    root = _users(tmp_path / "set", ("carol", *pair))
    with pytest.raises(FixtureError) as e:
        userdir_fixture_set(root)
    msg = str(e.value)
    assert "look alike" in msg and ascii(pair[0]) in msg and ascii(pair[1]) in msg
    assert f"/{pair[0]}`" in msg or f"/{pair[1]}`" in msg


def test_a_user_folder_named_like_a_control_is_refused(tmp_path):
    root = _users(tmp_path / "set", ("alice", "Base"))
    with pytest.raises(FixtureError, match=r"set/Base`: the name 'Base' looks like the control row `base`"):
        userdir_fixture_set(root)


@pytest.mark.parametrize("names", [("alice", "ALICE", "carol"), ("paul", "p\u0430ul", "carol")])
def test_two_users_of_a_file_that_look_alike_are_refused_by_the_verdict(tmp_path, capsys, names):
    p = tmp_path / "cells.parquet"
    _cells(names).cells.write_parquet(p)
    assert main(["--cells", str(p), "--prereg", str(PREREG), "--no-report", "--no-calibration"]) == 2
    err = capsys.readouterr().err
    assert "cells.parquet: column `" in err and "look alike" in err, err
    assert ascii(names[0]) in err and ascii(names[1]) in err


@pytest.mark.parametrize("bad", ["Base", "b\u0430se", "\uff42\uff41\uff53\uff45", "base\u034f", "bob\u00a0x"])
def test_a_file_user_named_like_a_control_or_with_hidden_characters_is_refused(tmp_path, bad):
    p = tmp_path / "cells.parquet"
    _cells(("alice", bad, "carol")).cells.write_parquet(p)
    with pytest.raises(InputError, match=r"cells.parquet: column `(adapter|eval)` at row\(s\) \d+"):
        load_external(p)
