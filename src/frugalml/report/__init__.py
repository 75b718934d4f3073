"""Reports: results.json → report.md, self-contained report.html, Pareto plots."""

from frugalml.report.compare import compare, pareto_front, warnings_for
from frugalml.report.render import load_results, render_html, render_markdown, write_reports

__all__ = ["compare", "load_results", "pareto_front", "render_html", "render_markdown", "warnings_for", "write_reports"]
