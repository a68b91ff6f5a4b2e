"""AgentWrite on the cluster (LongWriter's recipe is longform/agentwrite.py): shards of
instructions go through the shard fan-out (actors/shards.py); an `AgentWriteWorker` writes the
samples of its shards concurrently, each sample plan first and then section by section, and
keeps every finished step on storage so a rerun asks the model for none of them again.

Under the job's folder (<run>/agentwrite/, see jobs/agentwrite.py):
    prompts/shard-N.jsonl     the shard's instructions (kept as first written: a rerun uses them)
    steps/<sample>/plan-a<k>.txt, section-<nnn>.txt   every finished step, the resume cache
    samples/shard-N.jsonl     every sample, done or failed with its reason; its plan and words
    sft/shard-N.jsonl         SFT examples (chat `messages`, as longform/sft.py writes them)
    stats/shard-N.json        the commit marker, written last
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from actors.client import LLMClient
from actors.shards import Markers, ShardActor, ShardPool, run_shards, write_shards
from cluster.settings import Settings, mask_text
from cluster.storage import Storage
from longform.agentwrite import AgentWriteSpec, reason_category, sample_record, sft_example, write_sample
from longform.prompts import load_prompts


@dataclass(frozen=True)
class Writer:
    """The model every call goes to."""

    base_url: str
    model: str
    version: str  # the weights served, or "endpoint:<model>" (provenance of every example)
    api_key_env: str | None = None  # the variable holding its key, read by the workers (no key travels)


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


class AgentWriteWorker(ShardActor):
    """A Ray Data actor: writes whole shards of samples and stores their outputs."""

    def __init__(self, settings: Settings, job_root: str, writer: Writer):
        aw = settings.agentwrite
        self.settings, self.writer = settings, writer
        self.store = Storage.open(job_root, settings.storage)
        self.markers = Markers(self.store, "stats")
        self.spec = AgentWriteSpec(load_prompts(aw.prompt_dir), aw.plan_decoding, aw.write_decoding,
                                   aw.plan_attempts, aw.max_steps)
        self.meta = {"model_versions": {"writer": writer.version},
                     "decoding": {"plan": aw.plan_decoding.model_dump(), "write": aw.write_decoding.model_dump()}}

    async def work(self, shard: str) -> dict:
        serving = self.settings.serving
        records = list(self.store.read_jsonl(f"prompts/{shard}.jsonl"))
        client = LLMClient(self.writer.base_url, api_key_env=self.writer.api_key_env, timeout_s=serving.request_timeout_s,
                           max_retries=serving.max_retries, max_concurrency=serving.max_concurrency)
        model, cache = client.role(self.writer.model), StorageStepCache(self.store.child("steps"))
        limit = asyncio.Semaphore(self.settings.agentwrite.samples_in_flight)

        async def one(record: dict):
            async with limit:
                return await write_sample(record["instruction"], record["lang"], model, cache, self.spec,
                                          key=sample_key(record))

        tasks = [asyncio.ensure_future(one(r)) for r in records]
        try:
            samples = await asyncio.gather(*tasks)
        except BaseException:  # a sample that fails the shard (not a failed call: that is its record's)
            for task in tasks:  # stops its siblings before the client closes under them
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await client.aclose()
        rows = [sample_record(r, s) for r, s in zip(records, samples)]
        examples = [sft_example(r, s, self.meta) for r, s in zip(records, samples) if s.done]
        self.store.write_jsonl(f"samples/{shard}.jsonl", rows)
        self.store.write_jsonl(f"sft/{shard}.jsonl", examples)
        return {"tally": dict(shard_tally(rows)), "calls": dict(client.calls)}


# -- the driver's side -------------------------------------------------------------------------
def write_prompt_shards(store: Storage, records: list[dict], size: int) -> list[str]:
    """Shard files of the prompts; a shard already written is kept as it is (resume)."""
    return write_shards(store, "prompts", records, size)


def samples_so_far(tally: Counter) -> str:
    failed = tally["samples"] - tally["samples.done"]
    return (f"{tally['samples.done']} samples written, {failed} failed, {tally['words']} words so far, "
            f"{tally['steps.called']} calls, {tally['steps.cached']} steps from cache")


def run_writers(settings: Settings, store: Storage, writer: Writer, shards: list[str], log=print) -> dict:
    """Run every shard not yet complete; returns the merged tally and this invocation's share."""
    aw = settings.agentwrite
    run = run_shards(AgentWriteWorker, {"settings": settings, "job_root": store.uri(), "writer": writer},
                     shards, Markers(store, "stats"), ShardPool(aw.workers, aw.shards_per_worker),
                     log=log, describe=samples_so_far)
    this_run = run.total("tally", only_ran=True)
    return {"tally": run.total("tally"), "calls": dict(sorted(run.total("calls").items())), "shards": len(shards),
            "resumed_shards": run.resumed, "seconds": round(run.seconds, 1),
            "this_run": {"shards_run": len(run.ran), "steps_called": this_run["steps.called"],
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
        "storage": mask_text(store.uri()),
        "prompts": mask_text(prompts_uri),
        "writer": {"model": writer.model, "version": writer.version, "base_url": mask_text(writer.base_url)},
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
