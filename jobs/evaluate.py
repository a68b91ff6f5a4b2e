"""Long-output benchmarks (evaluation/: LongBench-Write, LongWrite-Ruler, LonGen) for any model:

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

Written under --out (default <storage.root>/<run>/evaluation/<benchmark>-<model>/): the files
evaluation/outputs.py lists (responses.jsonl, scores.json, scores.md, lengths.png, ...).

A data or responses file whose lines are mostly unusable (more than half set aside) stops the
job before any model is called (exit 2, with the first reasons); see jobs/__init__.py for the
exit codes. The inputs, the judge's wording and the loop's per-round evaluation are
stages/benchmarks.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time

from cluster.cli import add_settings_args, positive_int, settings_from_args, text_override
from cluster.settings import Settings
from cluster.storage import Storage
from evaluation.generation import log
from evaluation.outputs import Target, respond, score
from evaluation.registry import NAMES
from evaluation.scoring import headline
from jobs import bad_input, run_job
from runtime.preflight import check_api_key, checked_location, generator_to_serve
from stages.benchmarks import judge_wording, load_rows, options

EVAL_APP = "evaluate"  # the Serve application `generate --round` deploys


def serve_round(settings: Settings, round: int | None) -> tuple[str, str, int]:
    """Serve the Generator of `round` as jobs/serve.py does; (where to send requests, model
    name, round): the app's handles or its URL, as `serving.data_path` says."""
    from actors.evaluators import serve_app
    from actors.generator_app import build_app
    from actors.serving import endpoint
    from runtime.context import RunContext

    RunContext.open(settings, "serve", tag="evaluate")
    app, model, k = build_app(settings, round, settings.serving.api_key_env)
    start = time.time()
    base_url = serve_app(settings, app, EVAL_APP)
    log(f"serving the Generator of {'round ' + str(k) if k else 'the base model'} as {model!r} "
        f"after {time.time() - start:.1f}s")
    return endpoint(settings, EVAL_APP, base_url), model, k


def default_out(settings: Settings, benchmark: str, label: str) -> Storage:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"
    root = Storage.open(settings.storage.root, settings.storage)
    return root.child(f"{settings.run.name}/evaluation/{benchmark}-{safe}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("generate", "score", "run"))
    add_settings_args(p)
    p.add_argument("--benchmark", required=True, choices=NAMES)
    p.add_argument("--data", help="the benchmark's JSONL (path or s3:// URI)")
    p.add_argument("--responses", help="score: the benchmark's rows plus `response` (JSONL)")
    p.add_argument("--round", type=int, help="evaluate our Generator of this round (0: the base model)")
    p.add_argument("--endpoint", help="evaluate a model at this OpenAI-compatible URL (same as evaluation.endpoint.base_url)")
    p.add_argument("--model", help="the endpoint's model name (same as evaluation.endpoint.model)")
    p.add_argument("--limit", type=positive_int, help="an evenly spaced subset of this many prompts")
    p.add_argument("--out", help="output folder or s3:// URI")
    return p


async def run_command(args, settings: Settings) -> dict | None:
    from actors.evaluators import client_for, judge_for  # the openai SDK loads here, not at --help

    generating = args.command in ("generate", "run")
    endpoint = settings.evaluation.endpoint
    clients = []
    model, label, served = None, "responses", False
    if generating and not args.data:
        bad_input("generate/run need --data")
    source = args.data if generating else (args.responses or args.data)
    if not source:
        bad_input("score needs --responses (the benchmark's rows plus `response`)")
    # read and checked before any model is served or called
    data = load_rows(settings, args.benchmark, source, with_response=not generating, limit=args.limit)
    if generating and not endpoint.base_url:
        check_api_key(settings)
        generator_to_serve(settings, args.round)  # exit 2 before Ray starts when there is nothing to serve
    if generating:
        if endpoint.base_url:
            client = client_for(settings, endpoint.base_url, os.environ.get(endpoint.api_key_env))
            model, label = client.role(endpoint.model), endpoint.model
        else:
            base_url, name, k = serve_round(settings, args.round)
            client, served = client_for(settings, base_url, own=True), True
            model, label = client.role(name), f"round-{k}" if k else "base"
        clients.append(client)
    elif endpoint.base_url:  # score: the endpoint is only the judge's fallback
        client = client_for(settings, endpoint.base_url, os.environ.get(endpoint.api_key_env))
        clients.append(client)
        model = client.role(endpoint.model)
    judging = args.command != "generate" and settings.evaluation.judge
    if judging and settings.serving.judge.source == "generator" and model is None:
        bad_input("evaluation.judge is on and serving.judge.source is 'generator', but nothing is being "
                  "evaluated: pass --endpoint/--round, or set serving.judge.source=endpoint")
    target = Target(label, model, judge_for(settings, model, clients) if judging else None)
    out = Storage.open(args.out, settings.storage) if args.out else default_out(settings, args.benchmark, label)
    how = options(settings)
    try:
        rows = await respond(args.benchmark, data.rows, target, out, how) if generating else data.rows
        if args.command == "generate":
            log(f"responses: {out.uri('responses.jsonl')} ({sum(r['response'] is not None for r in rows)} "
                f"of {len(rows)} answered)")
            return None
        scores = await score(args.benchmark, rows, data.rejected, target, out, how, source, generating)
    finally:
        for client in clients:
            await client.aclose()
        if served:
            from actors.evaluators import stop_app
            stop_app(EVAL_APP)
    log(f"scores: {out.uri('scores.json')} | table: {out.uri('scores.md')} | plot: {out.uri('lengths.png')}")
    return scores


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = [text_override(key, value) for key, value in
                 (("evaluation.endpoint.base_url", args.endpoint), ("evaluation.endpoint.model", args.model)) if value]
    args.overrides = list(args.overrides) + overrides
    settings = settings_from_args(args)
    if args.out:
        checked_location(args.out, "--out")
    if args.round is not None and settings.evaluation.endpoint.base_url:
        bad_input("give --round or --endpoint, not both")
    if settings.evaluation.judge:
        judge_wording(settings)  # a bad judge prompt stops the job before any model is called
    scores = asyncio.run(run_command(args, settings))
    if scores is not None:
        print(headline(scores), flush=True)
    return 0


if __name__ == "__main__":
    run_job(main)
