"""What `python -m validation.verdict` prints: the one-sentence answer first, no raw library
warning on the terminal (kept in verdict.json), and progress of a slow quick calibration."""

import io
import json
import warnings

import validation.verdict as verdict_cli
from tests.validation.test_verdict_cli import FAST, PREREG, make_run


def test_the_sentence_comes_first_and_raw_library_warnings_stay_off_the_terminal(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path)
    real_judge = verdict_cli.judge

    def noisy_judge(*a, **kw):   # what a numpy/statsmodels warning inside the fit looks like
        warnings.warn("invalid value encountered in divide", RuntimeWarning, stacklevel=2)
        return real_judge(*a, **kw)
    monkeypatch.setattr(verdict_cli, "judge", noisy_judge)
    assert verdict_cli.main(["--run", str(run), "--prereg", str(PREREG), *FAST]) == 0
    out, err = capsys.readouterr()
    assert "invalid value encountered" not in out + err and "RuntimeWarning" not in out + err
    assert "1 numerical library warning while judging" in out
    v = json.loads((run / "verdict.json").read_text())
    assert "raw: RuntimeWarning: invalid value encountered in divide" in v["warnings"]
    lines = out.splitlines()
    assert lines[0].startswith("VERDICT: gate PASSED") and lines[1] == v["summary"]
    assert lines[1].startswith("Own adapters beat the best other user's adapter by more than 10%")


def test_progress_is_silent_when_quick_and_reports_when_slow():
    quiet = io.StringIO()
    p = verdict_cli._Progress(quiet, quiet_s=60.0)
    for done in (70, 140, 210, 280):
        p(done, 280)
    assert quiet.getvalue() == ""
    slow = io.StringIO()
    p = verdict_cli._Progress(slow, quiet_s=0.0, every_s=0.0)
    for done in (70, 280):
        p(done, 280)
    lines = slow.getvalue().splitlines()
    assert len(lines) == 2 and "70/280 experiments" in lines[0] and "280/280 experiments" in lines[1]

