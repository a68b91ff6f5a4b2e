"""What every benchmark answers, whatever its name (`Benchmark`), and the judge's rubric one may
carry. The evaluate job, the scores, the tables and the report ask these, never the name.

A benchmark's file defines one class with these fields and methods; registry.py lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from longform.words import Language


@dataclass(frozen=True)
class Rubric:
    """A judge prompt template (longform/prompts) and the dimensions its reply must score,
    each a number in [low, high]."""

    template: str
    dimensions: tuple[str, ...]
    low: int
    high: int


class Benchmark(Protocol):
    name: str                   # in settings (evaluation.benchmarks[].name) and --benchmark
    title: str                  # table and plot titles
    note: str                   # what the table's columns mean
    required_label: str         # the plot's x axis
    headline: tuple[str, ...]   # the scores a one-line summary prints
    rubric: Rubric | None       # None: no quality score

    def check(self, row: dict) -> dict:
        """The row with its numbers normalised; ValueError saying what is wrong with it."""

    def prompt(self, row: dict) -> str:
        """What the row asks the model to write (the generation request and the judge's instruction)."""

    def language(self, row: dict) -> Language:
        """The language a judge prompt is worded in."""

    def score_row(self, row: dict) -> dict:
        """One answered row: id, lang, required and produced words, length_score, and what the
        summary groups by."""

    def summarize(self, scored: list[dict]) -> dict:
        """The length scores of all answered rows."""

    def quality(self, means: dict[str, float]) -> dict:
        """From the judge's mean per dimension: `dimensions` and the benchmark's quality score."""

    def with_quality(self, scores: dict, quality: dict | None) -> dict:
        """The headline fields that combine length and quality (None quality: no judge)."""

    def table(self, results: list[tuple[str, dict]]) -> tuple[list[str], list[list]]:
        """Header and one row per (label, scores): a model or a round."""


def need(row: dict, field: str, kind: type) -> None:
    """Check that `row[field]` is there and a `kind`; a whole float is read as an int (300.0 -> 300)."""
    if field not in row:
        raise ValueError(f"missing field {field!r}")
    value = row[field]
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"field {field!r} must be a whole number, got {value!r}")
        row[field] = value = int(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"field {field!r} must be {kind.__name__}, got {type(value).__name__}")


def answered(scores: dict) -> str:
    """"answered/prompts", for a table cell."""
    return f"{scores['answered']}/{scores['prompts']}"


def verdicts_note(scores: dict) -> str:
    """How the judge's verdicts went, for a table cell."""
    quality = scores.get("quality")
    if not quality:
        return "no judge"
    return f"{quality['judged']} judged, {quality['unparseable']} unparseable, {quality['judge_errors']} errors"
