"""The gate and the pre-registration (docs/gate.md): an override of a pre-registered setting makes
the verdict NOT PRE-REGISTERED in every output and fails the gate unless accepted explicitly."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from common.hashing import sha256_file
from tests.support.examples import example_manifest, seal_folder
from validation.contract.prereg import Prereg, PreregError, load_prereg
from validation.simulation.simulate import simulate_study
from validation.verdict import main

PREREG = Path(__file__).resolve().parents[1] / "data" / "prereg_fast.toml"  # n_resamples = 300
FAST = ["--no-calibration"]


def _run(root: Path, personalization=0.2, prereg: Path = PREREG) -> Path:
    data = simulate_study(np.random.default_rng(0), n_seeds=5, n_docs=10, personalization=personalization)
    run = root / "run"
    run.mkdir(parents=True)
    data.cells.write_parquet(run / "cells.parquet")
    data.docs.write_parquet(run / "docs.parquet")
    _manifest(run, data, prereg)
    return run


def _manifest(run: Path, data, prereg: Path) -> None:
    doc = example_manifest(data.users, data.seeds).to_json()
    doc["prereg"] = {"path": str(prereg), "sha256": sha256_file(prereg)}
    (run / "manifest.json").write_text(json.dumps(doc))
    seal_folder(run)  # sealed as the runner seals its runs: a pre-registered verdict needs it


def _outputs(run: Path, summary: Path) -> dict[str, str]:
    return {"verdict.json": (run / "verdict.json").read_text(), "junit.xml": (run / "junit.xml").read_text(),
            "report.html": (run / "report.html").read_text(encoding="utf-8"), "summary": summary.read_text()}


@pytest.mark.parametrize("override", [["--n-resamples", "20"], ["--rng-seed", "7"]])
def test_an_override_is_not_preregistered_everywhere_and_fails_the_gate(tmp_path, capsys, monkeypatch, override):
    run = _run(tmp_path)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    # the pre-registered analysis of this study passes ...
    assert main(["--run", str(run), "--prereg", str(PREREG), *FAST]) == 0
    assert "*** NOT PRE-REGISTERED" not in capsys.readouterr().out
    # ... the same study with an override does not, and every output says why
    summary.unlink()
    assert main(["--run", str(run), "--prereg", str(PREREG), *override, *FAST]) == 1
    out = capsys.readouterr().out
    assert "*** NOT PRE-REGISTERED ***" in out and override[0] in out and "--accept-not-preregistered" in out
    texts = _outputs(run, summary)
    for name, text in texts.items():
        assert "NOT PRE-REGISTERED" in text, name
        assert override[0] in text, name
    v = json.loads(texts["verdict.json"])
    assert v["preregistration"]["status"] == "NOT PRE-REGISTERED" and v["preregistration"]["overrides"]
    assert not v["gate"]["passed"] and any("NOT PRE-REGISTERED" in r for r in v["gate"]["reasons"])
    suite = ET.fromstring(texts["junit.xml"])
    failed = {tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None}
    assert {"preregistration", "gate"} <= failed
    assert 'id="prereg-banner"' in texts["report.html"] and "overridden on the command line" in texts["report.html"]
    # accepted explicitly: the gate reads the statistics, the label stays NOT PRE-REGISTERED
    assert main(["--run", str(run), "--prereg", str(PREREG), *override, "--accept-not-preregistered", *FAST]) == 0
    v = json.loads((run / "verdict.json").read_text())
    assert v["preregistration"]["status"] == "NOT PRE-REGISTERED"
    assert v["preregistration"]["accepted_not_preregistered"] is True and v["gate"]["passed"]
    assert "accepted with --accept-not-preregistered" in capsys.readouterr().out


def test_collapsed_intervals_cannot_turn_a_fail_into_exit_0(tmp_path, capsys):
    """The attack of issue 10: a tiny --n-resamples narrows the intervals; never exit 0 unaccepted."""
    run = _run(tmp_path, personalization=[0.06, 0.06, 0.0])
    pre = main(["--run", str(run), "--prereg", str(PREREG), *FAST, "--no-report"])
    for n in ("1", "2", "5"):
        assert main(["--run", str(run), "--prereg", str(PREREG), "--n-resamples", n, *FAST, "--no-report"]) == 1
    assert pre in (0, 1)


def test_the_preregistered_value_on_the_command_line_is_not_an_override(tmp_path, capsys):
    run = _run(tmp_path)
    p = load_prereg(PREREG)
    assert main(["--run", str(run), "--prereg", str(PREREG), "--n-resamples", str(p.n_resamples),
                 "--rng-seed", str(p.rng_seed), *FAST, "--no-report"]) == 0
    assert json.loads((run / "verdict.json").read_text())["preregistration"]["status"] == "pre-registered"


def test_another_prereg_file_is_refused_or_not_preregistered(tmp_path, capsys):
    run = _run(tmp_path)
    other = tmp_path / "lenient.toml"
    other.write_text(PREREG.read_text().replace("lenient_margin = 0.05", "lenient_margin = 0.01"))
    assert main(["--run", str(run), "--prereg", str(other), *FAST, "--no-report"]) == 2
    assert "pre-registration changed since the run" in capsys.readouterr().err
    assert main(["--run", str(run), "--prereg", str(other), "--allow-prereg-change", *FAST, "--no-report"]) == 1
    v = json.loads((run / "verdict.json").read_text())
    assert v["preregistration"]["status"] == "NOT PRE-REGISTERED" and not v["gate"]["passed"]


def test_external_cells_without_a_manifest_need_acceptance(tmp_path, capsys):
    data = simulate_study(np.random.default_rng(0), n_seeds=5, n_docs=10, personalization=0.2)
    cells, docs = tmp_path / "c.parquet", tmp_path / "d.parquet"
    data.cells.write_parquet(cells)
    data.docs.write_parquet(docs)
    args = ["--cells", str(cells), "--docs", str(docs), "--prereg", str(PREREG), *FAST, "--no-report"]
    assert main(args) == 1
    assert "no run manifest" in capsys.readouterr().out
    assert main(args + ["--accept-not-preregistered"]) == 0


def test_impossible_settings_are_refused(tmp_path, capsys):
    with pytest.raises(PreregError, match="strict_margin.*lenient_margin"):
        Prereg(strict_margin=0.04, lenient_margin=0.05)
    run = _run(tmp_path)
    bad = tmp_path / "p.toml"
    bad.write_text(PREREG.read_text().replace("lenient_min_users = 0", "lenient_min_users = 4"))
    _manifest(run, simulate_study(np.random.default_rng(0), n_seeds=5, n_docs=10), bad)
    assert main(["--run", str(run), "--prereg", str(bad), *FAST, "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "lenient_min_users = 4" in err and "3 users" in err
    assert not (run / "verdict.json").exists()


@pytest.mark.parametrize("n", [1, 2, 199])
def test_a_file_cannot_preregister_a_handful_of_resamples(tmp_path, capsys, n):
    """One resample collapses every interval onto its point (LENIENT read PASS on margins whose
    10000-resample intervals straddle the bar); the file is refused before anything is judged."""
    with pytest.raises(PreregError, match=r"`n_resamples` must be an integer >= 200"):
        Prereg(n_resamples=n)
    bad = tmp_path / "p.toml"
    bad.write_text(PREREG.read_text().replace("n_resamples = 300", f"n_resamples = {n}"))
    run = _run(tmp_path, prereg=bad)
    assert main(["--run", str(run), "--prereg", str(bad), *FAST, "--no-report"]) == 2
    assert "n_resamples` must be an integer >= 200" in capsys.readouterr().err
    assert Prereg(n_resamples=200).n_resamples == 200


@pytest.mark.parametrize("flag,value", [("--n-resamples", "0"), ("--rng-seed", "-1")])
def test_bad_override_values_exit_2(tmp_path, capsys, flag, value):
    run = _run(tmp_path)
    assert main(["--run", str(run), "--prereg", str(PREREG), flag, value, *FAST, "--no-report"]) == 2
    assert flag in capsys.readouterr().err


def test_the_fast_test_copy_differs_from_the_repository_file_only_in_n_resamples():
    repo = (Path(__file__).resolve().parents[2] / "prereg.toml").read_text().splitlines()
    fast = PREREG.read_text().splitlines()
    differ = [(a, b) for a, b in zip(repo, fast, strict=True) if a != b]
    assert differ[0][1].startswith("# Test copy") and differ[1:] == [("n_resamples = 10000", "n_resamples = 300")]


@pytest.mark.parametrize("key,value", [
    ("confidence", "0.0001"), ("confidence", "0.5"), ("confidence", "0.9999"),
    ("equivalence_level", "0.01"), ("equivalence_level", "0.99999"),
    ("strict_margin", "0.9"), ("lenient_margin", "0.0001"), ("delta", "1e-9"), ("delta", "0.5"),
    ("share_margin", "0.001"), ("min_share", "0.05"), ("max_effect", "0.5"),
])
def test_a_file_cannot_preregister_a_collapsed_level_or_margin(tmp_path, capsys, key, value):
    """Issue 22: `confidence = 0.0001` was accepted and passed a study that fails at 0.95; every level
    and margin of the file is refused outside its sane range, naming the file, the key and the range."""
    text = PREREG.read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"{key} = "))
    bad = tmp_path / "p.toml"
    bad.write_text(text.replace(line, f"{key} = {value}"))
    run = _run(tmp_path, personalization=[0.06, 0.06, 0.0], prereg=bad)
    assert main(["--run", str(run), "--prereg", str(bad), *FAST, "--no-report"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and f"{key}` must be a number in [" in err and f"got {value}" in err.replace("1e-09", "1e-9")
    assert not (run / "verdict.json").exists()


def test_the_sane_ranges_hold_the_repository_defaults_and_are_documented():
    from validation.contract.prereg import BOUNDS
    gate = " ".join((Path(__file__).resolve().parents[2] / "docs" / "gate.md").read_text().split())
    for name, (lo, hi, _) in BOUNDS.items():
        assert lo <= getattr(Prereg(), name) <= hi
        assert f"`{name}` in [{lo:g}, {hi:g}]" in gate, name
