"""End-to-end runs of the real commands: runners.grid (tiny preset) then validation.verdict.

One run pre-registers the 10 steps it trains and is judged pre-registered; the other trains 10
steps against a file that pre-registers 100: the grid warns, and the verdict reads NOT
PRE-REGISTERED unless accepted (docs/gate.md). Both record every resolved setting."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PREREG = REPO / "tests" / "data" / "prereg_fast.toml"  # prereg.toml with n_resamples = 300


def _grid(runs: Path, prereg: Path) -> subprocess.CompletedProcess:
    grid = subprocess.run(
        [sys.executable, "-m", "runners.grid", "--seeds", "2", "--fixtures", "3", "--fixture-set", "synthetic",
         "--preset", "tiny", "--steps", "10", "--out", str(runs), "--prereg", str(prereg), "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert grid.returncode == 0, grid.stderr[-2000:]
    return grid


def _verdict(runs: Path, prereg: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    r = subprocess.run([sys.executable, "-m", "validation.verdict", "--runs-root", str(runs),
                        "--prereg", str(prereg), "--no-report", *extra],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    return r, json.loads((runs / "latest" / "verdict.json").read_text())


@pytest.mark.slow
def test_grid_then_verdict(tmp_path):
    prereg = tmp_path / "prereg.toml"
    prereg.write_text(PREREG.read_text().replace("primary = 100", "primary = 10"))
    runs = tmp_path / "runs"
    grid = _grid(runs, prereg)
    assert "NOT PRE-REGISTERED" not in grid.stderr
    record = json.loads((runs / "latest" / "prereg.json").read_text())   # written when the run started
    manifest = json.loads((runs / "latest" / "manifest.json").read_text())
    assert manifest["prereg"]["settings"] == record["settings"] and record["settings"]["primary_steps"] == 10
    r, v = _verdict(runs, prereg)
    assert v["preregistration"]["status"] == "pre-registered"
    assert v["bootstrap"]["mode"] == "hierarchical" and len(v["users"]) == 3
    assert v["gate"]["passed"] is (r.returncode == 0)
    assert (runs / "latest" / "junit.xml").is_file()


@pytest.mark.slow
def test_a_run_at_another_count_than_the_primary_is_not_preregistered(tmp_path):
    runs = tmp_path / "runs"
    grid = _grid(runs, PREREG)
    # 10 steps against a file that pre-registers `[steps] primary = 100`: allowed, with a warning ...
    assert "`--steps 10`" in grid.stderr and "NOT PRE-REGISTERED" in grid.stderr
    manifest = json.loads((runs / "latest" / "manifest.json").read_text())
    assert manifest["prereg"]["settings"]["interval_method"] == "share-blend"  # recorded as resolved
    r, v = _verdict(runs, PREREG)
    assert r.returncode == 1  # ... and never a gate that passes unaccepted
    assert v["preregistration"]["status"] == "NOT PRE-REGISTERED"
    assert "trained 10 adapter steps" in v["preregistration"]["note"] and not v["gate"]["passed"]
    r, v = _verdict(runs, PREREG, "--accept-not-preregistered")
    assert v["preregistration"]["accepted_not_preregistered"] is True
    assert v["gate"]["passed"] is (r.returncode == 0)
