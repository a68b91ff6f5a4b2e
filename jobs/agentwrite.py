"""AgentWrite data synthesis on the cluster (LongWriter's recipe, longform/agentwrite.py):

    python -m jobs.agentwrite --config configs/tiny.yaml --prompts prompts.jsonl [--run-name aw] [--set ...]

The shards of instructions go through the shard fan-out (actors/shards.py) to AgentWrite
actors (actors/agentwrite.py); an actor writes the samples of its shards concurrently, each
sample plan first and then section by section. This command reads and checks the prompts,
finds the writer, runs the shards and writes the summary and report. The writer is
an OpenAI-compatible endpoint when `agentwrite.endpoint.base_url` is set; otherwise this job
serves `agentwrite.model` (default: `model.base`) as the Generator on the cluster, the way the
loop does (actors.serving), and takes it down at the end.

Under <run>/agentwrite/ on storage:
    prompts/shard-N.jsonl     the shard's instructions (kept as first written: a rerun uses them)
    steps/<sample>/plan-a<k>.txt, section-<nnn>.txt   every finished step, the resume cache
    samples/shard-N.jsonl     every sample, done or failed with its reason; its plan and words
    sft/shard-N.jsonl         SFT examples (chat `messages`, as longform/sft.py writes them)
    stats/shard-N.json        written last: the shard is complete and never runs again
    rejected/prompts.jsonl    prompt lines set aside, with file, line and reason
    summary.json, report.md

A job stopped at any point and run again with the same run name skips complete shards, and in
the others reads every finished step from the cache instead of asking the model again. The SFT
shards train the Generator with training/ as they are (`training.train_role(..., data_files)`).
"""

from __future__ import annotations

import argparse
import time

from actors.agentwrite import Writer, run_writers, summarize, write_prompt_shards
from cluster.cli import add_settings_args, settings_from_args
from cluster.ray_cluster import connect, embedded
from cluster.settings import Settings
from cluster.storage import Storage
from jobs import bad_input, run_job
from runtime.preflight import check_agentwrite_inputs
from reports.agentwrite import write_agentwrite_report

ROOT = "agentwrite"  # the job's folder inside the run folder


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] [agentwrite] {message}", flush=True)


def start_writer(settings: Settings, run_store: Storage):
    """(Writer, Serving or None): the configured endpoint, or our own served Generator."""
    endpoint = settings.agentwrite.endpoint
    if endpoint.base_url:
        return Writer(endpoint.base_url, endpoint.model, f"endpoint:{endpoint.model}", endpoint.api_key_env), None
    # imported here: Serve LLM loads vLLM, which takes tens of seconds and is not needed otherwise
    from actors.serving import Serving
    from cluster.capacity import CapacityError, require_fit

    try:
        for warning in require_fit(settings, "serve", embedded=embedded(settings)):
            log(f"WARNING (the autoscaler may still add nodes): {warning}")
    except CapacityError as err:
        bad_input(str(err))  # a cluster the settings can never fit, as connect_checked says
    weights = settings.agentwrite.model or settings.model.base
    serving = Serving(settings, run_store=run_store)
    log(f"serving the writer: {weights}")
    try:
        seconds = serving.deploy({"generator": weights})
    except BaseException:  # a deploy that failed or timed out holds the cluster's resources: let them go
        serving.release()
        raise
    log(f"writer answering after {seconds:.1f}s")
    return Writer(serving.endpoint, serving.model_id("generator"), weights,
                  api_key_env=settings.serving.api_key_env), serving


def run(settings: Settings, prompts_uri: str) -> dict:
    run_store = Storage.open(settings.storage.root, settings.storage).child(settings.run.name)
    store = run_store.child(ROOT)
    parsed = check_agentwrite_inputs(settings, prompts_uri)  # read and checked as before connecting
    if parsed.rejected:
        store.write_jsonl("rejected/prompts.jsonl", parsed.rejected)
        for r in parsed.rejected:
            log(f"set aside {r['file']} line {r['line']}: {r['reason']}")
    inputs = {"prompts": len(parsed.records), "set_aside": len(parsed.rejected),
              "set_aside_file": f"{ROOT}/rejected/prompts.jsonl" if parsed.rejected else None}
    if not parsed.records:
        bad_input(f"no usable instruction in {prompts_uri}")
    shards = write_prompt_shards(store, parsed.records, settings.agentwrite.shard_size)
    log(f"{len(parsed.records)} prompts in {len(shards)} shards, {len(parsed.rejected)} lines set aside")
    writer, serving = start_writer(settings, run_store)
    try:
        result = run_writers(settings, store, writer, shards, log=log)
    finally:
        if serving is not None:
            serving.release()
    summary = summarize(settings, store, prompts_uri, writer, inputs, result, shards)
    store.write_json("summary.json", summary)
    return summary


def print_summary(summary: dict) -> None:
    samples, words = summary["samples"], summary["words"]
    print(f"\n== AgentWrite run {summary['run']!r} ({summary['seconds']} s) ==")
    print(f"prompts {summary['inputs']['prompts']} ({summary['inputs']['set_aside']} lines set aside) | "
          f"samples done {samples['done']} / {samples['total']} | words {words['total']} "
          f"(mean {words['mean_per_sample']}) | calls {summary['steps']['called']}, "
          f"steps from cache {summary['steps']['cached']}")
    for reason, count in samples["failed_by_reason"].items():
        print(f"  failed: {reason} x{count}")
    for failure in samples["first_failures"][:5]:
        print(f"    e.g. {failure['id']}: {failure['reason'][:160]}")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.agentwrite", description=__doc__.split("\n\n")[0])
    add_settings_args(parser)
    parser.add_argument("--prompts", help="instruction JSONL, a path or s3:// URI (default: agentwrite.prompts)")
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    prompts_uri = args.prompts or settings.agentwrite.prompts
    if not prompts_uri:
        parser.error("give --prompts or set agentwrite.prompts")
    check_agentwrite_inputs(settings, prompts_uri)  # exit 2 on a missing or empty input before Ray starts
    log(connect(settings))
    summary = run(settings, prompts_uri)
    print_summary(summary)
    store = Storage.open(summary["storage"], settings.storage)
    log(f"SFT shards: {store.uri('sft')}")
    log(f"summary: {store.uri('summary.json')}")
    log(f"report:  {write_agentwrite_report(store, summary)}")
    return 0


if __name__ == "__main__":
    run_job(main)
