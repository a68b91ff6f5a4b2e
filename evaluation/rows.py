"""Benchmark and responses files (JSONL). A line that does not parse or lacks a field is set
aside with its line number and reason, never guessed; `length` may be written as an integral
float (300.0), not 300.5. A responses file holds the benchmark's fields plus `response` (a
string, or null when the generation failed)."""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass

from evaluation.benchmark import Benchmark
from evaluation.registry import get


@dataclass
class BenchmarkFile:
    rows: list[dict]
    rejected: list[dict]


def check_row(benchmark: Benchmark, row: dict, with_response: bool) -> dict:
    """The row with its numbers normalised (`length` 300.0 -> 300); raise ValueError saying
    what is wrong with it."""
    row = benchmark.check(dict(row))
    if with_response:
        if "response" not in row:
            raise ValueError("missing field 'response'")
        if row["response"] is not None and not isinstance(row["response"], str):
            raise ValueError(f"field 'response' must be a string or null, got {type(row['response']).__name__}")
    return row


def parse_benchmark(data: bytes, benchmark: str | Benchmark, source: str, stem: str,
                    with_response: bool = False) -> BenchmarkFile:
    """Rows of a benchmark (or responses) JSONL; a bad line is set aside with its line number
    and reason. Each row keeps its fields and gets an `id` ("<stem>-<line>" unless it has one)."""
    benchmark = get(benchmark)
    out = BenchmarkFile([], [])
    seen: set[str] = set()
    data = data.removeprefix(codecs.BOM_UTF8)  # written by some editors; not part of line 1
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"not a JSON line: {err}") from None
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            row = check_row(benchmark, row, with_response)
            row_id = str(row.get("id", f"{stem}-{line_no}"))
            if row_id in seen:
                raise ValueError(f"duplicate id {row_id!r}")
        except ValueError as err:
            out.rejected.append({"file": source, "line": line_no, "reason": str(err),
                                 "text": raw[:200].decode("utf-8", "replace")})
            continue
        seen.add(row_id)
        out.rows.append({**row, "id": row_id})
    return out


MOST_SET_ASIDE = 0.5  # a file with a larger share of its lines set aside is not worth scoring


def unusable(parsed: BenchmarkFile, source: str, what: str = "rows") -> str | None:
    """Why a parsed file should stop the job (no usable line, or more than MOST_SET_ASIDE of its
    lines set aside, with the first reasons); None when it can be used."""
    lines = len(parsed.rows) + len(parsed.rejected)
    if parsed.rows and len(parsed.rejected) <= MOST_SET_ASIDE * lines:
        return None
    if not lines:
        return f"{source}: no usable line"
    first = "; ".join(f"line {r['line']}: {r['reason']}" for r in parsed.rejected[:3])
    return (f"{source}: {len(parsed.rejected)} of {lines} lines set aside as {what} ({len(parsed.rows)} usable); "
            f"first: {first}")


def evenly_spaced(rows: list[dict], limit: int | None) -> list[dict]:
    """`limit` rows spread over the file (a benchmark is ordered by length: the head alone
    would hold only its shortest prompts)."""
    if limit is None or limit >= len(rows):
        return list(rows)
    return [rows[i * len(rows) // limit] for i in range(limit)]
