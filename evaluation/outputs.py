"""One benchmark for one model, with every file written to an output folder:

    rows = await respond(benchmark, rows, target, out, options)      # responses.jsonl
    scores = await score(benchmark, rows, rejected, target, out, options, source, generated=True)

    responses.jsonl   the benchmark's rows plus `response` (null, with `error`, if the call failed)
    scores.json       every score; scores.md, the same as a table
    lengths.png       produced vs required words, log-log
    scored.jsonl      per prompt: required and produced words, length score
    judgements.jsonl  the judge's verdicts, parseable or not (with a judge)
    rejected.jsonl    input lines set aside, with line and reason

`out` is any `Folder` (cluster.storage.Storage is one: a local folder or an S3 prefix). Who
answers and who judges (`Target`) and how (`Options`) are built by the caller from its settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from evaluation.benchmark import Benchmark
from evaluation.generation import PARTIAL, checkpointed, generate, log
from evaluation.judging import JudgeWording, judge_all, judge_provenance
from evaluation.plots import plot_points, required_vs_produced_figure
from evaluation.registry import get
from evaluation.scoring import score_benchmark
from evaluation.tables import benchmark_markdown
from longform.model import ChatModel
from longform.params import Decoding
from longform.prompts import PromptBook


class Folder(Protocol):
    def exists(self, rel: str) -> bool: ...
    def read_jsonl(self, rel: str) -> Iterable[dict]: ...
    def write_jsonl(self, rel: str, rows: Iterable[dict]) -> object: ...
    def write_json(self, rel: str, obj: object) -> object: ...
    def write_text(self, rel: str, text: str) -> object: ...
    def write_bytes(self, rel: str, data: bytes) -> object: ...
    def delete(self, rel: str) -> object: ...
    def uri(self, rel: str = "") -> str: ...


@dataclass(frozen=True)
class Options:
    """How rows are asked and judged (the `evaluation` settings)."""

    decoding: Decoding
    concurrency: int
    judge_decoding: Decoding
    judge_attempts: int
    prompts: PromptBook  # the built-in judge prompts
    wording: JudgeWording | None = None  # a judge prompt from a file instead


@dataclass
class Target:
    """The model under evaluation (None: score given responses only) and the judge (None: no
    quality scores)."""

    label: str
    model: ChatModel | None
    judge: ChatModel | None


async def respond(benchmark: str | Benchmark, rows: list[dict], target: Target, out: Folder, options: Options,
                  log=log) -> list[dict]:
    """The model's responses to every row, written to responses.jsonl (with a checkpoint that
    a rerun after a stop picks up)."""
    benchmark = get(benchmark)
    log(f"{benchmark.name}: {len(rows)} prompts to {target.label}")
    if out.exists(PARTIAL):
        rows = checkpointed(benchmark, rows, list(out.read_jsonl(PARTIAL)), log, out.uri(PARTIAL))
    rows = await generate(target.model, benchmark, rows, options.decoding, options.concurrency,
                          checkpoint=lambda done: out.write_jsonl(PARTIAL, done), log=log)
    out.write_jsonl("responses.jsonl", rows)
    out.delete(PARTIAL)
    return rows


async def score(benchmark: str | Benchmark, rows: list[dict], rejected: list[dict], target: Target, out: Folder,
                options: Options, source: str, generated: bool, log=log) -> dict:
    """Judge (with a judge), score and write every output; returns the full scores.
    `generated`: the responses come from `respond` with `options.decoding` (recorded)."""
    benchmark = get(benchmark)
    verdicts = None
    if target.judge is not None:
        log(f"{benchmark.name}: judging {sum(isinstance(r.get('response'), str) for r in rows)} responses")
        verdicts = await judge_all(target.judge, benchmark, rows, options.prompts, options.judge_decoding,
                                   options.judge_attempts, options.concurrency, options.wording, log)
    scores, scored = score_benchmark(benchmark, rows, verdicts)
    scores = {"model": target.label, "data": source, "set_aside": len(rejected), **scores,
              "decoding": options.decoding.model_dump() if generated else None,
              "judge": None if target.judge is None else judge_provenance(
                  target.judge, options.prompts, benchmark, options.judge_decoding, options.wording)}
    out.write_json("scores.json", scores)
    out.write_jsonl("scored.jsonl", scored)
    if verdicts is not None:
        out.write_jsonl("judgements.jsonl", verdicts)
    if rejected:
        out.write_jsonl("rejected.jsonl", rejected)
    out.write_bytes("lengths.png", required_vs_produced_figure(benchmark, {target.label: plot_points(scored)}))
    out.write_text("scores.md", benchmark_markdown(benchmark, [(target.label, scores)], "lengths.png", source))
    return scores
