"""Moved to runtime/summary.py (kept until the last importers follow)."""
from reports.summary import acceptance, print_summary, probe_models, table  # noqa: F401
