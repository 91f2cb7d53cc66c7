"""HTML report and charts of a verdict: rendering only, no statistics (docs/architecture.md).

`write_report(result, data, path)` writes one self-contained, offline page of a
`validation.study_verdict.StudyVerdict` (or a bare `Verdict`); `write_charts(...)`
writes the same charts as SVG or PNG files.
"""

from reports.page import chart_sections, render_report, write_charts, write_report

__all__ = ["chart_sections", "render_report", "write_charts", "write_report"]
