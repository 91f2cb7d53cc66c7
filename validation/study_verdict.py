"""What `python -m validation.verdict` reports on one study, in one object: `StudyVerdict`.

`validation.judgment.judge` returns the `Verdict` (criteria, gate, per-user statistics, population,
step counts, routing); the stages above judgment add analyses that never gate (the domain
similarity and the training-step interaction, `validation.exploratory`) and the simulated
calibration of the design (`validation.calibration`). This object holds them all with their own
types, and `StudyVerdict.to_json` is the one builder of the `verdict.json` document
(docs/formats.md); `text` is the terminal's verdict with the exploratory lines in place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from validation.calibration.results import DesignCalibration
from validation.exploratory.similarity import Similarity
from validation.exploratory.steps import StepsAnalysis
from validation.judgment.results import Verdict
from validation.text.outputs import term, verdict_text
from validation.text.summary_sentence import summary_sentence


@dataclass(frozen=True, eq=False)
class StudyVerdict:
    """The verdict of one study and what the stages above `judgment` add to it."""

    verdict: Verdict
    similarity: Similarity | None = None          # None when not computed (a failure is a warning)
    steps_analysis: StepsAnalysis | None = None   # None with one step count
    calibration: DesignCalibration | None = None  # None with `--no-calibration` or when it failed

    @classmethod
    def of(cls, result: StudyVerdict | Verdict) -> StudyVerdict:
        """`result` itself, or a bare `Verdict` with nothing added (for callers that judged alone)."""
        return result if isinstance(result, StudyVerdict) else cls(result)

    def to_json(self) -> dict[str, Any]:
        """The whole verdict.json document, its keys in the order docs/formats.md lists them."""
        doc: dict[str, Any] = {}
        for key, value in self.verdict.to_json().items():
            doc[key] = value
            if key == "matrix":
                doc["similarity"] = None if self.similarity is None else self.similarity.to_json()
                doc["steps_analysis"] = None if self.steps_analysis is None else self.steps_analysis.to_json()
        doc["summary"] = summary_sentence(self.verdict)
        doc["calibration"] = None if self.calibration is None else self.calibration.to_json()
        return doc

    def json_text(self) -> str:
        """verdict.json as written: indented, no NaN (non-finite values are null)."""
        return json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n"

    def text(self, source: str = "") -> str:
        """The readable verdict printed on stdout (`validation.text.outputs.verdict_text`), with the
        training-step interaction's lines where the verdict's exploratory readings go."""
        return verdict_text(self.verdict, source, exploratory=steps_lines(self.steps_analysis))


def steps_lines(st: StepsAnalysis | None) -> list[str]:
    """Issue 13: the per-user trend of the margin with training (`verdict.json` `steps_analysis`),
    exploratory; nothing with one step count."""
    if st is None:
        return []
    head = (f"training steps {', '.join(map(str, st.steps))} (exploratory; criteria read at "
            f"{'the primary count' if st.primary is None else st.primary}):")
    overall = [] if st.interaction is None else [f"  - {term(st.interaction.words)}"]
    model = [] if st.model is None else [
        f"  - mixed model diag x log2(steps) {st.model.interaction:+.4f} log ppl per doubling: descriptive only "
        "(its Wald p counts a trend the seeds share once per seed; verdict.json `steps_analysis.model`)"]
    return [head] + overall + [f"  - {term(s)}" for s in st.sentences()] + model + [""]
