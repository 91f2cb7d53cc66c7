"""One end-to-end run of the real commands: runners.grid (tiny preset) then validation.verdict.

The run trains 10 steps against a file that pre-registers 100: the grid warns, the manifest records
every resolved setting, and the verdict reads NOT PRE-REGISTERED unless accepted (docs/gate.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PREREG = REPO / "tests" / "data" / "prereg_fast.toml"  # prereg.toml with n_resamples = 300


@pytest.mark.slow
def test_grid_then_verdict(tmp_path):
    runs = tmp_path / "runs"
    grid = subprocess.run(
        [sys.executable, "-m", "runners.grid", "--seeds", "2", "--fixtures", "3", "--fixture-set", "synthetic",
         "--preset", "tiny", "--steps", "10", "--out", str(runs), "--prereg", str(PREREG), "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert grid.returncode == 0, grid.stderr[-2000:]
    # 10 steps against a file that pre-registers `[steps] primary = 100`: allowed, with a warning ...
    assert "`--steps 10`" in grid.stderr and "NOT PRE-REGISTERED" in grid.stderr
    manifest = json.loads((runs / "latest" / "manifest.json").read_text())
    assert manifest["prereg"]["settings"]["interval_method"] == "share-blend"  # recorded as resolved
    assert manifest["prereg"]["settings"]["primary_steps"] == 100
    r = subprocess.run([sys.executable, "-m", "validation.verdict", "--runs-root", str(runs),
                        "--prereg", str(PREREG), "--no-report"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]  # ... and never a gate that passes unaccepted
    v = json.loads((runs / "latest" / "verdict.json").read_text())
    assert v["preregistration"]["status"] == "NOT PRE-REGISTERED"
    assert "trained 10 adapter steps" in v["preregistration"]["note"] and not v["gate"]["passed"]
    assert v["bootstrap"]["mode"] == "hierarchical" and len(v["users"]) == 3
    assert (runs / "latest" / "junit.xml").is_file()
    r = subprocess.run([sys.executable, "-m", "validation.verdict", "--runs-root", str(runs),
                        "--prereg", str(PREREG), "--no-report", "--accept-not-preregistered"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    v = json.loads((runs / "latest" / "verdict.json").read_text())
    assert v["preregistration"]["accepted_not_preregistered"] is True
    assert v["gate"]["passed"] is (r.returncode == 0)
