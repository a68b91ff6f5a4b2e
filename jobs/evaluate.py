"""Long-output benchmarks (LongBench-Write, LongWrite-Ruler, LonGen) for any model:

    python -m jobs.evaluate generate --config C --benchmark longbench-write --data lbw.jsonl \
        [--round K | --endpoint URL --model NAME] [--limit N] [--out DIR]
    python -m jobs.evaluate score --config C --benchmark longbench-write --responses responses.jsonl [--out DIR]
    python -m jobs.evaluate run ...        # generate, then score

`generate` asks our Generator of round K (served here the way jobs/serve.py serves it; no
--round and no --endpoint: the latest round) or any OpenAI-compatible endpoint (its key from
the environment variable `evaluation.endpoint.api_key_env`), with `evaluation.decoding`.
`score` scores any responses JSONL: the benchmark's fields plus `response`. Quality scores
(S_q, S, LonGen quality) need `evaluation.judge`: the judge is serving.judge (an endpoint, or
with source "generator" the model under evaluation); without a judge they are null.

Written under --out (default <storage.root>/<run>/evaluation/<benchmark>-<model>/):
    responses.jsonl   the benchmark's rows plus `response` (null, with `error`, if the call failed)
    scores.json       every score (longform/scores.py); scores.md, the same as a table
    lengths.png       produced vs required words per model, log-log
    scored.jsonl      per prompt: required and produced words, length score
    judgements.jsonl  the judge's verdicts, parseable or not (with a judge)
    rejected.jsonl    input lines set aside, with line and reason

A data or responses file whose lines are mostly unusable (more than half set aside) stops the
job before any model is called (exit 2, with the first reasons); see jobs/__init__.py for the
exit codes.

The loop calls `after_round` when `evaluation.after_each_round` is set (jobs/self_lengthen.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from dataclasses import dataclass

from actors.client import LLMClient
from cluster.cli import add_settings_args, settings_from_args
from cluster.layout import RunLayout
from cluster.settings import BenchmarkSpec, Settings
from cluster.storage import Storage, filesystem_for, with_retries
from jobs import bad_input
from jobs.report import benchmark_markdown, plot_points, required_vs_produced_figure
from longform.model import ChatModel, ModelCallError, user
from longform.params import Decoding
from longform.prompts import load_prompts
from longform.scores import (
    BENCHMARKS, BenchmarkFile, JudgeWording, evenly_spaced, judge_provenance, judge_response, parse_benchmark,
    portable_fields, prompt_of, score_benchmark, unusable,
)

EVAL_APP = "evaluate"  # the Serve application `generate --round` deploys
CHECKPOINT_EVERY_S = 30
PARTIAL = "responses.partial.jsonl"  # responses so far, rewritten every CHECKPOINT_EVERY_S


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] [evaluate] {message}", flush=True)


class Progress:
    """Counts finished items and prints a line with the rate and an ETA now and then."""

    def __init__(self, what: str, total: int, log=log, every_s: float = 10):
        self.what, self.total, self.log, self.every_s = what, total, log, every_s
        self.done = self.failed = 0
        self.started = self.printed = time.time()

    def tick(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        now = time.time()
        if self.done == self.total or now - self.printed >= self.every_s:
            self.printed = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0
            self.log(f"{self.what}: {self.done}/{self.total} ({self.failed} failed) | "
                     f"{rate:.2f}/s | ETA {eta:.0f}s")


# -- generating and judging ------------------------------------------------------------------
async def generate(model: ChatModel, benchmark: str, rows: list[dict], decoding: Decoding, concurrency: int,
                   checkpoint=None, log=log) -> list[dict]:
    """Every row plus `response`; a failed call gives `response` None and `error`. Rows that
    already have a response (from a checkpoint) are kept as they are."""
    limit = asyncio.Semaphore(concurrency)
    progress = Progress("responses", len(rows), log)
    results: dict[str, dict] = {}
    last_checkpoint = time.time()

    async def one(row: dict) -> None:
        nonlocal last_checkpoint
        if isinstance(row.get("response"), str):
            results[row["id"]] = row
            progress.tick(True)
            return
        async with limit:
            try:
                text = await model.chat(user(prompt_of(benchmark, row)),
                                        **portable_fields(decoding, f"{benchmark}/{row['id']}"))
                results[row["id"]] = {**row, "response": text, "error": None}
            except ModelCallError as err:
                results[row["id"]] = {**row, "response": None, "error": str(err)}
        progress.tick(results[row["id"]]["response"] is not None)
        if checkpoint and time.time() - last_checkpoint > CHECKPOINT_EVERY_S:
            last_checkpoint = time.time()
            checkpoint([r for r in results.values() if r["response"] is not None])

    await asyncio.gather(*(one(r) for r in rows))
    return [results[r["id"]] for r in rows]


def judge_wording(settings: Settings) -> JudgeWording | None:
    """`evaluation.judge_prompt` read and checked, or None for the built-in wording."""
    uri = settings.evaluation.judge_prompt
    if not uri:
        return None
    data = read_input(settings, uri, "evaluation.judge_prompt")
    try:
        return JudgeWording.parse(data.decode("utf-8-sig"), uri)
    except (UnicodeDecodeError, ValueError) as err:
        bad_input(f"evaluation.judge_prompt: {err}")


async def judge_all(judge: ChatModel, benchmark: str, rows: list[dict], settings: Settings, log=log) -> list[dict]:
    ev = settings.evaluation
    prompts, wording = load_prompts(settings.synthesis.prompt_dir), judge_wording(settings)
    answered = [r for r in rows if isinstance(r.get("response"), str)]
    limit = asyncio.Semaphore(ev.concurrency)
    progress = Progress("verdicts", len(answered), log)

    async def one(row: dict) -> dict:
        async with limit:
            verdict = await judge_response(judge, prompts, benchmark, row, ev.judge_decoding, ev.judge_attempts,
                                           wording)
        progress.tick(verdict["status"] == "ok")
        return verdict

    return list(await asyncio.gather(*(one(r) for r in answered)))


# -- one benchmark, end to end -----------------------------------------------------------------
@dataclass
class Target:
    """The model under evaluation (None: score given responses only) and the judge (None: no
    quality scores)."""

    label: str
    model: ChatModel | None
    judge: ChatModel | None
    clients: list[LLMClient]

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


def compact(scores: dict) -> dict:
    """The scores without per-prompt lists (those stay in scores.json), for summaries."""
    out = {k: v for k, v in scores.items() if k != "failed_responses"}
    out["failed_responses"] = len(scores["failed_responses"])
    if scores.get("quality"):
        out["quality"] = {k: v for k, v in scores["quality"].items() if k != "not_scored"}
    return out


def read_input(settings: Settings, uri: str, what: str) -> bytes:
    """An input file's bytes, through the storage retries; a missing file stops the job (exit 2)."""
    fs, path = filesystem_for(uri, settings.storage)
    if not with_retries("check", uri, settings.storage, lambda: fs.exists(path)):
        bad_input(f"{what}: file not found: {uri}")
    return with_retries("read", uri, settings.storage, lambda: fs.cat_file(path))


