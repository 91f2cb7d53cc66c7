"""`python -m validation.verdict` end to end: inputs, outputs, exit codes 0/1/2."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

import reports
from common.hashing import sha256_file
from tests.support.examples import example_manifest, seal_folder
from validation.simulation.simulate import simulate_study
from validation.verdict import main

REPO = Path(__file__).resolve().parents[2]
PREREG = REPO / "tests" / "data" / "prereg_fast.toml"  # prereg.toml with n_resamples = 300
FAST = ["--no-report", "--no-calibration"]


def make_run(root: Path, name="r1", personalization=0.2, prereg_sha=None, n_seeds=5) -> Path:
    data = simulate_study(np.random.default_rng(0), n_seeds=n_seeds, n_docs=10, personalization=personalization)
    run = root / "runs" / name
    run.mkdir(parents=True)
    data.cells.write_parquet(run / "cells.parquet")
    data.docs.write_parquet(run / "docs.parquet")
    manifest = example_manifest(data.users, data.seeds).to_json()
    manifest.update(run_id=name, prereg={"path": "prereg.toml", "sha256": prereg_sha or sha256_file(PREREG)})
    (run / "manifest.json").write_text(json.dumps(manifest))
    seal_folder(run)  # sealed as the runner seals its runs: a pre-registered verdict needs it
    return run


def test_a_malformed_manifest_is_refused_naming_the_field(tmp_path, capsys):
    run = make_run(tmp_path)
    m = json.loads((run / "manifest.json").read_text())
    m["seeds"] = ["zero"]
    (run / "manifest.json").write_text(json.dumps(m))
    assert main(["--run", str(run), "--prereg", str(PREREG), *FAST]) == 2
    assert "manifest.json` changed after the run was sealed" in capsys.readouterr().err
    seal_folder(run)  # re-sealed: the manifest itself is then read and refused
    assert main(["--run", str(run), "--prereg", str(PREREG), *FAST]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "seeds" in err and "list of integers" in err


def test_pass_exit_0_with_all_outputs(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["--run", str(run), "--prereg", str(PREREG), *FAST]) == 0
    out = capsys.readouterr().out
    assert "VERDICT: gate PASSED (exit 0)" in out and "pre-registered" in out and "STRICT" in out
    v = json.loads((run / "verdict.json").read_text())
    for key in ("strict", "lenient", "catastrophic"):
        assert {"status", "point"} <= set(v["criteria"][key])
    assert {"user", "margin", "ci_low", "ci_high", "best_other", "inverted",
            "personalization_gain", "regularization_gain"} <= set(v["users"][0])
    assert v["model"]["kind"] == "mixedlm" and isinstance(v["model"]["diagonal_effect"], float)
    assert len(v["model"]["diagonal_ci"]) == 2
    assert v["gate"]["passed"] is True and isinstance(v["warnings"], list)
    assert v["preregistration"]["status"] == "pre-registered"
    suite = ET.parse(run / "junit.xml").getroot()
    names = [tc.get("name") for tc in suite.iter("testcase")]
    assert names == ["strict", "lenient", "catastrophic", "alice", "bob", "carol", "preregistration", "gate"]
    assert suite.get("failures") == "0"
    assert "## Verdict: gate PASSED" in summary.read_text()


def test_gate_fail_exit_1_and_junit_failures(tmp_path, capsys):
    run = make_run(tmp_path, personalization=[-0.1, 0.0, 0.0])
    assert main(["--run", str(run), "--prereg", str(PREREG), *FAST]) == 1
    assert "gate FAILED (exit 1)" in capsys.readouterr().out
    suite = ET.parse(run / "junit.xml").getroot()
    failed = {tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None}
    assert {"lenient", "alice", "gate"} <= failed
    assert json.loads((run / "verdict.json").read_text())["gate"]["reasons"]


def test_runs_latest_symlink_and_out_dir(tmp_path, capsys):
    run = make_run(tmp_path)
    (tmp_path / "runs" / "latest").symlink_to(run.name)
    out = tmp_path / "elsewhere"
    assert main(["--runs-root", str(tmp_path / "runs"), "--out", str(out), "--prereg", str(PREREG), *FAST]) == 0
    assert (out / "verdict.json").is_file() and not (run / "verdict.json").exists()


def test_prereg_changed_exit_2_unless_allowed(tmp_path, capsys):
    run = make_run(tmp_path, prereg_sha="f" * 64)
    assert main(["--run", str(run), "--prereg", str(PREREG), *FAST]) == 2
    err = capsys.readouterr().err
    assert "pre-registration changed since the run" in err and "prereg_fast.toml" in err
    assert not (run / "verdict.json").exists() and not (run / "junit.xml").exists()
    # judged, but a NOT PRE-REGISTERED verdict fails the gate unless accepted (docs/gate.md)
    assert main(["--run", str(run), "--prereg", str(PREREG), "--allow-prereg-change", *FAST]) == 1
    assert "NOT PRE-REGISTERED" in capsys.readouterr().out
    assert main(["--run", str(run), "--prereg", str(PREREG), "--allow-prereg-change",
                 "--accept-not-preregistered", *FAST]) == 0
    assert "NOT PRE-REGISTERED" in capsys.readouterr().out
    assert json.loads((run / "verdict.json").read_text())["preregistration"]["status"] == "NOT PRE-REGISTERED"
    assert "NOT PRE-REGISTERED" in (run / "junit.xml").read_text()


def test_external_cells_default_out_beside_file(tmp_path, capsys):
    data = simulate_study(np.random.default_rng(1), n_seeds=2, n_docs=8)
    cells, docs = tmp_path / "my.csv", tmp_path / "docs.parquet"
    data.cells.select("seed", "adapter", "eval", "ppl").write_csv(cells)
    # two seeds: every per-user interval straddles LENIENT's 5%, so the gate fails (exit 1)
    assert main(["--cells", str(cells), "--prereg", str(PREREG), *FAST]) == 1
    v = json.loads((tmp_path / "my.verdict" / "verdict.json").read_text())
    assert v["bootstrap"]["mode"] == "seeds-only" and v["preregistration"]["status"] == "NOT PRE-REGISTERED"
    data.cells.write_csv(cells)
    data.docs.write_parquet(docs)
    assert main(["--cells", str(cells), "--docs", str(docs), "--prereg", str(PREREG), *FAST]) == 1
    assert json.loads((tmp_path / "my.verdict" / "verdict.json").read_text())["bootstrap"]["mode"] == "hierarchical"


def test_bad_input_exit_2_no_partial_output(tmp_path, capsys):
    cells = tmp_path / "bad.csv"
    cells.write_text("seed,adapter,eval,ppl\n0,a,a,10\n0,b,a,nan\n0,a,b,12\n0,b,b,9\n")
    assert main(["--cells", str(cells), "--prereg", str(PREREG), *FAST]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "`ppl`" in err and "row(s) 2" in err
    assert not (tmp_path / "bad.verdict").exists()
    assert main(["--run", str(tmp_path / "missing"), *FAST]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["--runs-root", str(tmp_path / "none"), *FAST]) == 2
    assert "no run found" in capsys.readouterr().err
    assert main(["--docs", str(cells), *FAST]) == 2


def test_report_failure_keeps_verdict(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path)

    assert main(["--run", str(run), "--prereg", str(PREREG), "--no-calibration"]) == 0
    assert (run / "report.html").is_file()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(reports, "render_report", broken, raising=False)
    assert main(["--run", str(run), "--prereg", str(PREREG), "--no-calibration"]) == 0
    err = capsys.readouterr().err
    assert "report failed (RuntimeError: boom)" in err
    assert (run / "verdict.json").is_file()
    assert not (run / "report.html").exists() and "removed" in err  # never an old report beside the new verdict


def test_module_entry_point_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "validation.verdict", "--cells", str(tmp_path / "x.csv")],
                       capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and "x.csv: file not found" in r.stderr


def test_validation_never_imports_rendering_libraries():
    code = ("import sys, numpy as np, validation, validation.verdict\n"
            "from validation.simulation.simulate import simulate_study\n"
            "validation.judge(simulate_study(np.random.default_rng(0), n_seeds=2, n_docs=3), "
            "rng=np.random.default_rng(0), n_resamples=10, fit=False)\n"
            "bad = [m for m in ('jinja2', 'altair') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_rng_seed_reproduces_verdict(tmp_path, capsys):
    run = make_run(tmp_path)
    outs = []
    for seed in ("5", "5", "6"):
        assert main(["--run", str(run), "--prereg", str(PREREG), "--rng-seed", seed,
                     "--accept-not-preregistered", *FAST]) == 0
        v = json.loads((run / "verdict.json").read_text())
        outs.append((v["bootstrap"]["rng_seed"], [u["ci_low"] for u in v["users"]]))
    assert outs[0] == outs[1] and outs[0][0] == 5 and outs[2][1] != outs[0][1]


def test_calibration_of_the_design_reaches_json_report_and_charts(tmp_path, monkeypatch):
    """Default CLI path: calibration computed once for the run's design, cached, then reused."""
    monkeypatch.setenv("NORMADAPT_CACHE_DIR", str(tmp_path / "cache"))
    run = make_run(tmp_path)
    args = ["--run", str(run), "--prereg", str(PREREG), "--charts", "svg"]
    assert main(args) == 0
    v = json.loads((run / "verdict.json").read_text())
    cal = v["calibration"]
    assert cal["seeds"] == 5
    cached = list((tmp_path / "cache" / "calibration").glob("*.json"))
    assert len(cached) == 1, "calibration not cached"
    from validation.calibrate import read_calibration
    assert cal == read_calibration(cached[0]).design(5).to_json()  # the JSON reports what was computed
    assert set(cal["pass_rate_at_threshold"]) == {"strict", "lenient", "catastrophic"}
    assert any("from a quick simulation" in w for w in v["warnings"])
    html = (run / "report.html").read_text(encoding="utf-8")
    assert 'id="calibration"' in html and 'id="chart-calibration"' in html
    assert (run / "charts" / "calibration.svg").read_text().lstrip().startswith("<svg")
    assert list((tmp_path / "cache" / "calibration").iterdir()), "calibration not cached"
    # the second verdict reads the cache: the same figures, and the same warning as the first
    assert main(args) == 0
    v2 = json.loads((run / "verdict.json").read_text())
    assert v2["calibration"] == cal and v2["warnings"] == v["warnings"]


def test_no_calibration_is_said_in_the_json(tmp_path):
    run = make_run(tmp_path)
    assert main(["--run", str(run), "--prereg", str(PREREG), *FAST]) == 0
    v = json.loads((run / "verdict.json").read_text())
    assert v["calibration"] is None and any("--no-calibration" in w for w in v["warnings"])
