"""Negative (and one positive) controls through the real commands: grid, then verdict.

- `null`: Newton's Opticks split round-robin into three pseudo-users (real text, no author
  difference; the base model is pretrained on the Django docs, both fetched and cached);
- `synthetic-null`: generated users with no planted effect;
- `synthetic`: generated users with a planted per-user shift, which must be found.

Each runs `python -m runners.grid --seeds 5 --fixtures 3 --fixture-set SET --preset tiny` into a
temporary `--out` and `python -m validation.verdict --run DIR`. The commands inherit the test
session's cache (tests/conftest.py): the corpora the user has fetched are linked from their cache,
base models persist in pytest's cache, so a second session skips pretraining; the calibration
is written into the session's temporary directory. About 1-2 minutes per set on 2 CPU cores once
cached.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GRID = ["--seeds", "5", "--fixtures", "3", "--preset", "tiny", "-q"]


def _run(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def grid_and_verdict(fixture_set: str, out: Path) -> tuple[dict, int]:
    """Run the two commands; returns (verdict.json, verdict exit code)."""
    grid = _run(["runners.grid", *GRID, "--fixture-set", fixture_set, "--out", str(out)], 1200)
    assert grid.returncode == 0, f"runners.grid --fixture-set {fixture_set} failed:\n{grid.stderr[-3000:]}"
    runs = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, f"expected one run directory under {out}; got {runs}"
    verdict = _run(["validation.verdict", "--run", str(runs[0]), "--no-report"], 600)
    assert verdict.returncode in (0, 1), \
        f"validation.verdict failed (exit {verdict.returncode}):\n{verdict.stderr[-3000:]}"
    return json.loads((runs[0] / "verdict.json").read_text()), verdict.returncode


def _statuses(v: dict) -> dict[str, str]:
    return {name: c["status"] for name, c in v["criteria"].items()}


@pytest.mark.slow
@pytest.mark.parametrize("fixture_set", ["synthetic-null", "null"])
def test_no_signal_passes_neither_strict_nor_lenient(fixture_set, tmp_path):
    v, code = grid_and_verdict(fixture_set, tmp_path / "runs")
    s = _statuses(v)
    assert s["strict"] != "PASS" and s["lenient"] != "PASS", (fixture_set, s, v["users"])
    assert code == 1 and not v["gate"]["passed"]
    # no user shows a margin anywhere near the LENIENT bar
    assert all(u["ci_low"] < v["criteria"]["lenient"]["threshold"] for u in v["users"])


@pytest.mark.slow
def test_planted_signal_passes_at_its_planted_strength(tmp_path):
    """The planted shift (signal 0.5) gives margins of about 8-25% with the tiny preset: the gate
    (LENIENT PASS, CATASTROPHIC NOT_TRIGGERED, no inverted user) must pass. STRICT's 10% bar
    sits inside the range the planted strength buys (one user at 7.5-8.9% on a fresh cache), so
    STRICT is not asserted: it may read either way at this strength."""
    v, code = grid_and_verdict("synthetic", tmp_path / "runs")
    s = _statuses(v)
    assert s["lenient"] == "PASS" and s["catastrophic"] == "NOT_TRIGGERED", (s, v["users"])
    assert code == 0 and v["gate"]["passed"], v["gate"]
    assert all(u["ci_low"] >= v["criteria"]["lenient"]["threshold"] for u in v["users"])
    assert not any(u["inverted"] for u in v["users"])
    assert v["model"]["diagonal_effect"] < 0 and v["model"]["diagonal_ci"][1] < 0
