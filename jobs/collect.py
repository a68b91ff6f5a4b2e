"""Final data collection on a finished run (stages/collect.py says what it does):

    python -m jobs.collect --config configs/tiny.yaml [--run-name demo] [--set collect.min_words=...]

The final stage of the loop runs the same collection; this command is for a run made without
it, or to collect again with other settings. The Generator of the last round (served here) or
`collect.endpoint` rewrites the queries. A run that is not under the storage root (a misspelled
--run-name), or one with no kept extended response to collect, stops the job with exit 2 before
anything is written.
"""

from __future__ import annotations

import argparse
import os

from actors.client import LLMClient
from cluster.cli import add_settings_args, settings_from_args
from cluster.layout import FINAL, RunLayout
from cluster.storage import Storage
from jobs import bad_input, run_job
from runtime.context import RunContext
from runtime.log import logger
from runtime.preflight import check_api_key, loop_prompts, model_dir
from stages.collect import collect, gather

log = logger("collect")


def rewriter(settings, layout: RunLayout):
    """(ChatModel or None, RunContext or None): collect.endpoint, or the last round's Generator."""
    if not settings.collect.rewrite:
        return None, None
    s, endpoint = settings.serving, settings.collect.endpoint
    if endpoint.base_url:
        client = LLMClient(endpoint.base_url, api_key=os.environ.get(endpoint.api_key_env),
                           timeout_s=s.request_timeout_s, max_retries=s.max_retries)
        return client.role(endpoint.model), None
    # what serving and the rewrite need, checked before Ray starts
    k = layout.last_export("generator", up_to=settings.run.rounds)  # a run stopped early: its last Generator
    done = layout.stage_done(k, "train-generator") if k else None
    if not done or settings.serving.mode == "lora":
        model_dir(settings.model.base, settings, "model.base")
    loop_prompts(settings)
    check_api_key(settings)
    ctx = RunContext.open(settings, "serve", tag="collect")
    ctx.log(f"rewriting with the Generator of {f'round {k}' if done else 'the base model'}")
    ctx.serve({"generator": done["export_uri"] if done else settings.model.base})
    return ctx.model("generator", ctx.client(concurrency=False)), ctx


def run(settings) -> dict:
    root, name = Storage.open(settings.storage.root, settings.storage), settings.run.name
    if not root.exists(name):
        runs = root.list("")
        there = f"runs there: {', '.join(runs[:10])}{' ...' if len(runs) > 10 else ''}" if runs else "no run is there"
        bad_input(f"no run {name!r} under the storage root {root.uri()} (run.name / --run-name); {there}")
    layout = RunLayout.create(root, name)
    records = gather(layout, settings.run.rounds)
    if not records:
        bad_input(f"nothing to collect: run {name!r} ({layout.store.uri()}) has no kept extended response in "
                  f"rounds 1-{settings.run.rounds} (round-<k>/extensions/) or in {FINAL}/drafts/")
    log(f"{len(records)} kept extended responses in rounds 1-{settings.run.rounds}")
    model, ctx = rewriter(settings, layout)
    try:
        return collect(settings, layout, model)
    finally:
        if ctx is not None:
            ctx.serving.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.collect", description=__doc__.split("\n\n")[0])
    add_settings_args(parser)
    settings = settings_from_args(parser.parse_args(argv))
    summary = run(settings)
    t = summary["tally"]
    log(f"collected {summary['collected']} of {summary['responses']} responses "
        f"({summary['outside_window']} outside {summary['window'][0]}-{summary['window'][1]} words); "
        f"types: " + ", ".join(f"{k} {t.get(f'type.{k}', 0)}" for k in ("about", "range", "above", "below"))
        + f"; queries rewritten {t.get('rewritten', 0)}, appended {t.get('appended', 0)}")
    log(f"data: {summary['files']['data']}")
    return 0


if __name__ == "__main__":
    run_job(main)
