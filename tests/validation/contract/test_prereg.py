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

import validation.contract.prereg_check as prereg_module
from common.hashing import sha256_file
from runners.settings import primary_steps_warning
from tests.support.examples import example_manifest, seal_folder
from validation.contract.manifest import manifest_from_json
from validation.contract.prereg import Prereg, PreregError, load_prereg
from validation.contract.prereg_check import CHANGED_DEFAULTS, with_recorded_settings
from validation.inputs.sweep import load_steps
from validation.judgment.steps import unregistered_count
from validation.simulation.simulate import simulate_study
from validation.verdict import main

FAST = ["--no-calibration", "--no-report"]
STATS = "[statistics]\nn_resamples = 300\n"


def _prereg(tmp: Path, text: str) -> Path:
    path = tmp / "prereg.toml"
    path.write_text(text)
    return path


def _run(tmp: Path, prereg: Path, *, steps: int | None = None, settings: dict | None = None,
         train: dict | None = None) -> Path:
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
    if train is not None:
        doc["config"]["train"] = train
    (run / "manifest.json").write_text(json.dumps(doc))
    seal_folder(run)  # sealed as the runner seals its runs: a pre-registered verdict needs it
    return run


def _recorded(**changes) -> dict:
    return Prereg(**changes).settings()


def test_load_prereg_knows_which_settings_the_file_states(tmp_path):
    p = load_prereg(_prereg(tmp_path, STATS + "interval_method = 'student-t'\n[steps]\nprimary = 40\n"))
    assert p.explicit == {"n_resamples", "interval_method", "primary_steps"}
    assert "explicit" not in p.to_json()
    assert load_prereg(_prereg(tmp_path, "# nothing\n")).explicit == frozenset()


@pytest.fixture
def changed_since_records(monkeypatch):
    """As if `interval_method`'s default had changed from cochran-cox and student-t after runs began
    recording their settings (today no default has: `RECORDED_FORMER_DEFAULTS` is empty)."""
    monkeypatch.setattr(prereg_module, "RECORDED_FORMER_DEFAULTS", {"interval_method": ("cochran-cox", "student-t")})


def test_an_omitted_setting_takes_the_value_recorded_at_the_run(tmp_path, changed_since_records):
    path = _prereg(tmp_path, STATS)  # says nothing of interval_method
    p = load_prereg(path)
    manifest = manifest_from_json({**example_manifest(("a", "b"), (0,)).to_json(),
                                   "prereg": {"path": str(path), "sha256": p.sha256,
                                              "settings": _recorded(interval_method="cochran-cox",
                                                                    n_resamples=300)}})
    resolved, warn = with_recorded_settings(p, manifest)
    assert p.interval_method == "share-blend" and resolved.interval_method == "cochran-cox"
    assert resolved.n_resamples == 300 and len(warn) == 1
    assert "`[statistics] interval_method`" in warn[0] and "'cochran-cox'" in warn[0] and "'share-blend'" in warn[0]
    # a stated setting recorded as stated: nothing to restore
    stated = load_prereg(_prereg(tmp_path, STATS + "interval_method = 'cochran-cox'\n"))
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


def _manifest_with(p: Prereg, path: Path, settings: dict):
    return manifest_from_json({**example_manifest(("a", "b"), (0,)).to_json(),
                               "prereg": {"path": str(path), "sha256": p.sha256, "settings": settings}})


@pytest.mark.parametrize("change, match", [
    # never a default: an edited record cannot loosen the gate of a file that leaves the gate out
    ({"gate_lenient": ["PASS", "FAIL", "INCONCLUSIVE"]},
     r"`\[gate\] lenient` = \['PASS', 'FAIL', 'INCONCLUSIVE'\], which .* never this suite's default"),
    ({"fail_on_inverted": False}, r"`\[gate\] fail_on_inverted` = False, which"),
    ({"interval_method": "made-up"}, r"`\[statistics\] interval_method` = 'made-up', which"),
    ({"interval_method": ["student-t"]}, r"`\[statistics\] interval_method` = \['student-t'\], which"),
    # a default of before the records began: a genuine record can never hold it, an edited one can
    ({"interval_method": "percentile"}, r"`\[statistics\] interval_method` = 'percentile', which"),
    ({"interval_method": "cochran-cox"}, r"`\[statistics\] interval_method` = 'cochran-cox', which"),
    ({"lenient_adjust": "none"}, r"`\[criteria\] lenient_adjust` = 'none', which"),
    # a stated setting recorded otherwise: the record is not this file's
    ({"n_resamples": 10000}, r"records `\[statistics\] n_resamples` = 10000, but .* states 300"),
    ({"made_up": 1}, r"unknown setting\(s\) \['made_up'\]"),
])
def test_a_record_can_only_restore_a_former_default(tmp_path, change, match):
    path = _prereg(tmp_path, STATS)
    p = load_prereg(path)
    with pytest.raises(PreregError, match=match) as e:
        with_recorded_settings(p, _manifest_with(p, path, {**_recorded(n_resamples=300), **change}))
    assert "restore the manifest.json the run wrote" in str(e.value)
    # today's defaults recorded: nothing to restore, nothing refused
    assert with_recorded_settings(p, _manifest_with(p, path, _recorded(n_resamples=300))) == (p, ())


