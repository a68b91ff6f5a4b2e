"""Moved to stages/probe.py (kept until the last importers follow)."""
from stages.probe import answer, summarize  # noqa: F401
