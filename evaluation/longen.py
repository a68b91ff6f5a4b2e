"""LonGen (Self-Lengthen): a query with a length constraint (`type`: about / range / above /
below, `constraint`: its text), optionally a `range` label and a `language`.

Length: the window the constraint states and the score inside / below / above it
(longform.scores, words counted with `count_words`), its mean overall and per type, range and
language. Quality: a judge rates 7 dimensions from 1 to 10; reported as the mean per
dimension and their mean (null without a judge).
"""

from __future__ import annotations

from evaluation.benchmark import Rubric, answered, need, verdicts_note
from longform.scores import LONGEN_TYPES, longen_language, longen_row_score, longen_summary, longen_window, mean_of
from longform import languages
from longform.languages import LangCode as Language


class LonGen:
    name = "longen"
    title = "LonGen"
    note = ("Length score (0-1), overall, per constraint type and per required range; quality: the "
            "judge's mean over 7 dimensions (1-10).")
    required_label = "middle of the required window"
    headline = ("length_score", "quality_score")
    rubric: Rubric | None = Rubric("judge_longen", ("Relevance", "Coherence", "Accuracy", "Consistency", "Clarity",
                                                    "Creativity", "Engagement"), 1, 10)

    def check(self, row: dict) -> dict:
        need(row, "query", str)
        need(row, "type", str)
        need(row, "constraint", str)
        longen_window(row["type"], row["constraint"])  # a window ending at 0 words is set aside here
        if row.get("language") not in (None, *languages.codes()):
            raise ValueError(f"unknown language {row['language']!r}")
        return row

    def prompt(self, row: dict) -> str:
        return row["query"]

    def language(self, row: dict) -> Language:
        return longen_language(row)

    def score_row(self, row: dict) -> dict:
        return longen_row_score(row)

    def summarize(self, scored: list[dict]) -> dict:
        return longen_summary(scored)

    def quality(self, means: dict[str, float]) -> dict:
        dims = {dim: round(m, 2) for dim, m in means.items()}
        return {"dimensions": dims, "quality": mean_of(list(dims.values()), 2)}

    def with_quality(self, scores: dict, quality: dict | None) -> dict:
        return {"quality_score": quality["quality"] if quality else None}

    def table(self, results: list[tuple[str, dict]]) -> tuple[list[str], list[list]]:
        ranges = sorted({r for _, s in results for r in s["by_range"]})
        header = ["model", "answered", "length score", *LONGEN_TYPES, *ranges, "quality", "verdicts"]
        rows = [[label, answered(s), s["length_score"], *[s["by_type"].get(t, {}).get("score") for t in LONGEN_TYPES],
                 *[s["by_range"].get(r, {}).get("score") for r in ranges], s["quality_score"], verdicts_note(s)]
                for label, s in results]
        return header, rows
