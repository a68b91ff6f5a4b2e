"""AgentWrite data synthesis on the cluster (LongWriter's recipe, longform/agentwrite.py):

    python -m jobs.agentwrite --config configs/tiny.yaml --prompts prompts.jsonl [--run-name aw] [--set ...]

Ray Data streams shards of instructions through a pool of actors; an actor writes the samples
of its shards concurrently, each sample plan first and then section by section. The writer is
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
import asyncio
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import ray
import ray.data

from actors.client import LLMClient
from cluster.cli import add_settings_args, settings_from_args
from cluster.layout import shard_name
from cluster.ray_cluster import connect, embedded
from cluster.settings import Settings
from cluster.storage import Storage
from jobs import bad_input
from jobs.preflight import check_agentwrite_inputs
from jobs.report import write_agentwrite_report
from longform.agentwrite import AgentWriteSpec, reason_category, sample_record, sft_example, write_sample
from longform.prompts import load_prompts

ROOT = "agentwrite"  # the job's folder inside the run folder


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] [agentwrite] {message}", flush=True)


@dataclass(frozen=True)
class Writer:
    """The model every call goes to."""

    base_url: str
    model: str
    version: str  # the weights served, or "endpoint:<model>" (provenance of every example)
    api_key: str | None = field(default=None, repr=False)


def sample_key(record: dict) -> str:
    """A storage-safe name for a sample's steps; the digest keeps an edited instruction that
    kept its id from reusing the old instruction's steps."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", record["id"])[:80]
    digest = hashlib.sha256(f"{record['lang']}\n{record['instruction']}".encode()).hexdigest()[:8]
    return f"{safe}-{digest}"


class StorageStepCache:
    """`longform.agentwrite.StepCache` on storage: one small file per finished step. Writes are
    atomic, so a step file that exists is complete."""

    def __init__(self, store: Storage):
        self.store = store

    async def get(self, key: str) -> str | None:
        try:
            return await asyncio.to_thread(self.store.read_text, f"{key}.txt")
        except FileNotFoundError:
            return None

    async def put(self, key: str, text: str) -> None:
        await asyncio.to_thread(self.store.write_text, f"{key}.txt", text)


def shard_tally(rows: list[dict]) -> Counter:
    tally: Counter = Counter()
    for row in rows:
        tally["samples"] += 1
        tally["steps.called"] += row["called"]
        tally["steps.cached"] += row["cached"]
        if row["status"] == "done":
            tally["samples.done"] += 1
            tally["sections"] += row["sections"]
            tally["words"] += row["words"]
        else:
            tally[f"samples.failed.{reason_category(row['reason'])}"] += 1
    return tally


class AgentWriteWorker:
    """A Ray Data actor: writes whole shards of samples and stores their outputs."""

    def __init__(self, settings: Settings, job_root: str, writer: Writer):
        aw = settings.agentwrite
        self.settings, self.writer = settings, writer
        self.store = Storage.open(job_root, settings.storage)
        self.spec = AgentWriteSpec(load_prompts(aw.prompt_dir), aw.plan_decoding, aw.write_decoding,
                                   aw.plan_attempts, aw.max_steps)
        self.meta = {"model_versions": {"writer": writer.version},
                     "decoding": {"plan": aw.plan_decoding.model_dump(), "write": aw.write_decoding.model_dump()}}

    async def __call__(self, batch: dict) -> dict:
        results = [await self.run(str(shard)) for shard in batch["shard"]]
        return {"shard": [r["shard"] for r in results], "stats": [json.dumps(r) for r in results]}

    async def run(self, shard: str) -> dict:
        start = time.time()
        serving = self.settings.serving
        records = list(self.store.read_jsonl(f"prompts/{shard}.jsonl"))
        client = LLMClient(self.writer.base_url, api_key=self.writer.api_key, timeout_s=serving.request_timeout_s,
                           max_retries=serving.max_retries, max_concurrency=serving.max_concurrency)
        model, cache = client.role(self.writer.model), StorageStepCache(self.store.child("steps"))
        limit = asyncio.Semaphore(self.settings.agentwrite.samples_in_flight)

        async def one(record: dict):
            async with limit:
                return await write_sample(record["instruction"], record["lang"], model, cache, self.spec,
                                          key=sample_key(record))

        try:
            samples = await asyncio.gather(*(one(r) for r in records))
        finally:
            await client.aclose()
        rows = [sample_record(r, s) for r, s in zip(records, samples)]
        examples = [sft_example(r, s, self.meta) for r, s in zip(records, samples) if s.done]
        self.store.write_jsonl(f"samples/{shard}.jsonl", rows)
        self.store.write_jsonl(f"sft/{shard}.jsonl", examples)
        stats = {"shard": shard, "seconds": round(time.time() - start, 2), "tally": dict(shard_tally(rows)),
                 "calls": dict(client.calls)}
        self.store.write_json(f"stats/{shard}.json", stats)  # last: the shard is complete
        return stats


