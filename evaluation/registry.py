"""Every benchmark by name. Adding one: its file in this package, and one entry here; the
settings (evaluation.benchmarks[].name), --benchmark and the report follow."""

from __future__ import annotations

from evaluation.benchmark import Benchmark, Rubric
from evaluation.longbench_write import LongBenchWrite
from evaluation.longen import LonGen
from evaluation.longwrite_ruler import LongWriteRuler

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (LongBenchWrite(), LongWriteRuler(), LonGen())}
NAMES = tuple(BENCHMARKS)
RUBRICS: dict[str, Rubric] = {name: b.rubric for name, b in BENCHMARKS.items() if b.rubric is not None}


def get(benchmark: str | Benchmark) -> Benchmark:
    """The benchmark of that name (a Benchmark is returned as it is); ValueError for an unknown name."""
    if not isinstance(benchmark, str):
        return benchmark
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r} (expected one of {', '.join(NAMES)})")
    return BENCHMARKS[benchmark]