def test_a_former_default_of_the_recorded_era_is_restored(tmp_path, changed_since_records):
    path = _prereg(tmp_path, STATS)
    p = load_prereg(path)
    for old in ("cochran-cox", "student-t"):
        assert with_recorded_settings(p, _manifest_with(p, path, _recorded(n_resamples=300, interval_method=old)))[0] \
            .interval_method == old
    with pytest.raises(PreregError, match="'percentile', which"):   # older than the records: never genuine
        with_recorded_settings(p, _manifest_with(p, path, _recorded(n_resamples=300, interval_method="percentile")))
    assert "percentile" in CHANGED_DEFAULTS["interval_method"]


def test_an_edited_record_cannot_pass_the_gate_of_a_locked_file(tmp_path, capsys):
    """The attack the record must not open: a file that states only `n_resamples`, a study whose
    every margin is negative, and a manifest whose record accepts every status: exit 2, no output."""
    path = _prereg(tmp_path, STATS)
    loose = {**_recorded(n_resamples=300), "gate_lenient": ["PASS", "FAIL", "INCONCLUSIVE"],
             "gate_catastrophic": ["TRIGGERED", "NOT_TRIGGERED", "INCONCLUSIVE"], "fail_on_inverted": False}
    run = _run(tmp_path, path, settings=loose)
    assert main(["--run", str(run), "--prereg", str(path), *FAST]) == 2
    assert "never this suite's default" in capsys.readouterr().err
    assert not (run / "verdict.json").exists()


def test_the_verdict_judges_with_the_recorded_method(tmp_path, capsys, changed_since_records):
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


def test_the_runner_records_the_settings_at_the_start_and_a_resume_keeps_them(tmp_path):
    """`prereg.json` is written when the run starts; a resume under other defaults (same file,
    same hash) keeps the first record, which is what the manifest carries."""
    from dataclasses import replace

    from runners.provenance import PREREG_RECORD, record_prereg_settings
    from runners.provenance import recorded_prereg_settings as _recorded
    from tests.support.runs import tiny_settings
    path = _prereg(tmp_path, STATS)
    s = replace(tiny_settings(tmp_path / "runs", path), prereg_settings=load_prereg(path))
    run = tmp_path / "run"
    run.mkdir()
    record_prereg_settings(run, s)
    first = json.loads((run / PREREG_RECORD).read_text())
    assert first["sha256"] == s.prereg_sha256 and first["settings"]["interval_method"] == "share-blend"
    later = replace(s, prereg_settings=replace(s.prereg_settings, interval_method="student-t"))  # "new defaults"
    record_prereg_settings(run, later)
    assert json.loads((run / PREREG_RECORD).read_text()) == first
    assert _recorded(run, later)["interval_method"] == "share-blend"
    # another file (another hash) starts a new record
    other = replace(s, prereg_sha256="0" * 64)
    assert _recorded(run, other) is None
    record_prereg_settings(run, other)
    assert json.loads((run / PREREG_RECORD).read_text())["sha256"] == "0" * 64


def test_cells_without_a_steps_column_are_checked_against_the_manifest(tmp_path, capsys):
    """A run table without `steps` (made before the column existed): the manifest's
    `config.train` says which count the run trained."""
    path = _prereg(tmp_path, STATS + "[steps]\nprimary = 100\n")
    run = _run(tmp_path, path, train={"steps": 25, "batch_size": 8, "lr": 0.01})
    assert main(["--run", str(run), "--prereg", str(path), *FAST]) == 1
    v = json.loads((run / "verdict.json").read_text())
    assert v["preregistration"]["status"] == "NOT PRE-REGISTERED" and "trained 25 adapter steps" in \
        v["preregistration"]["note"]
    (tmp_path / "b").mkdir()
    ok = _run(tmp_path / "b", path, train={"steps": 100, "steps_list": [100]})
    assert main(["--run", str(ok), "--prereg", str(path), *FAST]) == 0


def test_a_sweep_whose_tables_lost_their_steps_column_is_refused(tmp_path, capsys):
    path = _prereg(tmp_path, STATS + "[steps]\nprimary = 100\n")
    run = _run(tmp_path, path, train={"steps": 400, "steps_list": [25, 100, 400]})
    assert main(["--run", str(run), "--prereg", str(path), *FAST]) == 2
    assert "no `steps` column, but the run's manifest says it trained the step counts [25, 100, 400]" in \
        capsys.readouterr().err


def test_the_effective_settings_are_the_prereg_plus_the_flags_that_change_it():
    from validation.contract.prereg_check import Settings

    p = Prereg(n_resamples=300, rng_seed=11)
    plain = Settings(p)
    assert (plain.n_resamples, plain.rng_seed, plain.n_resamples_source, plain.overrides()) == (
        300, 11, "n_resamples", ())
    same = Settings(p, n_resamples_flag=300, rng_seed_flag=11)   # a flag at the pre-registered value
    assert same.overrides() == () and same.n_resamples_source == "--n-resamples"
    changed = Settings(p, n_resamples_flag=50, rng_seed_flag=3)
    assert (changed.n_resamples, changed.rng_seed) == (50, 3)
    assert changed.overrides() == ("--n-resamples 50 (pre-registered n_resamples = 300)",
                                   "--rng-seed 3 (pre-registered rng_seed = 11)")
    assert changed.prereg is p   # verdict.json `settings` keeps the pre-registered values