def load_rows(settings: Settings, benchmark: str, uri: str, with_response: bool, limit: int | None) -> BenchmarkFile:
    """The usable rows (an evenly spaced `limit` of them) and the lines set aside. A file with
    no usable row, or with more than half its lines set aside, stops the job (exit 2)."""
    stem = uri.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
    parsed = parse_benchmark(read_input(settings, uri, f"{benchmark} file"), benchmark, uri, stem, with_response)
    for r in parsed.rejected:
        log(f"set aside {r['file']} line {r['line']}: {r['reason']}")
    problem = unusable(parsed, uri, f"{benchmark} {'responses' if with_response else 'rows'}")
    if problem:
        bad_input(problem)
    return BenchmarkFile(evenly_spaced(parsed.rows, limit), parsed.rejected)


def checkpointed(out: Storage, benchmark: str, rows: list[dict]) -> list[dict]:
    """The rows, with the responses a stopped run had already checkpointed put back in."""
    if not out.exists(PARTIAL):
        return rows
    earlier = {r["id"]: r for r in out.read_jsonl(PARTIAL)}

    def reusable(row: dict) -> bool:
        old = earlier.get(row["id"])
        return old is not None and prompt_of(benchmark, old) == prompt_of(benchmark, row)

    merged = [earlier[r["id"]] if reusable(r) else r for r in rows]
    log(f"reusing {sum(map(reusable, rows))} responses from {out.uri(PARTIAL)}")
    return merged


async def respond(settings: Settings, benchmark: str, rows: list[dict], target: Target, out: Storage,
                  log=log) -> list[dict]:
    """The model's responses to every row, written to responses.jsonl (with a checkpoint that
    a rerun after a stop picks up)."""
    log(f"{benchmark}: {len(rows)} prompts to {target.label}")
    ev = settings.evaluation
    rows = await generate(target.model, benchmark, checkpointed(out, benchmark, rows), ev.decoding, ev.concurrency,
                          checkpoint=lambda done: out.write_jsonl(PARTIAL, done), log=log)
    out.write_jsonl("responses.jsonl", rows)
    out.delete(PARTIAL)
    return rows


