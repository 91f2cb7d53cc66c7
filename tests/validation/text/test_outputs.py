"""junit.xml follows the pre-registered gate: a criterion outside the gate's accepted statuses
is a failed test case, one inside it passes (the gate membership is checked in one place)."""

import xml.etree.ElementTree as ET
from dataclasses import replace

import numpy as np

from validation import Prereg, judge
from validation.simulation.simulate import simulate_study
from validation.text.outputs import junit_xml


def _cases(xml: str) -> dict[str, bool]:
    """testcase name -> failed?"""
    return {tc.get("name"): tc.find("failure") is not None for tc in ET.fromstring(xml).iter("testcase")}


def test_junit_criteria_fail_exactly_where_the_gate_refuses_their_status():
    data = simulate_study(np.random.default_rng(3), n_seeds=3, n_docs=10, personalization=0.0)
    v = judge(data, Prereg(), rng=np.random.default_rng(0), n_resamples=200, fit=False)
    assert v.criterion("lenient").status.value != "PASS"  # no signal: LENIENT cannot pass
    cases = _cases(junit_xml(v))
    assert cases["lenient"] is True and cases["gate"] is True
    assert cases["strict"] is False  # the default gate accepts any STRICT status
    # a gate that accepts whatever LENIENT read passes that case (and only the gate decides)
    lenient = v.criterion("lenient").status.value
    relaxed = replace(v, settings=replace(Prereg(), gate_lenient=(lenient,)))
    assert _cases(junit_xml(relaxed))["lenient"] is False
