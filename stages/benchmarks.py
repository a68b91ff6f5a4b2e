"""Benchmarks inside a run (evaluation/ says what each one measures): the inputs of
`jobs.evaluate` read and checked before any model is called, and the loop's evaluation of the
served Generator after a round (`evaluation.after_each_round`, and the base and final model
when the final stage runs).

    <run>/round-<k>/evaluation/<benchmark>/   responses.jsonl, scores.json, scores.md, lengths.png ...
"""

from __future__ import annotations

import asyncio

from cluster.errors import bad_input
from cluster.layout import RunLayout
from cluster.settings import Settings
from cluster.storage import Storage
from evaluation.generation import log
from evaluation.judging import JudgeWording
from evaluation.outputs import Options, Target, respond, score
from evaluation.rows import BenchmarkFile, evenly_spaced, parse_benchmark, unusable
from evaluation.scoring import compact, headline
from longform.prompts import load_prompts
from runtime.preflight import read_input, stem_of


# -- inputs: read and checked before any model is served or called ---------------------------
def judge_wording(settings: Settings) -> JudgeWording | None:
    """`evaluation.judge_prompt` read and checked, or None for the built-in wording."""
    uri = settings.evaluation.judge_prompt
    if not uri:
        return None
    try:
        return JudgeWording.parse(read_input(uri, settings, "evaluation.judge_prompt").decode("utf-8-sig"), uri)
    except (UnicodeDecodeError, ValueError) as err:
        bad_input(f"evaluation.judge_prompt: {err}")


def options(settings: Settings) -> Options:
    ev = settings.evaluation
    return Options(ev.decoding, ev.concurrency, ev.judge_decoding, ev.judge_attempts,
                   load_prompts(settings.synthesis.prompt_dir), judge_wording(settings) if ev.judge else None)


def load_rows(settings: Settings, benchmark: str, uri: str, with_response: bool, limit: int | None) -> BenchmarkFile:
    """The usable rows (an evenly spaced `limit` of them) and the lines set aside. A file with
    no usable row, or with more than half its lines set aside, stops the job (exit 2)."""
    data = read_input(uri, settings, f"{benchmark} file")
    parsed = parse_benchmark(data, benchmark, uri, stem_of(uri), with_response)
    for r in parsed.rejected:
        log(f"set aside {r['file']} line {r['line']}: {r['reason']}")
    problem = unusable(parsed, uri, f"{benchmark} {'responses' if with_response else 'rows'}")
    if problem:
        bad_input(problem)
    return BenchmarkFile(evenly_spaced(parsed.rows, limit), parsed.rejected)


# -- the loop's hook ---------------------------------------------------------------------------
def after_round(settings: Settings, run_store: Storage, serving, k: int, log=log) -> dict:
    """Evaluate the served Generator on `evaluation.benchmarks`; outputs go to
    <run>/round-<k>/evaluation/<benchmark>/ (round 0: the base model). Returns per benchmark
    the scores without per-prompt lists and where the outputs are."""
    from actors.evaluators import client_for, judge_for

    client = client_for(settings, serving.endpoint, own=True)
    clients = [client]
    model = client.role(serving.model_id("generator"))
    target = Target("base" if k == 0 else RunLayout.label(k), model, judge_for(settings, model, clients, serving))
    how, results = options(settings), {}

    async def run_all() -> None:
        try:
            for spec in settings.evaluation.benchmarks:
                rel = f"{RunLayout.round_dir(k)}/evaluation/{spec.name}"
                out = run_store.child(rel)
                data = load_rows(settings, spec.name, spec.data, with_response=False, limit=spec.limit)
                rows = await respond(spec.name, data.rows, target, out, how, log)
                scores = await score(spec.name, rows, data.rejected, target, out, how, spec.data, True, log)
                log(headline(scores))
                results[spec.name] = {"scores": compact(scores), "out": rel}
        finally:
            for c in clients:
                await c.aclose()

    asyncio.run(run_all())
    return results
