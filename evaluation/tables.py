"""Markdown tables: the generic cell format and table (used by the run report too), a
benchmark's table of models or rounds, and scores.md of one evaluation."""

from __future__ import annotations

from evaluation.benchmark import Benchmark
from evaluation.registry import get

NULL_NOTE = "A dash is null: no judge configured, or nothing to score."


def fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]


def benchmark_table(benchmark: str | Benchmark, results: list[tuple[str, dict]]) -> list[str]:
    """One row per model (or round) with the benchmark's headline scores."""
    return md_table(*get(benchmark).table(results))


def benchmark_note(benchmark: str | Benchmark) -> str:
    """What the columns mean, and what a dash means."""
    return get(benchmark).note + " " + NULL_NOTE


def benchmark_markdown(benchmark: str | Benchmark, results: list[tuple[str, dict]], image: str, source: str) -> str:
    """scores.md of one evaluation: the table, the plot, failed responses and unscored verdicts."""
    benchmark = get(benchmark)
    lines = [f"# {benchmark.title}", "", f"Data: `{source}`.", "",
             *benchmark_table(benchmark, results), "", benchmark_note(benchmark), "",
             f"![produced vs required words]({image})", ""]
    for label, scores in results:
        if scores["failed_responses"]:
            lines.append(f"{label}: {len(scores['failed_responses'])} responses failed to generate "
                         f"(left out of the scores; see responses.jsonl).")
        not_scored = (scores.get("quality") or {}).get("not_scored", [])
        if not_scored:
            lines += ["", f"{label}: verdicts not scored ({len(not_scored)}):", ""]
            lines += [f"- `{v['id']}`: {v['status']}: {v['reason']}" for v in not_scored]
    return "\n".join(lines) + "\n"
