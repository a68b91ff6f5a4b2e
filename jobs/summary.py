"""Moved to runtime/summary.py (kept until the last importers follow)."""
from runtime.summary import acceptance, print_summary, probe_models, table  # noqa: F401
