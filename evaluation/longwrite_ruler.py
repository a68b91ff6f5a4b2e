"""LongWrite-Ruler: LongBench-Write's kind of rows (a prompt and its `length`) at required
lengths from 1k to 30k words, scored per required length: the words produced (mean, median,
mean / required) and S_l. No judge.
"""

from __future__ import annotations

import statistics

from evaluation.benchmark import Rubric, answered
from evaluation.longbench_write import LongBenchWrite
from longform.scores import mean_of


class LongWriteRuler(LongBenchWrite):
    """Rows, requests and per-row scores as LongBench-Write; its own summary and table."""

    name = "longwrite-ruler"
    title = "LongWrite-Ruler"
    note = "S_l: length score (0-100); words @ N: mean words produced when N were required."
    headline = ("S_l",)
    rubric: Rubric | None = None

    def summarize(self, scored: list[dict]) -> dict:
        per_length = {}
        for required in sorted({s["required"] for s in scored}):
            words = [s["produced"] for s in scored if s["required"] == required]
            per_length[str(int(required))] = {
                "n": len(words), "mean_words": mean_of(words, 1), "median_words": statistics.median(words),
                "ratio": round(statistics.fmean(words) / required, 3),
                "S_l": mean_of([s["length_score"] for s in scored if s["required"] == required], 2),
            }
        return {"S_l": mean_of([s["length_score"] for s in scored], 2), "per_length": per_length}

    def quality(self, means: dict[str, float]) -> dict:
        return {}

    def with_quality(self, scores: dict, quality: dict | None) -> dict:
        return {}

    def table(self, results: list[tuple[str, dict]]) -> tuple[list[str], list[list]]:
        lengths = sorted({int(n) for _, s in results for n in s["per_length"]})
        header = ["model", "answered", "S_l", *[f"words @ {n}" for n in lengths]]
        rows = [[label, answered(s), s["S_l"], *[s["per_length"].get(str(n), {}).get("mean_words") for n in lengths]]
                for label, s in results]
        return header, rows
