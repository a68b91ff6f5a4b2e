"""One benchmark scored end to end: the length scores of every answered row, the judge's
quality scores when there are verdicts, and the fields that combine them; plus the short
forms a summary or a log line shows.

A response whose generation failed (`response` null) is counted and listed, and left out of
the means.
"""

from __future__ import annotations

from evaluation.benchmark import Benchmark
from evaluation.judging import quality_summary
from evaluation.registry import get


def score_benchmark(benchmark: str | Benchmark, rows: list[dict], verdicts: list[dict] | None) -> tuple[dict, list[dict]]:
    """(scores, per-row length scores). `verdicts` None: no judge, quality scores are null."""
    benchmark = get(benchmark)
    answered = [r for r in rows if isinstance(r.get("response"), str)]
    failed = [{"id": r["id"], "error": r.get("error")} for r in rows if not isinstance(r.get("response"), str)]
    scored = [benchmark.score_row(r) for r in answered]
    scores = {"benchmark": benchmark.name, "prompts": len(rows), "answered": len(answered),
              "failed_responses": failed, **benchmark.summarize(scored)}
    quality = quality_summary(benchmark, verdicts) if verdicts is not None and benchmark.rubric else None
    scores.update(benchmark.with_quality(scores, quality))
    scores["quality"] = quality
    return scores, scored


def compact(scores: dict) -> dict:
    """The scores without per-prompt lists (those stay in scores.json), for summaries."""
    out = {k: v for k, v in scores.items() if k != "failed_responses"}
    out["failed_responses"] = len(scores["failed_responses"])
    if scores.get("quality"):
        out["quality"] = {k: v for k, v in scores["quality"].items() if k != "not_scored"}
    return out


def headline(scores: dict) -> str:
    """One line: answered prompts, the benchmark's headline scores and how the verdicts went."""
    parts = [f"{k} {scores[k] if scores[k] is not None else 'null'}" for k in get(scores["benchmark"]).headline]
    quality = scores.get("quality")
    if quality:
        parts.append(f"verdicts: {quality['judged']} parsed, {quality['unparseable']} unparseable, "
                     f"{quality['judge_errors']} judge errors")
    return (f"{scores['benchmark']} / {scores['model']}: {scores['answered']}/{scores['prompts']} answered | "
            + " | ".join(parts))
