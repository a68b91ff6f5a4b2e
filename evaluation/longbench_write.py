"""LongBench-Write (LongWriter): a prompt and the words it asks for (`length`).

Length: S_l per answered prompt (longform.scores.lbw_length_score, words counted with
`count_words_lbw`), its mean overall and per bucket of required length. Quality: a judge rates
6 dimensions from 1 to 5; each dimension's mean m maps to (m - 1) * 25 and S_q is the mean of
the six; S = (S_l + S_q) / 2 (null without a judge).
"""

from __future__ import annotations

from evaluation.benchmark import Rubric, answered, need, verdicts_note
from longform.scores import LBW_BUCKETS, grouped, lbw_bucket, lbw_length_score, mean_of
from longform.languages import ENGLISH
from longform.words import Language, count_words_lbw, detect_language


class LongBenchWrite:
    name = "longbench-write"
    title = "LongBench-Write"
    note = ("S_l: length score (0-100), overall and per bucket of required length; S_q: the "
            "judge's quality score (0-100); S = (S_l + S_q) / 2.")
    required_label = "required words"
    headline = ("S_l", "S_q", "S")
    rubric: Rubric | None = Rubric("judge_longbench_write", ("Relevance", "Accuracy", "Coherence", "Clarity",
                                                             "Breadth and Depth", "Reading Experience"), 1, 5)

    # -- rows (LongWrite-Ruler's are the same) ---------------------------------------------
    def check(self, row: dict) -> dict:
        need(row, "prompt", str)
        need(row, "length", int)
        if row["length"] <= 0:
            raise ValueError(f"field 'length' must be positive, got {row['length']}")
        return row

    def prompt(self, row: dict) -> str:
        return row["prompt"]

    def language(self, row: dict) -> Language:
        return detect_language(row["prompt"]) or ENGLISH.code

    def score_row(self, row: dict) -> dict:
        words = count_words_lbw(row["response"])
        return {"id": row["id"], "lang": self.language(row), "required": float(row["length"]), "produced": words,
                "length_score": lbw_length_score(row["length"], words), "bucket": lbw_bucket(row["length"])}

    # -- scores ----------------------------------------------------------------------------------
    def summarize(self, scored: list[dict]) -> dict:
        buckets = grouped(scored, "bucket", 2)
        ordered = {label: buckets.get(label, {"n": 0, "score": None}) for label, _, _ in LBW_BUCKETS}
        return {"S_l": mean_of([s["length_score"] for s in scored], 2), "S_l_buckets": ordered}

    def quality(self, means: dict[str, float]) -> dict:
        dims = {dim: round((m - 1) * 25, 2) for dim, m in means.items()}
        return {"dimensions": dims, "S_q": mean_of(list(dims.values()), 2)}

    def with_quality(self, scores: dict, quality: dict | None) -> dict:
        s_q, s_l = (quality["S_q"] if quality else None), scores["S_l"]
        return {"S_q": s_q, "S": round((s_l + s_q) / 2, 2) if s_q is not None and s_l is not None else None}

    def table(self, results: list[tuple[str, dict]]) -> tuple[list[str], list[list]]:
        buckets = [label for label, _, _ in LBW_BUCKETS]
        header = ["model", "answered", "S_l", *buckets, "S_q", "S", "verdicts"]
        rows = [[label, answered(s), s["S_l"], *[s["S_l_buckets"][b]["score"] for b in buckets],
                 s["S_q"], s["S"], verdicts_note(s)] for label, s in results]
        return header, rows
