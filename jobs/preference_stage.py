"""Moved to stages/preference.py (kept until the last importers follow)."""
from stages.preference import PreferenceStage, run_answers  # noqa: F401
