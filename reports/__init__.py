"""HTML report and charts of a verdict: rendering only, no statistics (docs/architecture.md).

`write_report(verdict, data, path)` writes one self-contained, offline page; `write_charts(...)`
writes the same charts as SVG or PNG files.
"""

from reports.page import chart_sections, render_report, write_charts, write_report

__all__ = ["chart_sections", "render_report", "write_charts", "write_report"]
