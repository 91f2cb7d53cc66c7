"""Issue 25, verdict side: the routing rows (`avg:`, `ens:`, `noise:`) as controls, and the ROUTING,
AVERAGING and NOISE criteria, the storage bill, their outputs and the gate (docs/routing.md).

Studies are simulated (`tests.support.examples.full_study`) and the routing rows planted by copying
a chosen adapter's documents with a known shift (`tests.support.routing`), so each criterion's
expected status is known."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from common.contract import avg_name, ens_name, noise_name
from tests.support.examples import full_study
from tests.support.routing import STORAGE, default_rows, with_rows
from validation.contract.prereg import Prereg
from validation.judgment.study import judge
from validation.simulation.simulate import write_study
from validation.study_verdict import StudyVerdict
from validation.text.outputs import junit_xml, verdict_text
from validation.verdict import main

REPO = Path(__file__).resolve().parents[3]
PREREG = REPO / "tests" / "data" / "prereg_fast.toml"
B = 300


@pytest.fixture(scope="module")
def study():
    """3 users, 5 seeds, personalization large enough for STRICT to PASS (so NOISE can)."""
    _, data = full_study(n_resamples=B, personalization=0.3)
    return data


def _judge(data, prereg: Prereg | None = None):
    return judge(data, prereg or Prereg(), rng=np.random.default_rng(11), n_resamples=B)


def _status(v, name: str) -> str:
    return v.routing.criterion(name).status_text


# ---- the rows are controls: no other figure changes -----------------------------------------------

def test_routing_rows_change_no_other_figure(study):
    without = _judge(study)
    with_ = _judge(with_rows(study, default_rows(study), storage=STORAGE))
    assert with_.routing.present and not without.routing.present
    for a, b in zip(without.users, with_.users, strict=True):
        assert (a.user, a.margin, a.ci, a.best_other, a.worst_other) == (b.user, b.margin, b.ci, b.best_other,
                                                                         b.worst_other)
        np.testing.assert_array_equal(a.draws_margin, b.draws_margin)
        np.testing.assert_array_equal(a.draws_total, b.draws_total)
    assert [c.to_json() for c in without.criteria] == [c.to_json() for c in with_.criteria]
    assert without.population.to_json() == with_.population.to_json()
    assert [d.to_json() for d in without.decomposition] == [d.to_json() for d in with_.decomposition]
    assert without.model.to_json() == with_.model.to_json()
    assert without.matrix.equals(with_.matrix)   # the matrix never lists a routing row
    assert without.gate == with_.gate
    assert without.bootstrap.to_json() == with_.bootstrap.to_json()
    from validation.exploratory.similarity import similarity_for_verdict
    sim_a = similarity_for_verdict(without, study).to_json()
    sim_b = similarity_for_verdict(with_, with_rows(study, default_rows(study))).to_json()
    assert sim_a == sim_b


def test_noise_curve_starts_at_the_verdicts_margins(study):
    v = _judge(with_rows(study, default_rows(study)))
    zero = v.routing.curve_at(0.0)
    assert [(c.user, c.gain, c.ci) for c in zero] == [(u.user, u.margin, u.ci) for u in v.users]
    assert v.routing.sigmas == (0.01, 0.1, 0.3)
    assert len(v.routing.curve) == 3 * 4


# ---- each criterion can PASS and FAIL --------------------------------------------------------------

def test_planted_default_rows_pass_every_criterion(study):
    v = _judge(with_rows(study, default_rows(study), storage=STORAGE))
    assert v.criterion("strict").status.value == "PASS"
    assert (_status(v, "routing"), _status(v, "averaging"), _status(v, "noise")) == ("PASS", "PASS", "PASS")
    r = v.routing
    assert {c.against for c in r.generic if c.user == "alice"} == {"base", "loo:alice", "ens:alice"}
    assert len(r.pairs) == 3 and all(p.average_vs_base is not None for p in r.pairs)
    assert all(c.meaning for c in r.criteria)


def test_an_ensemble_as_good_as_the_own_adapter_fails_routing(study):
    rows = default_rows(study)
    rows[ens_name("alice")] = ({u: ("alice" if u == "alice" else "pooled") for u in study.users}, 0.0)
    v = _judge(with_rows(study, rows))
    assert _status(v, "routing") == "FAIL"
    assert "alice vs ens:alice" in v.routing.criterion("routing").result.explanation
    assert "optional" in v.routing.criterion("routing").meaning
    # a FAIL of an off-gate criterion does not fail the default gate
    assert v.gate.passed


def test_two_users_served_by_their_average_fail_averaging_and_it_helps_both(study):
    """A pair whose average equals each contributor's own adapter on their text (two users sharing
    one distribution): the average helps both over base, and AVERAGING fails for that pair."""
    rows = default_rows(study)
    rows[avg_name("alice", "bob")] = ({u: (u if u in ("alice", "bob") else "pooled") for u in study.users}, 0.0)
    v = _judge(with_rows(study, rows))
    assert _status(v, "averaging") == "FAIL"
    why = v.routing.criterion("averaging").result.explanation
    assert "alice vs avg:alice+bob" in why and "bob vs avg:alice+bob" in why and "carol" not in why
    pair = next(p for p in v.routing.pairs if p.name == "avg:alice+bob")
    assert pair.reading == "helps both"
    assert all(abs(c.gain) < 0.01 for c in pair.own_vs_average)
    link = v.routing.link
    assert link is not None and link.n_pairs == 3 and link.descriptive


def test_noise_at_the_registered_sigma_can_fail_and_a_noise_row_equal_to_the_own_row_passes(study):
    v = _judge(with_rows(study, default_rows(study)))   # every noise row = the own row + noise of sd 0.01
    assert _status(v, "noise") == "PASS"
    rows = default_rows(study)
    rows[noise_name("bob", 0.1)] = ({u: ("base" if u == "bob" else "bob") for u in study.users}, 0.0)
    v = _judge(with_rows(study, rows))
    assert _status(v, "noise") == "FAIL"
    assert "bob at sigma 0.1" in v.routing.criterion("noise").result.explanation
    # the other levels are on the curve, not in the criterion
    rows = default_rows(study)
    rows[noise_name("bob", 0.3)] = ({u: ("base" if u == "bob" else "bob") for u in study.users}, 0.0)
    v = _judge(with_rows(study, rows))
    assert _status(v, "noise") == "PASS"
    assert next(c for c in v.routing.curve_at(0.3) if c.user == "bob").gain < 0


def test_absent_rows_are_not_applicable(study):
    v = _judge(study)
    for name in ("routing", "averaging", "noise"):
        c = v.routing.criterion(name)
        assert c.status_text == "NOT_APPLICABLE" and "--routing" in c.reason
    assert v.routing.storage.words.startswith("storage not recorded")
    # only the averages: ROUTING and NOISE still not applicable
    only_avg = {k: r for k, r in default_rows(study).items() if k.startswith("avg:")}
    v = _judge(with_rows(study, only_avg))
    assert (_status(v, "routing"), _status(v, "averaging"), _status(v, "noise")) == (
        "NOT_APPLICABLE", "PASS", "NOT_APPLICABLE")


# ---- the gate --------------------------------------------------------------------------------------

def test_a_gated_routing_criterion_decides_the_gate(study):
    rows = default_rows(study)
    rows[ens_name("alice")] = ({u: ("alice" if u == "alice" else "pooled") for u in study.users}, 0.0)
    gated = dataclasses.replace(Prereg(), gate_routing=("PASS",))
    v = _judge(with_rows(study, rows), gated)
    assert not v.gate.passed
    assert any(r.startswith("ROUTING is FAIL") for r in v.gate.reasons)
    v = _judge(with_rows(study, default_rows(study)), gated)
    assert v.gate.passed


def _cli_study(tmp_path: Path, data) -> Path:
    out = tmp_path / "study"
    out.mkdir()
    write_study(data, out)
    return out


def _prereg_with(tmp_path: Path, gate_line: str) -> Path:
    text = PREREG.read_text()
    text = re.sub(r"^routing = .*$", gate_line, text, count=1, flags=re.M)
    assert gate_line in text
    p = tmp_path / "prereg.toml"
    p.write_text(text)
    return p


def test_gated_without_rows_is_exit_2(tmp_path, study, capsys):
    folder = _cli_study(tmp_path, study)
    prereg = _prereg_with(tmp_path, 'routing = ["PASS"]')
    code = main(["--cells", str(folder / "cells.parquet"), "--docs", str(folder / "docs.parquet"),
                 "--prereg", str(prereg), "--out", str(tmp_path / "out"), "--no-report", "--no-calibration"])
    err = capsys.readouterr().err
    assert code == 2
    assert "`[gate] routing`" in err and "no `ens:<user>` rows" in err and "--routing" in err


@pytest.mark.parametrize("name, says", [
    ("avg:alice+dave", "averages user(s) ['dave'], who are not in the study"),
    ("ens:dave", "user 'dave', who is not in the study"),
    ("noise:dave@0.1", "user 'dave', who is not in the study"),
    ("avg:bob+alice", "'avg:alice+bob'"),
    ("noise:alice@0.10", "'noise:alice@0.1'"),
])
def test_a_routing_row_naming_an_unknown_user_is_exit_2(tmp_path, study, capsys, name, says):
    source = {u: "pooled" for u in study.users}
    data = with_rows(study, {name: (source, 0.0)})
    folder = _cli_study(tmp_path, data)
    code = main(["--cells", str(folder / "cells.parquet"), "--docs", str(folder / "docs.parquet"),
                 "--prereg", str(PREREG), "--out", str(tmp_path / "out"), "--no-report", "--no-calibration"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "cells.parquet" in err and "column `adapter`" in err and repr(name) in err and says in err


def test_a_noise_level_not_preregistered_is_exit_2(tmp_path, study, capsys):
    rows = {noise_name(u, 0.2): ({v: u for v in study.users}, 0.0) for u in study.users}
    folder = _cli_study(tmp_path, with_rows(study, rows))
    code = main(["--cells", str(folder / "cells.parquet"), "--docs", str(folder / "docs.parquet"),
                 "--prereg", str(PREREG), "--out", str(tmp_path / "out"), "--no-report", "--no-calibration"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cells.parquet" in err and "column `adapter`" in err and "'noise:alice@0.2'" in err
    assert "`[routing] sigmas` [0.01, 0.1, 0.3]" in err


def test_ensemble_rows_for_some_users_only_are_refused(study):
    from validation.inputs.arrays import build_arrays
    from validation.inputs.tables import InputError

    data = with_rows(study, {ens_name("alice"): ("pooled", 0.0)})
    with pytest.raises(InputError, match=r"user\(s\) \['bob', 'carol'\] have none"):
        build_arrays(data)


# ---- outputs ---------------------------------------------------------------------------------------

def test_verdict_json_terminal_and_junit(tmp_path, study):
    data = with_rows(study, default_rows(study), storage=STORAGE)
    v = _judge(data)
    doc = json.loads(StudyVerdict(v).json_text())["routing"]
    assert doc["present"] and doc["interval_method"] == v.bootstrap.method
    assert {k: c["status"] for k, c in doc["criteria"].items()} == {"routing": "PASS", "averaging": "PASS",
                                                                    "noise": "PASS"}
    assert all(c["meaning"] for c in doc["criteria"].values())
    assert len(doc["generic"]) == 9 and len(doc["pairs"]) == 3
    assert {c["sigma"] for c in doc["noise_curve"]} == {0.0, 0.01, 0.1, 0.3}
    assert all(len(c["ci"]) == 2 and c["ci"][0] <= c["gain"] <= c["ci"][1] for c in doc["generic"])
    assert doc["storage"] == {"recorded": True, "parameters": 2304, "bytes_float32": 9216, "bytes_float16": 4608,
                              "users": 215000, "total_bytes_float32": 9216 * 215000,
                              "total_bytes_float16": 4608 * 215000, "words": doc["storage"]["words"]}
    assert "9.22 KB per user" in doc["storage"]["words"] and "1.98 GB" in doc["storage"]["words"]
    text = verdict_text(v)
    assert re.search(r"^ROUTING +PASS", text, re.M) and re.search(r"^NOISE +PASS", text, re.M)
    assert "storage: 9.22 KB per user in float32" in text and "meaning:" in text
    # not gated: one test case per applicable routing criterion, never failing
    suite = ET.fromstring(junit_xml(v).split("\n", 1)[1])
    cases = {c.get("name"): c for c in suite.iter("testcase") if c.get("classname") == "verdict.routing"}
    assert set(cases) == {"routing", "averaging", "noise"}
    assert all(c.find("failure") is None for c in cases.values())


def test_report_has_the_routing_section(study):
    import reports

    data = with_rows(study, default_rows(study), storage=STORAGE)
    v = _judge(data)
    html = reports.render_report(v, data)
    assert 'id="routing-criteria"' in html and 'id="routing-figures"' in html
    assert 'id="chart-routing_noise"' in html and 'id="chart-routing_pairs"' in html
    assert "9.22 KB per user in float32" in html
    assert "avg:alice+bob" in html
    plain = reports.render_report(_judge(study), study)
    assert 'id="routing-criteria"' in plain and "chart-routing_noise" not in plain
    assert "storage not recorded" in plain


def test_a_sealed_run_with_routing_rows_is_judged_end_to_end(tmp_path, study, capsys):
    """A run folder as the grid writes it (sealed), with the routing rows and the storage record:
    exit 0, verdict.json's `routing`, the terminal block and the report's section."""
    from common.hashing import sha256_file
    from tests.support.examples import seal_folder

    data = with_rows(study, default_rows(study), storage=STORAGE)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    write_study(data, run)
    manifest = data.manifest.to_json()
    manifest.update(run_id="r1", prereg={"path": "prereg.toml", "sha256": sha256_file(PREREG)})
    (run / "manifest.json").write_text(json.dumps(manifest))
    seal_folder(run)
    out = tmp_path / "out"
    code = main(["--run", str(run), "--prereg", str(PREREG), "--out", str(out), "--no-calibration"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    doc = json.loads((out / "verdict.json").read_text())
    assert doc["preregistration"]["status"] == "pre-registered"
    assert {k: c["status"] for k, c in doc["routing"]["criteria"].items()} == {
        "routing": "PASS", "averaging": "PASS", "noise": "PASS"}
    assert doc["routing"]["storage"]["bytes_float32"] == 9216
    assert not any(r["adapter"].startswith(("avg:", "ens:", "noise:")) for r in doc["matrix"])
    assert "routing (docs/routing.md" in stdout and "storage: 9.22 KB per user" in stdout
    html = (out / "report.html").read_text()
    assert 'id="chart-routing_noise"' in html and 'id="routing-criteria"' in html


def test_a_malformed_storage_record_is_refused_and_an_absent_one_not_recorded(study):
    from validation.inputs.tables import InputError

    bad = with_rows(study, default_rows(study), storage={**STORAGE, "bytes_float16": "4.6 KB"})
    with pytest.raises(InputError, match=r"routing\.storage\.bytes_float16` must be a whole number"):
        _judge(bad)
    external = dataclasses.replace(with_rows(study, default_rows(study), storage=None), manifest=None)
    v = _judge(external)   # external cells: no manifest, so no record
    assert not v.routing.storage.recorded and v.routing.storage.to_json()["total_bytes_float32"] is None
    with pytest.raises(InputError, match=r"the run holds routing rows but no `routing\.storage` record"):
        _judge(with_rows(study, default_rows(study), storage=None))   # a run's manifest without it


def test_routing_rows_kept_for_some_seeds_only_are_refused(study):
    """External rows kept for the best seed only would read a figure on that seed alone (an interval
    without seed-to-seed variation): refused, naming the row (the attacker's hole: NOISE's interval
    moved from [+4.7, +9.1] to [+7.3, +9.8] with seed 3's rows alone)."""
    import polars as pl

    from validation.inputs.arrays import build_arrays
    from validation.inputs.tables import InputError

    data = with_rows(study, default_rows(study))
    seed = data.cells["seed"].min()
    keep = ~pl.col("adapter").str.starts_with("noise:alice@0.1") | (pl.col("seed") == seed)
    cut = dataclasses.replace(data, cells=data.cells.filter(keep), docs=data.docs.filter(keep))
    with pytest.raises(InputError, match=r"routing row 'noise:alice@0\.1' is not scored on every seed"):
        build_arrays(cut)


@pytest.mark.parametrize("storage, says", [
    ({**STORAGE, "bytes_float32": 10**400}, "must be a whole number in [0, 2**50]"),
    ({**STORAGE, "parameters": 0}, "do not describe one adapter"),
    ({**STORAGE, "bytes_float16": STORAGE["bytes_float32"] + 1}, "float16 is never larger"),
])
def test_an_absurd_storage_record_is_refused_naming_the_field(study, storage, says):
    from validation.inputs.tables import InputError

    with pytest.raises(InputError, match=re.escape(says)):
        _judge(with_rows(study, default_rows(study), storage=storage))


def test_many_noise_levels_are_refused_before_any_run():
    from validation.contract.prereg import MAX_SIGMAS, PreregError

    levels = tuple(round(0.01 * (k + 1), 2) for k in range(MAX_SIGMAS + 1))
    with pytest.raises(PreregError, match=r"1 to 20 distinct relative noise levels"):
        Prereg(sigmas=levels, noise_sigma=0.1)
    assert Prereg(sigmas=levels[:MAX_SIGMAS], noise_sigma=0.1).sigmas == levels[:MAX_SIGMAS]