# -- the driver ------------------------------------------------------------------------------
def write_prompt_shards(store: Storage, records: list[dict], size: int) -> list[str]:
    """Shard files of the prompts; a shard already written is kept as it is (resume)."""
    shards = []
    for start in range(0, len(records), size):
        shard = shard_name(start // size)
        if not store.exists(f"prompts/{shard}.jsonl"):
            store.write_jsonl(f"prompts/{shard}.jsonl", records[start:start + size])
        shards.append(shard)
    return shards


def completed(store: Storage, shards: list[str]) -> dict[str, dict]:
    return {s: store.read_json(f"stats/{s}.json") for s in shards if store.exists(f"stats/{s}.json")}


def progress_line(stats: dict, done: int, total: int, started: float, finished_now: int, todo: int,
                  tally: Counter) -> str:
    elapsed = time.time() - started
    eta = elapsed / finished_now * (todo - finished_now)
    failed = tally["samples"] - tally["samples.done"]
    return (f"shard {stats['shard']} done ({done}/{total} shards): {tally['samples.done']} samples written, "
            f"{failed} failed, {tally['words']} words so far | {tally['steps.called']} calls, "
            f"{tally['steps.cached']} steps from cache | ETA {eta:.0f}s")


def run_shards(settings: Settings, store: Storage, writer: Writer, shards: list[str]) -> dict:
    """Run every shard not yet complete; returns the merged tally and this invocation's share."""
    aw = settings.agentwrite
    done = completed(store, shards)
    todo = [s for s in shards if s not in done]
    if done:
        log(f"resuming: {len(done)} of {len(shards)} shards already complete")
    started, this_run = time.time(), Counter()
    if todo:
        dataset = ray.data.from_items([{"shard": s} for s in todo], override_num_blocks=len(todo))
        dataset = dataset.map_batches(
            AgentWriteWorker,
            fn_constructor_kwargs={"settings": settings, "job_root": store.uri(), "writer": writer},
            batch_size=1,
            num_cpus=0.25,
            # without max_concurrent_calls_per_actor an actor runs one shard and queues the rest
            compute=ray.data.ActorPoolStrategy(size=min(aw.workers, len(todo)),
                                               max_tasks_in_flight_per_actor=aw.shards_per_worker,
                                               max_concurrent_calls_per_actor=aw.shards_per_worker),
        )
        running: Counter = Counter()
        for stats in done.values():
            running.update(stats["tally"])
        for row in dataset.iter_rows():
            stats = json.loads(row["stats"])
            done[stats["shard"]] = stats
            running.update(stats["tally"])
            this_run.update(stats["tally"])
            this_run["shards"] += 1
            log(progress_line(stats, len(done), len(shards), started, this_run["shards"], len(todo), running))
    tally: Counter = Counter()
    calls: Counter = Counter()
    for stats in done.values():
        tally.update(stats["tally"])
        calls.update(stats["calls"])
    return {"tally": tally, "calls": dict(sorted(calls.items())), "shards": len(shards),
            "resumed_shards": len(shards) - len(todo), "seconds": round(time.time() - started, 1),
            "this_run": {"shards_run": this_run["shards"], "steps_called": this_run["steps.called"],
                         "steps_cached": this_run["steps.cached"]}}


def failures(store: Storage, shards: list[str], limit: int = 20) -> list[dict]:
    rows = [r for s in shards if store.exists(f"samples/{s}.jsonl") for r in store.read_jsonl(f"samples/{s}.jsonl")]
    return [{"id": r["id"], "reason": r["reason"]} for r in rows if r["status"] == "failed"][:limit]


def summarize(settings: Settings, store: Storage, prompts_uri: str, writer: Writer, inputs: dict,
              result: dict, shards: list[str]) -> dict:
    tally = result["tally"]
    failed = {k.split(".", 2)[2]: v for k, v in sorted(tally.items()) if k.startswith("samples.failed.")}
    written = tally["samples.done"]
    return {
        "run": settings.run.name,
        "storage": store.uri(),
        "prompts": prompts_uri,
        "writer": {"model": writer.model, "version": writer.version, "base_url": writer.base_url},
        "inputs": inputs,
        "samples": {"total": tally["samples"], "done": written, "failed": sum(failed.values()),
                    "failed_by_reason": failed, "first_failures": failures(store, shards)},
        "words": {"total": tally["words"], "mean_per_sample": round(tally["words"] / written, 1) if written else 0,
                  "sections": tally["sections"]},
        "steps": {"called": tally["steps.called"], "cached": tally["steps.cached"]},
        "this_run": result["this_run"],
        "calls": result["calls"],
        "shards": result["shards"],
        "resumed_shards": result["resumed_shards"],
        "sft_files": [store.uri(f"sft/{s}.jsonl") for s in shards],
        "seconds": result["seconds"],
    }


def start_writer(settings: Settings, run_store: Storage):
    """(Writer, Serving or None): the configured endpoint, or our own served Generator."""
    endpoint = settings.agentwrite.endpoint
    if endpoint.base_url:
        return Writer(endpoint.base_url, endpoint.model, f"endpoint:{endpoint.model}",
                      os.environ.get(endpoint.api_key_env)), None
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
    log(f"writer answering after {serving.deploy({'generator': weights}):.1f}s")
    return Writer(serving.base_url, serving.model_id("generator"), weights), serving


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
        result = run_shards(settings, store, writer, shards)
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
    sys.exit(main())
