"""A locked pre-registration means what it meant when its run started (docs/gate.md).

Two ways the same file hash could be judged differently, both closed: a setting the file leaves out
takes the value recorded in the run's manifest, not a default changed by a later version of this
suite; and a one-count run at a step count other than the `[steps] primary` the file states is NOT
PRE-REGISTERED, so separate `--steps 25` / `--steps 400` runs cannot be picked from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from common.hashing import sha256_file
from runners.settings import primary_steps_warning
from tests.support.examples import example_manifest
from validation.manifest import manifest_from_json
from validation.prereg import Prereg, PreregError, load_prereg, with_recorded_settings
from validation.simulate import simulate_study
from validation.steps_data import load_steps
from validation.steps_verdict import unregistered_count
from validation.verdict import main

FAST = ["--no-calibration", "--no-report"]
STATS = "[statistics]\nn_resamples = 300\n"


def _prereg(tmp: Path, text: str) -> Path:
    path = tmp / "prereg.toml"
    path.write_text(text)
    return path


def _run(tmp: Path, prereg: Path, *, steps: int | None = None, settings: dict | None = None) -> Path:
    data = simulate_study(np.random.default_rng(0), n_seeds=5, n_docs=10, personalization=0.2)
    cells, docs = data.cells, data.docs
    if steps is not None:  # a runner's one-count run carries its count
        cells = cells.with_columns(pl.lit(steps, pl.Int64).alias("steps"))
        docs = docs.with_columns(pl.lit(steps, pl.Int64).alias("steps"))
    run = tmp / "run"
    run.mkdir()
    cells.write_parquet(run / "cells.parquet")
    docs.write_parquet(run / "docs.parquet")
    doc = example_manifest(data.users, data.seeds).to_json()
    doc["prereg"] = {"path": str(prereg), "sha256": sha256_file(prereg), "settings": settings}
    (run / "manifest.json").write_text(json.dumps(doc))
    return run


def _recorded(**changes) -> dict:
    return {k: v for k, v in Prereg(**changes).to_json().items() if k not in ("sha256", "path")}


def test_load_prereg_knows_which_settings_the_file_states(tmp_path):
    p = load_prereg(_prereg(tmp_path, STATS + "interval_method = 'student-t'\n[steps]\nprimary = 40\n"))
    assert p.explicit == {"n_resamples", "interval_method", "primary_steps"}
    assert "explicit" not in p.to_json()
    assert load_prereg(_prereg(tmp_path, "# nothing\n")).explicit == frozenset()


def test_an_omitted_setting_takes_the_value_recorded_at_the_run(tmp_path):
    path = _prereg(tmp_path, STATS)  # says nothing of interval_method
    p = load_prereg(path)
    manifest = manifest_from_json({**example_manifest(("a", "b"), (0,)).to_json(),
                                   "prereg": {"path": str(path), "sha256": p.sha256,
                                              "settings": _recorded(interval_method="cochran-cox")}})
    resolved, warn = with_recorded_settings(p, manifest)
    assert p.interval_method == "share-blend" and resolved.interval_method == "cochran-cox"
    assert resolved.n_resamples == 300 and len(warn) == 1
    assert "`[statistics] interval_method`" in warn[0] and "'cochran-cox'" in warn[0] and "'share-blend'" in warn[0]
    # a stated setting is the file's, whatever the record says
    stated = load_prereg(_prereg(tmp_path, STATS + "interval_method = 'student-t'\n"))
    m2 = manifest_from_json({**manifest.to_json(), "prereg": {**manifest.to_json()["prereg"],
                                                               "sha256": stated.sha256}})
    assert with_recorded_settings(stated, m2) == (stated, ())
    # another file than the run's: nothing is read from the record
    assert with_recorded_settings(stated, manifest) == (stated, ())


def test_a_manifest_without_the_record_warns_of_changed_defaults(tmp_path):
    path = _prereg(tmp_path, STATS)
    p = load_prereg(path)
    manifest = manifest_from_json({**example_manifest(("a", "b"), (0,)).to_json(),
                                   "prereg": {"path": str(path), "sha256": p.sha256}})
    resolved, warn = with_recorded_settings(p, manifest)
    assert resolved == p
    assert {w.split("`")[1] for w in warn} == {"[statistics] interval_method", "[criteria] lenient_adjust"}
    assert all("State it in the file" in w for w in warn)


def test_a_bad_recorded_value_is_an_error_naming_the_manifest(tmp_path):
    path = _prereg(tmp_path, STATS)
    p = load_prereg(path)
    bad = {**_recorded(), "interval_method": "made-up"}
    manifest = manifest_from_json({**example_manifest(("a", "b"), (0,)).to_json(),
                                   "prereg": {"path": str(path), "sha256": p.sha256, "settings": bad}})
    with pytest.raises(PreregError, match=r"manifest.json `prereg.settings`: `interval_method` must be one of"):
        with_recorded_settings(p, manifest)


def test_the_verdict_judges_with_the_recorded_method(tmp_path, capsys):
    path = _prereg(tmp_path, STATS)
    run = _run(tmp_path, path, settings=_recorded(interval_method="student-t", n_resamples=300))
    assert main(["--run", str(run), "--prereg", str(path), *FAST]) == 0
    v = json.loads((run / "verdict.json").read_text())
    assert v["bootstrap"]["interval_method"] == "student-t" == v["settings"]["interval_method"]
    assert v["preregistration"]["status"] == "pre-registered"
    assert any("its value when the run started" in w for w in v["warnings"])
    # the same file and data without the record: this version's default, and other intervals
    (tmp_path / "b").mkdir()
    run2 = _run(tmp_path / "b", path)
    assert main(["--run", str(run2), "--prereg", str(path), *FAST]) == 0
    v2 = json.loads((run2 / "verdict.json").read_text())
    assert v2["bootstrap"]["interval_method"] == "share-blend"
    assert [u["ci_low"] for u in v["users"]] != [u["ci_low"] for u in v2["users"]]


def test_unregistered_count_rules(tmp_path):
    data = simulate_study(np.random.default_rng(0), n_seeds=2, n_docs=4)
    cells = pl.concat([data.cells.with_columns(pl.lit(k, pl.Int64).alias("steps")) for k in (25, 100)])
    cells.write_parquet(tmp_path / "cells.parquet")
    several = load_steps(cells=tmp_path / "cells.parquet")
    cells.filter(pl.col("steps") == 25).write_parquet(tmp_path / "one.parquet")
    one = load_steps(cells=tmp_path / "one.parquet")
    stated = Prereg(primary_steps=100, explicit=frozenset({"primary_steps"}))
    assert "trained 25 adapter steps" in unregistered_count(one, stated)
    assert unregistered_count(one, Prereg(primary_steps=100)) is None          # the file states no count
    assert unregistered_count(one, Prereg(primary_steps=25, explicit=frozenset({"primary_steps"}))) is None
    assert unregistered_count(several, stated) is None                         # judged at the primary
    assert primary_steps_warning(stated, (25,)) and "NOT PRE-REGISTERED" in primary_steps_warning(stated, (25,))
    assert primary_steps_warning(stated, (100,)) is None and primary_steps_warning(stated, (25, 100)) is None
    assert primary_steps_warning(Prereg(), (25,)) is None and primary_steps_warning(None, (25,)) is None


def test_a_run_at_another_count_than_the_stated_primary_is_not_preregistered(tmp_path, capsys):
    path = _prereg(tmp_path, STATS + "[steps]\nprimary = 100\n")
    run = _run(tmp_path, path, steps=25)
    assert main(["--run", str(run), "--prereg", str(path), *FAST]) == 1
    out = capsys.readouterr().out
    assert "*** NOT PRE-REGISTERED ***" in out
    v = json.loads((run / "verdict.json").read_text())
    assert v["preregistration"]["status"] == "NOT PRE-REGISTERED"
    assert "trained 25 adapter steps" in v["preregistration"]["note"] and not v["gate"]["passed"]
    assert main(["--run", str(run), "--prereg", str(path), *FAST, "--accept-not-preregistered"]) == 0
    # the same run against a file that fixes no count is judged at its own count, pre-registered
    free = tmp_path / "free"
    free.mkdir()
    path2 = _prereg(free, STATS)
    run2 = _run(free, path2, steps=25)
    assert main(["--run", str(run2), "--prereg", str(path2), *FAST]) == 0
    v2 = json.loads((run2 / "verdict.json").read_text())
    assert v2["preregistration"]["status"] == "pre-registered"
    assert any("not the pre-registered primary count" in w for w in v2["warnings"])
