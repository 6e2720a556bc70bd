"""Run reports: Markdown and self-contained HTML with plots, built from a run directory."""

from lmdistill.report.build import build_report

__all__ = ["build_report"]