async def score(settings: Settings, benchmark: str, rows: list[dict], rejected: list[dict], target: Target,
                out: Storage, source: str, generated: bool, log=log) -> dict:
    """Judge (with a judge), score and write every output; returns the full scores.
    `generated`: the responses come from `respond` with evaluation.decoding (recorded)."""
    verdicts = None
    if target.judge is not None:
        log(f"{benchmark}: judging {sum(isinstance(r.get('response'), str) for r in rows)} responses")
        verdicts = await judge_all(target.judge, benchmark, rows, settings, log)
    scores, scored = score_benchmark(benchmark, rows, verdicts)
    scores = {"model": target.label, "data": source, "set_aside": len(rejected), **scores,
              "decoding": settings.evaluation.decoding.model_dump() if generated else None,
              "judge": None if target.judge is None else judge_provenance(
                  target.judge, load_prompts(settings.synthesis.prompt_dir), benchmark,
                  settings.evaluation.judge_decoding, judge_wording(settings))}
    out.write_json("scores.json", scores)
    out.write_jsonl("scored.jsonl", scored)
    if verdicts is not None:
        out.write_jsonl("judgements.jsonl", verdicts)
    if rejected:
        out.write_jsonl("rejected.jsonl", rejected)
    out.write_bytes("lengths.png", required_vs_produced_figure(benchmark, {target.label: plot_points(scored)}))
    out.write_text("scores.md", benchmark_markdown(benchmark, [(target.label, scores)], "lengths.png", source))
    return scores


# -- who answers and who judges ------------------------------------------------------------------
def client_for(settings: Settings, base_url: str, api_key: str | None = None) -> LLMClient:
    s = settings.serving
    return LLMClient(base_url, api_key=api_key, timeout_s=s.request_timeout_s, max_retries=s.max_retries,
                     max_concurrency=settings.evaluation.concurrency)


def judge_for(settings: Settings, evaluated: ChatModel | None, clients: list[LLMClient],
              serving=None) -> ChatModel | None:
    """None without `evaluation.judge`. serving.judge with source "endpoint" is that endpoint;
    with source "generator" it is the loop's served judge role, or in this CLI the model under
    evaluation."""
    if not settings.evaluation.judge:
        return None
    judge = settings.serving.judge
    if judge.source == "endpoint":
        if not judge.base_url or not judge.model:
            bad_input("serving.judge.source 'endpoint' needs serving.judge.base_url and .model")
        client = client_for(settings, judge.base_url, os.environ.get(judge.api_key_env))
        clients.append(client)
        return client.role(judge.model)
    if serving is not None:
        client = client_for(settings, serving.base_url)
        clients.append(client)
        return client.role(serving.model_id("judge"))
    if evaluated is None:
        bad_input("evaluation.judge is on and serving.judge.source is 'generator', but nothing is being "
                  "evaluated: pass --endpoint/--round, or set serving.judge.source=endpoint")
    return evaluated


def serve_round(settings: Settings, round: int | None) -> tuple[str, str, int]:
    """Serve the Generator of `round` as jobs/serve.py does; (base_url, model name, round)."""
    from ray import serve

    from actors.serving import DeployError, Serving, serve_logging, wait_until_running
    from cluster.capacity import connect_checked
    from jobs.serve import build_app

    connect_checked(settings, "serve", log)
    app, model, k = build_app(settings, round)
    start = time.time()
    serve.start(http_options={"host": settings.serving.host, "port": settings.serving.port},
                logging_config=serve_logging(settings))
    serve.run(app, name=EVAL_APP, route_prefix="/", blocking=False)
    try:
        wait_until_running(EVAL_APP, start, settings.serving.deploy_timeout_s)
    except DeployError as err:
        raise SystemExit(f"error: {err}") from None
    log(f"serving the Generator of {'round ' + str(k) if k else 'the base model'} as {model!r} "
        f"after {time.time() - start:.1f}s")
    return Serving(settings).base_url, model, k


# -- the loop's hook --------------------------------------------------------------------------------
def after_round(settings: Settings, run_store: Storage, serving, k: int, log=log) -> dict:
    """Evaluate the served Generator on `evaluation.benchmarks`; outputs go to
    <run>/round-<k>/evaluation/<benchmark>/ (round 0: the base model). Returns per benchmark
    the scores without per-prompt lists and where the outputs are."""
    client = client_for(settings, serving.base_url)
    clients = [client]
    model = client.role(serving.model_id("generator"))
    target = Target("base" if k == 0 else RunLayout.label(k), model, judge_for(settings, model, clients, serving), clients)
    results = {}

    async def run_all() -> None:
        try:
            for spec in settings.evaluation.benchmarks:
                results[spec.name] = await evaluate_spec(settings, spec, target, run_store, k, log)
        finally:
            await target.aclose()

    asyncio.run(run_all())
    return results


