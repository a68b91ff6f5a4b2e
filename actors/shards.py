"""The one shard fan-out: Ray Data streams a stage's shards through a pool of actors, each
actor running several shards at once. Synthesis (actors/synthesis.py) and AgentWrite
(actors/agentwrite.py) both run through `run_shards`, and so would any new stage.

A shard is the unit of work and of resume. Its input is written first (`write_shards`); its
actor writes its outputs, and then its stats file, the shard's commit marker. A shard whose
marker exists is complete and never runs again, so a stage stopped midway and started again
only runs the rest. The protocol lives here, in `ShardActor.run`: a stage's actor only does
the work of a shard (`work`) and says where its markers go (`markers`).

    class MyWorker(ShardActor):
        def __init__(self, ...):
            self.markers = Markers(store, "stats")
        async def work(self, shard): ...write outputs...; return {"tally": {...}, "calls": {...}}

    run = run_shards(MyWorker, {...constructor kwargs...}, shards, markers, ShardPool(2, 4), log, describe)

While it runs, a progress line (runtime/log.py's Progress) when a shard finishes, at most one
every PROGRESS_EVERY_S seconds and always for the last shard: shards done, the stage's records
so far (`describe`), completion tokens per second, and the time left.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from cluster.capacity import SHARD_WORKER_CPU
from cluster.layout import shard_name
from cluster.storage import Storage
from runtime.log import Progress


def write_shards(store: Storage, folder: str, records: list[dict], size: int) -> list[str]:
    """Shard files `<folder>/shard-N.jsonl` of `records`; a shard already written is kept as it
    is (resume: a rerun works on the inputs it started with)."""
    shards = []
    for start in range(0, len(records), size):
        shard = shard_name(start // size)
        rel = f"{folder}/{shard}.jsonl"
        if not store.exists(rel):
            store.write_jsonl(rel, records[start:start + size])
        shards.append(shard)
    return shards


@dataclass(frozen=True)
class Markers:
    """The commit markers of a stage's shards: `<folder>/<shard>.json` on `store`, each holding
    the shard's stats."""

    store: Storage
    folder: str

    def path(self, shard: str) -> str:
        return f"{self.folder}/{shard}.json"

    def commit(self, shard: str, stats: dict) -> None:
        self.store.write_json(self.path(shard), stats)

    def completed(self, shards: list[str]) -> dict[str, dict]:
        """The stats of every shard that is complete, by shard."""
        return {s: self.store.read_json(self.path(s)) for s in shards if self.store.exists(self.path(s))}


class ShardActor:
    """Base of the Ray Data actors `run_shards` starts. A subclass sets `self.markers` in its
    constructor and defines `async work(shard)`: write the shard's outputs and return
    `{"tally": {...}, "calls": {...}}` (its counts, and its engine calls by `<model>.<what>`)."""

    markers: Markers

    async def work(self, shard: str) -> dict:
        raise NotImplementedError

    async def __call__(self, batch: dict) -> dict:
        results = [await self.run(str(shard)) for shard in batch["shard"]]
        return {"shard": [r["shard"] for r in results], "stats": [json.dumps(r) for r in results]}

    async def run(self, shard: str) -> dict:
        start = time.time()
        result = await self.work(shard)
        stats = {"shard": shard, "seconds": round(time.time() - start, 2), "tally": result["tally"],
                 "calls": result["calls"]}
        self.markers.commit(shard, stats)  # last: the shard is complete
        return stats


@dataclass(frozen=True)
class ShardPool:
    """How wide the fan-out is: `workers` actors, each running `shards_per_worker` shards at once."""

    workers: int
    shards_per_worker: int


@dataclass
class ShardRun:
    """What `run_shards` returns: the stats of every shard (complete before or run now), in
    shard order, and which shards this call ran."""

    stats: dict[str, dict]
    ran: list[str]
    seconds: float

    def total(self, key: str, only_ran: bool = False) -> Counter:
        """The sum of every shard's `key` ("tally" or "calls"); with `only_ran`, of the shards
        this call ran."""
        out: Counter = Counter()
        for shard, stats in self.stats.items():
            if not only_ran or shard in self.ran:
                out.update(stats[key])
        return out

    @property
    def resumed(self) -> int:
        return len(self.stats) - len(self.ran)


def completion_tokens(calls: dict) -> int:
    return sum(v for k, v in calls.items() if k.endswith("completion_tokens"))


def run_shards(actor: type[ShardActor], actor_kwargs: dict, shards: list[str], markers: Markers, pool: ShardPool,
               log: Callable[[str], None] = print, describe: Callable[[Counter], str] = lambda tally: "") -> ShardRun:
    """Run every shard not yet complete on a pool of `actor`s built with `actor_kwargs`.
    `describe` turns the tally of every complete shard so far into the progress line's records."""
    done = markers.completed(shards)
    todo = [s for s in shards if s not in done]
    if done:
        log(f"resuming: {len(done)} of {len(shards)} shards already complete")
    started = time.time()
    if todo:
        import ray.data  # here: a caller that only reads markers does not load Ray Data

        dataset = ray.data.from_items([{"shard": s} for s in todo], override_num_blocks=len(todo))
        dataset = dataset.map_batches(
            actor,
            fn_constructor_kwargs=actor_kwargs,
            batch_size=1,
            num_cpus=SHARD_WORKER_CPU,
            # max_concurrent_calls_per_actor: without it Ray Data runs one task at a time on an
            # actor and only queues the others, so an actor would run one shard at a time
            compute=ray.data.ActorPoolStrategy(size=min(pool.workers, len(todo)),
                                               max_tasks_in_flight_per_actor=pool.shards_per_worker,
                                               max_concurrent_calls_per_actor=pool.shards_per_worker),
        )
        running: Counter = Counter()
        for stats in done.values():
            running.update(stats["tally"])
        progress = Progress("shards", len(shards), log, done=len(done), tokens=True)
        for row in dataset.iter_rows():
            stats = json.loads(row["stats"])
            done[stats["shard"]] = stats
            running.update(stats["tally"])
            progress.tick(tokens=completion_tokens(stats["calls"]), event=f"shard {stats['shard']} done",
                          records=describe(running))
    return ShardRun(stats={s: done[s] for s in shards}, ran=todo, seconds=time.time() - started)
