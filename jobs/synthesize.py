"""One round of data synthesis through Ray Data: instruction shards stream through a pool of
actors, each running several shards at once against the served Generator and Extender.

A shard is the unit of work and of resume. Its input is written first
(`round-k/instructions/shard-N.jsonl`); its outputs (drafts, extensions, both SFT sets) are
written when it finishes, and its stats file last: a shard with a stats file is complete and
is never run again, so a job stopped mid-round and submitted again only runs the rest.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import ray
import ray.data

from actors.client import LLMClient
from cluster.layout import RunLayout, shard_name
from cluster.settings import Settings
from cluster.storage import Storage
from longform.prompts import load_prompts
from longform.round import RoundSpec, run_shard
from longform.sampling import seeded_rng
from longform.sft import to_alpaca

OUTPUT_KINDS = {"drafts": "drafts", "extensions": "extensions",
                "sft-generator": "generator_sft", "sft-extender": "extender_sft"}


@dataclass(frozen=True)
class RoundPlan:
    round: int
    base_url: str
    model_ids: dict[str, str]  # role -> model id to request
    versions: dict[str, str]  # role -> weights being served (for provenance)


def select_instructions(settings: Settings, records: list[dict], round: int) -> list[dict]:
    wanted = settings.synthesis.instructions_per_round
    if wanted is None or wanted >= len(records):
        return list(records)
    rng = seeded_rng(settings.run.seed, round, "instructions")
    return sorted(rng.sample(records, wanted), key=lambda r: r["id"])


def write_instruction_shards(layout: RunLayout, round: int, records: list[dict], size: int) -> list[str]:
    """Shard files of this round's instructions; kept as they are if already written (resume)."""
    shards = []
    for start in range(0, len(records), size):
        shard = shard_name(start // size)
        rel = layout.shard_file(round, "instructions", shard)
        if not layout.store.exists(rel):
            layout.store.write_jsonl(rel, records[start:start + size])
        shards.append(shard)
    return shards


def served_client(settings: Settings, plan: RoundPlan) -> LLMClient:
    """The default engine of a shard: the served roles over HTTP."""
    serving = settings.serving
    return LLMClient(plan.base_url, timeout_s=serving.request_timeout_s,
                     max_retries=serving.max_retries, max_concurrency=serving.max_concurrency)


# (settings, plan) -> an object with `.role(model_id)` (a ChatModel), `.calls` and `aclose()`;
# benchmarks pass their own (a zero-cost engine, a recording client)
ClientFactory = Callable[[Settings, RoundPlan], LLMClient]


class ShardWorker:
    """A Ray Data actor: runs whole shards of a round and writes their outputs."""

    def __init__(self, settings: Settings, run_root: str, plan: RoundPlan, client_factory: ClientFactory = served_client):
        self.settings, self.plan, self.client_factory = settings, plan, client_factory
        self.layout = RunLayout(Storage.open(run_root, settings.storage))
        self.spec = RoundSpec(
            round=plan.round, seed=settings.run.seed, params=settings.synthesis.method,
            decoding=settings.synthesis.decoding, prompts=load_prompts(settings.synthesis.prompt_dir),
            versions=plan.versions,
        )

    async def __call__(self, batch: dict) -> dict:
        results = [await self.run(str(shard)) for shard in batch["shard"]]
        return {"shard": [r["shard"] for r in results], "stats": [json.dumps(r) for r in results]}

    async def run(self, shard: str) -> dict:
        start = time.time()
        k, store = self.plan.round, self.layout.store
        instructions = list(store.read_jsonl(self.layout.shard_file(k, "instructions", shard)))
        client = self.client_factory(self.settings, self.plan)
        try:
            result = await run_shard(
                shard, instructions, client.role(self.plan.model_ids["generator"]),
                client.role(self.plan.model_ids["extender"]), self.spec,
            )
        finally:
            await client.aclose()
        for kind, attr in OUTPUT_KINDS.items():
            store.write_jsonl(self.layout.shard_file(k, kind, shard), getattr(result, attr))
        for role in ("generator", "extender"):  # the same SFT sets for LLaMA-Factory users
            store.write_jsonl(self.layout.shard_file(k, f"alpaca-{role}", shard),
                              [to_alpaca(e) for e in getattr(result, f"{role}_sft")])
        stats = {"shard": shard, "seconds": round(time.time() - start, 2),
                 "tally": dict(result.tally), "calls": dict(client.calls)}
        store.write_json(self.layout.stats_file(k, shard), stats)  # last: the shard is complete
        return stats


def completed(layout: RunLayout, round: int, shards: list[str]) -> dict[str, dict]:
    done = {}
    for shard in shards:
        rel = layout.stats_file(round, shard)
        if layout.store.exists(rel):
            done[shard] = layout.store.read_json(rel)
    return done


def run_synthesis(settings: Settings, layout: RunLayout, plan: RoundPlan, shards: list[str], log=print,
                  client_factory: ClientFactory = served_client) -> dict:
    """Run every shard not yet complete; returns the merged tally, calls and timings.
    `calls_this_run` counts only the engine calls of the shards this call ran."""
    done = completed(layout, plan.round, shards)
    todo = [s for s in shards if s not in done]
    if done:
        log(f"[{RunLayout.label(plan.round)}] resuming: {len(done)} of {len(shards)} shards already complete")
    start, tokens = time.time(), 0
    if todo:
        syn = settings.synthesis
        dataset = ray.data.from_items([{"shard": s} for s in todo], override_num_blocks=len(todo))
        dataset = dataset.map_batches(
            ShardWorker,
            fn_constructor_kwargs={"settings": settings, "run_root": layout.store.uri(), "plan": plan,
                                   "client_factory": client_factory},
            batch_size=1,
            num_cpus=0.25,
            # max_concurrent_calls_per_actor: without it Ray Data runs one task at a time on an
            # actor and only queues the others, so an actor would run one shard, not shards_per_worker
            compute=ray.data.ActorPoolStrategy(size=syn.workers, max_tasks_in_flight_per_actor=syn.shards_per_worker,
                                               max_concurrent_calls_per_actor=syn.shards_per_worker),
        )
        for row in dataset.iter_rows():
            stats = json.loads(row["stats"])
            done[stats["shard"]] = stats
            tokens += sum(v for k, v in stats["calls"].items() if k.endswith("completion_tokens"))
            elapsed = time.time() - start
            finished = len(done) - (len(shards) - len(todo))
            eta = elapsed / finished * (len(todo) - finished)
            log(f"[{RunLayout.label(plan.round)}] shard {stats['shard']} done ({len(done)}/{len(shards)}): "
                f"{stats['tally'].get('sft.generator', 0)} SFT examples | "
                f"{tokens / max(elapsed, 1e-9):.0f} tok/s | ETA {eta:.0f}s")
    tally: Counter = Counter()
    calls: Counter = Counter()
    calls_this_run: Counter = Counter()
    for shard, stats in done.items():
        tally.update(stats["tally"])
        calls.update(stats["calls"])
        if shard in todo:
            calls_this_run.update(stats["calls"])
    return {"tally": dict(sorted(tally.items())), "calls": dict(sorted(calls.items())),
            "calls_this_run": dict(sorted(calls_this_run.items())),
            "shards": len(shards), "resumed_shards": len(shards) - len(todo),
            "seconds": round(time.time() - start, 2)}


def sft_files(layout: RunLayout, round: int, shards: list[str], role: str) -> list[str]:
    return [layout.store.uri(layout.shard_file(round, f"sft-{role}", s)) for s in shards]
