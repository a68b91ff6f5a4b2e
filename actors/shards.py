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

A stage of many shards puts several in one Ray Data block (`shards_per_block`): Ray Data costs
~6 ms and ~7 KiB of the driver's memory per block, which at 1M records in shards of 64 was a fifth
of the stage's time. The fan-out's width does not change with it: each actor runs at most
`shards_per_worker` shards at once, whatever its blocks hold.

While it runs, a progress line (runtime/log.py's Progress) when a shard finishes, at most one
every PROGRESS_EVERY_S seconds and always for the last shard: shards done, the stage's records
so far (`describe`), completion tokens per second, and the time left.
"""

from __future__ import annotations

import asyncio
import json
import math
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
    is (resume: a rerun works on the inputs it started with). One listing of the folder finds
    them, not one existence check per shard (on S3, one request per 1,000 files)."""
    written = set(store.list(folder, ".jsonl"))
    shards = []
    for start in range(0, len(records), size):
        shard = shard_name(start // size)
        if f"{shard}.jsonl" not in written:
            store.write_jsonl(f"{folder}/{shard}.jsonl", records[start:start + size])
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

    def exists(self, shard: str) -> bool:
        return self.store.exists(self.path(shard))

    def complete(self, shards: list[str]) -> set[str]:
        """Which of `shards` are complete: one listing of the folder, not a check per shard."""
        listed = set(self.store.list(self.folder, ".json"))
        return {s for s in shards if f"{s}.json" in listed}

    def read(self, shard: str) -> dict:
        return self.store.read_json(self.path(shard))


class ShardActor:
    """Base of the actors `run_shards` starts (in Ray Data's actor pool, through `ShardRunner`).
    A subclass sets `self.markers` in its constructor and defines `async work(shard)`: write the
    shard's outputs and return `{"tally": {...}, "calls": {...}}` (its counts, and its engine
    calls by `<model>.<what>`)."""

    markers: Markers

    async def work(self, shard: str) -> dict:
        raise NotImplementedError

    async def run(self, shard: str) -> dict:
        start = time.time()
        result = await self.work(shard)
        stats = {"shard": shard, "seconds": round(time.time() - start, 2), "tally": result["tally"],
                 "calls": result["calls"]}
        self.markers.commit(shard, stats)  # last: the shard is complete
        return stats


class ShardRunner:
    """What Ray Data's actor pool runs: builds the stage's actor and runs the shards of each block
    it is given, at most `at_once` at a time over all the blocks it holds. Ray retries a block
    whose actor died: a shard of it that already committed is not run again (its marker's stats
    are its result), so a retry redoes only the unfinished shards, as with one shard a block."""

    def __init__(self, actor: type[ShardActor], actor_kwargs: dict, at_once: int):
        self.actor = actor(**actor_kwargs)
        self.at_once = at_once
        self.slots: asyncio.Semaphore | None = None  # made on the event loop that runs the shards

    async def __call__(self, batch: dict) -> dict:
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.at_once)
        shards = [str(shard) for shard in batch["shard"]]
        # Only a block of several shards can come back with some of them committed: a one-shard
        # block is retried because its shard did not finish, and needs no check. A check per
        # shard, not a listing of the folder: at 1M records it holds 15,625 markers.
        done = {shard for shard in shards if self.actor.markers.exists(shard)} if len(shards) > 1 else set()
        tasks = [asyncio.ensure_future(self.run(shard, shard in done)) for shard in shards]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # a failed shard fails its block: its siblings stop too
                task.cancel()
            raise
        return {"shard": [r["shard"] for r in results], "stats": [json.dumps(r) for r in results]}

    async def run(self, shard: str, done: bool = False) -> dict:
        if done:
            return self.actor.markers.read(shard)
        async with self.slots:
            return await self.actor.run(shard)


@dataclass(frozen=True)
class ShardPool:
    """How wide the fan-out is: `workers` actors, each running `shards_per_worker` shards at once."""

    workers: int
    shards_per_worker: int

    @property
    def slots(self) -> int:
        return self.workers * self.shards_per_worker


# A block holds several shards only while the stage still has at least this many blocks for each
# slot of the pool, so that the blocks spread evenly over the actors and a stage's tail is short.
BLOCKS_PER_SLOT = 32
MAX_SHARDS_PER_BLOCK = 8  # 8: Ray Data's cost a shard is then below the method's own


def shards_per_block(shards: int, pool: ShardPool) -> int:
    """How many shards a Ray Data block holds: as many as leave at least BLOCKS_PER_SLOT blocks
    for each of the pool's slots, from 1 to MAX_SHARDS_PER_BLOCK (1M records in shards of 64 on
    a pool of 2 x 4: 8; a round of a few hundred shards: 1)."""
    return max(1, min(MAX_SHARDS_PER_BLOCK, shards // (BLOCKS_PER_SLOT * pool.slots)))


@dataclass
class ShardRun:
    """What `run_shards` returns: the sums of the shards' "tally" and "calls" over every shard
    (complete before or run now) and over the shards this call ran, which shards it ran, and how
    many were complete before. Only sums: the driver keeps no shard's stats once it has added
    them, so a stage of 60,000 shards costs it no more memory than one of 60."""

    totals: dict[str, Counter]
    ran_totals: dict[str, Counter]
    ran: list[str]
    resumed: int
    seconds: float

    def total(self, key: str, only_ran: bool = False) -> Counter:
        """The sum of every shard's `key` ("tally" or "calls"); with `only_ran`, of the shards
        this call ran."""
        return Counter(self.ran_totals[key] if only_ran else self.totals[key])


def no_stats() -> dict[str, Counter]:
    return {"tally": Counter(), "calls": Counter()}


def add_stats(totals: dict[str, Counter], stats: dict) -> None:
    for key, counts in totals.items():
        counts.update(stats[key])


def completion_tokens(calls: dict) -> int:
    return sum(v for k, v in calls.items() if k.endswith("completion_tokens"))


def run_shards(actor: type[ShardActor], actor_kwargs: dict, shards: list[str], markers: Markers, pool: ShardPool,
               log: Callable[[str], None] = print, describe: Callable[[Counter], str] = lambda tally: "") -> ShardRun:
    """Run every shard not yet complete on a pool of `actor`s built with `actor_kwargs`.
    `describe` turns the tally of every complete shard so far into the progress line's records."""
    complete = markers.complete(shards)
    todo = [s for s in shards if s not in complete]
    totals, ran_totals = no_stats(), no_stats()
    for shard in shards:
        if shard in complete:
            add_stats(totals, markers.read(shard))
    if complete:
        log(f"resuming: {len(complete)} of {len(shards)} shards already complete")
    started = time.time()
    if todo:
        import ray.data  # here: a caller that only reads markers does not load Ray Data

        per_block = shards_per_block(len(todo), pool)
        # blocks in flight on an actor: enough to fill its slots, plus one whose shards are ready
        # when a block's last shard is still running (a block is one Ray Data task)
        in_flight = pool.shards_per_worker if per_block == 1 else math.ceil(pool.shards_per_worker / per_block) + 1
        dataset = ray.data.from_items([{"shard": s} for s in todo],
                                      override_num_blocks=math.ceil(len(todo) / per_block))
        dataset = dataset.map_batches(
            ShardRunner,
            fn_constructor_kwargs={"actor": actor, "actor_kwargs": actor_kwargs, "at_once": pool.shards_per_worker},
            batch_size=None,  # a block is a batch
            num_cpus=SHARD_WORKER_CPU,
            # max_concurrent_calls_per_actor: without it Ray Data runs one task at a time on an
            # actor and only queues the others, so an actor would run one block at a time
            compute=ray.data.ActorPoolStrategy(size=min(pool.workers, len(todo)),
                                               max_tasks_in_flight_per_actor=in_flight,
                                               max_concurrent_calls_per_actor=in_flight),
        )
        progress = Progress("shards", len(shards), log, done=len(complete), tokens=True)
        reported = 0
        for row in dataset.iter_rows():
            stats = json.loads(row["stats"])
            add_stats(totals, stats)
            add_stats(ran_totals, stats)
            reported += 1
            progress.tick(tokens=completion_tokens(stats["calls"]), event=f"shard {stats['shard']} done",
                          records=describe(totals["tally"]))
        if reported != len(todo):
            raise RuntimeError(f"{len(todo)} shards ran but {reported} reported their stats")
    return ShardRun(totals=totals, ran_totals=ran_totals, ran=todo, resumed=len(complete),
                    seconds=time.time() - started)
