"""The report: report.md and a self-contained report.html from a run folder's files."""
