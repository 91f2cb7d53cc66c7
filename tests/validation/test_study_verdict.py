"""verdict.json built in one place, with every part typed (issue 24): `StudyVerdict` holds the
Verdict and the analyses above judgment; `Verdict` types what judgment makes itself."""

from __future__ import annotations

import json
import typing

from tests.support.examples import full_study
from validation.exploratory.similarity import Similarity, similarity_for_verdict
from validation.judgment.population import PopulationResult
from validation.judgment.results import StepsResult, Verdict
from validation.judgment.routing_results import RoutingResult
from validation.study_verdict import StudyVerdict
from validation.text.summary_sentence import summary_sentence


def test_verdict_types_its_parts_and_carries_no_exploratory_analysis():
    hints = typing.get_type_hints(Verdict)
    assert hints["population"] == PopulationResult | None
    assert hints["steps"] == StepsResult | None
    assert hints["routing"] == RoutingResult | None
    assert "similarity" not in hints and "steps_analysis" not in hints
    assert typing.get_type_hints(StudyVerdict)["similarity"] == Similarity | None


def test_the_whole_document_comes_from_one_builder_in_the_documented_order():
    v, data = full_study()
    result = StudyVerdict(v, similarity=similarity_for_verdict(v, data, None))
    doc = result.to_json()
    keys = list(doc)
    assert keys[keys.index("matrix") + 1: keys.index("matrix") + 3] == ["similarity", "steps_analysis"]
    assert keys[-2:] == ["summary", "calibration"] and set(v.to_json()) < set(doc)
    assert doc["summary"] == summary_sentence(v) and doc["calibration"] is None
    assert doc["similarity"] == result.similarity.to_json() and doc["steps_analysis"] is None
    assert json.loads(result.json_text()) == json.loads(json.dumps(doc))
    assert StudyVerdict.of(v).to_json()["similarity"] is None and StudyVerdict.of(result) is result