async def evaluate_spec(settings: Settings, spec: BenchmarkSpec, target: Target, run_store: Storage, k: int,
                        log=log) -> dict:
    rel = f"{RunLayout.round_dir(k)}/evaluation/{spec.name}"
    out = run_store.child(rel)
    data = load_rows(settings, spec.name, spec.data, with_response=False, limit=spec.limit)
    rows = await respond(settings, spec.name, data.rows, target, out, log)
    scores = await score(settings, spec.name, rows, data.rejected, target, out, spec.data, True, log)
    log(headline(scores))
    return {"scores": compact(scores), "out": rel}


# -- the command line ---------------------------------------------------------------------------------
def default_out(settings: Settings, benchmark: str, label: str) -> Storage:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"
    root = Storage.open(settings.storage.root, settings.storage)
    return root.child(f"{settings.run.name}/evaluation/{benchmark}-{safe}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("generate", "score", "run"))
    add_settings_args(p)
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--data", help="the benchmark's JSONL (path or s3:// URI)")
    p.add_argument("--responses", help="score: the benchmark's rows plus `response` (JSONL)")
    p.add_argument("--round", type=int, help="evaluate our Generator of this round (0: the base model)")
    p.add_argument("--endpoint", help="evaluate a model at this OpenAI-compatible URL (same as evaluation.endpoint.base_url)")
    p.add_argument("--model", help="the endpoint's model name (same as evaluation.endpoint.model)")
    p.add_argument("--limit", type=int, help="an evenly spaced subset of this many prompts")
    p.add_argument("--out", help="output folder or s3:// URI")
    return p


async def run_command(args, settings: Settings) -> dict | None:
    generating = args.command in ("generate", "run")
    endpoint = settings.evaluation.endpoint
    clients: list[LLMClient] = []
    model, label, served = None, "responses", False
    if generating and not args.data:
        bad_input("generate/run need --data")
    source = args.data if generating else (args.responses or args.data)
    if not source:
        bad_input("score needs --responses (the benchmark's rows plus `response`)")
    # read and checked before any model is served or called
    data = load_rows(settings, args.benchmark, source, with_response=not generating, limit=args.limit)
    if generating:
        if endpoint.base_url:
            client = client_for(settings, endpoint.base_url, os.environ.get(endpoint.api_key_env))
            model, label = client.role(endpoint.model), endpoint.model
        else:
            base_url, name, k = serve_round(settings, args.round)
            client, served = client_for(settings, base_url), True
            model, label = client.role(name), f"round-{k}" if k else "base"
        clients.append(client)
    elif endpoint.base_url:  # score: the endpoint is only the judge's fallback
        client = client_for(settings, endpoint.base_url, os.environ.get(endpoint.api_key_env))
        clients.append(client)
        model = client.role(endpoint.model)
    judge = judge_for(settings, model, clients) if args.command != "generate" else None
    target = Target(label, model, judge, clients)
    out = Storage.open(args.out, settings.storage) if args.out else default_out(settings, args.benchmark, label)
    try:
        rows = await respond(settings, args.benchmark, data.rows, target, out) if generating else data.rows
        if args.command == "generate":
            log(f"responses: {out.uri('responses.jsonl')} ({sum(r['response'] is not None for r in rows)} "
                f"of {len(rows)} answered)")
            return None
        scores = await score(settings, args.benchmark, rows, data.rejected, target, out, source, generating)
    finally:
        await target.aclose()
        if served:
            from ray import serve
            serve.delete(EVAL_APP)
    log(f"scores: {out.uri('scores.json')} | table: {out.uri('scores.md')} | plot: {out.uri('lengths.png')}")
    return scores


def headline(scores: dict) -> str:
    keys = {"longbench-write": ("S_l", "S_q", "S"), "longwrite-ruler": ("S_l",),
            "longen": ("length_score", "quality_score")}[scores["benchmark"]]
    parts = [f"{k} {scores[k] if scores[k] is not None else 'null'}" for k in keys]
    quality = scores.get("quality")
    if quality:
        parts.append(f"verdicts: {quality['judged']} parsed, {quality['unparseable']} unparseable, "
                     f"{quality['judge_errors']} judge errors")
    return (f"{scores['benchmark']} / {scores['model']}: {scores['answered']}/{scores['prompts']} answered | "
            + " | ".join(parts))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = []
    if args.endpoint:
        overrides.append(f"evaluation.endpoint.base_url={args.endpoint}")
    if args.model:
        overrides.append(f"evaluation.endpoint.model={args.model}")
    args.overrides = list(args.overrides) + overrides
    settings = settings_from_args(args)
    if args.round is not None and settings.evaluation.endpoint.base_url:
        bad_input("give --round or --endpoint, not both")
    if settings.evaluation.judge:
        judge_wording(settings)  # a bad judge prompt stops the job before any model is called
    scores = asyncio.run(run_command(args, settings))
    if scores is not None:
        print(headline(scores), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
