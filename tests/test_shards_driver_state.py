"""The driver's side of the shard fan-out (actors/shards.py) keeps sums, not per-shard stats, and
finds complete shards with one listing of the marker folder. Ray Data is replaced by a stand-in
(`InProcessDataset`, a fake) that runs each shard through the actor in this process, in order:
what is tested here is the driver's bookkeeping, and ten runs of it on a real actor pool would
cost CI ~40 s it does not have. The same code on real Ray Data is in the round tests and the loop
test (tests/test_job_submit.py checks that the resumed job's calls are the sum over the shards it
ran). The stand-in also drops a shard's result, which real Ray Data cannot be made to do.

The last test runs on the real Ray Data (the session's shared Ray): a stage of many shards puts
several in a block, which the stand-in cannot show."""

import asyncio
import json
from collections import Counter

import pytest

from actors.shards import Markers, ShardActor, ShardPool, ShardRunner, run_shards, shards_per_block, write_shards
from cluster.settings import StorageSection
from cluster.storage import Storage


class CountingWorker(ShardActor):
    """Tallies one record per input row and 10 completion tokens per record."""

    def __init__(self, store: Storage):
        self.store = store
        self.markers = Markers(store, "stats")

    async def work(self, shard: str) -> dict:
        rows = list(self.store.read_jsonl(f"inputs/{shard}.jsonl"))
        return {"tally": {"records": len(rows)},
                "calls": {"m.requests": len(rows), "m.completion_tokens": 10 * len(rows)}}


class InProcessDataset:
    """Just enough of a Ray Data dataset for `run_shards`: `map_batches` builds the actor,
    `iter_rows` runs each shard through it in order. `drop` shards never report back."""

    drop: set = set()

    def __init__(self, items: list[dict]):
        self.items = items
        self.loop = asyncio.new_event_loop()  # one loop, as an actor has

    def map_batches(self, actor, fn_constructor_kwargs, **_):
        self.actor = actor(**fn_constructor_kwargs)
        return self

    def iter_rows(self):
        for item in self.items:
            out = self.loop.run_until_complete(self.actor({"shard": [item["shard"]]}))
            if item["shard"] not in self.drop:
                yield {"shard": out["shard"][0], "stats": out["stats"][0]}
        self.loop.close()


@pytest.fixture
def in_process(monkeypatch):
    import ray.data

    monkeypatch.setattr(ray.data, "from_items", lambda items, **_: InProcessDataset(items))
    monkeypatch.setattr(InProcessDataset, "drop", set())
    return InProcessDataset


def inputs(store: Storage, n_records: int, size: int) -> list[str]:
    return write_shards(store, "inputs", [{"id": i} for i in range(n_records)], size)


def test_totals_count_the_resumed_and_the_new_shards_and_the_last_line_is_printed(store, in_process):
    shards = inputs(store, 23, 5)  # 5 shards: 5, 5, 5, 5, 3 records
    markers = Markers(store, "stats")
    for shard in shards[:2]:  # finished by an earlier run: its marker holds its stats
        markers.commit(shard, {"shard": shard, "tally": {"records": 5}, "calls": {"m.requests": 5}})
    lines = []
    run = run_shards(CountingWorker, {"store": store}, shards, markers, ShardPool(2, 2), log=lines.append,
                     describe=lambda tally: f"{tally['records']} records so far")
    assert run.resumed == 2 and run.ran == shards[2:]
    assert run.total("tally") == Counter({"records": 23})
    assert run.total("tally", only_ran=True) == Counter({"records": 13})
    assert run.total("calls") == Counter({"m.requests": 23, "m.completion_tokens": 130})
    assert run.total("calls", only_ran=True) == Counter({"m.requests": 13, "m.completion_tokens": 130})
    assert lines[0] == "resuming: 2 of 5 shards already complete"
    assert lines[-1].startswith("shard shard-00004 done (5/5 shards): 23 records so far | ")
    assert markers.complete(shards) == set(shards)

    again = run_shards(CountingWorker, {"store": store}, shards, markers, ShardPool(2, 2), log=lines.append)
    assert again.ran == [] and again.resumed == 5 and again.total("tally") == Counter({"records": 23})


def test_complete_shards_are_found_with_one_listing_not_a_check_per_shard(store, in_process, monkeypatch):
    shards = inputs(store, 40, 4)
    checks, listings = [], []
    real_exists, real_list = Storage.exists, Storage.list
    monkeypatch.setattr(Storage, "exists", lambda self, rel: checks.append(rel) or real_exists(self, rel))
    monkeypatch.setattr(Storage, "list",
                        lambda self, rel, suffix="": listings.append(rel) or real_list(self, rel, suffix))
    run = run_shards(CountingWorker, {"store": store}, shards, Markers(store, "stats"), ShardPool(1, 1),
                     log=lambda line: None)
    assert run.total("tally") == Counter({"records": 40}) and len(run.ran) == 10
    assert checks == [] and listings == ["stats"]
    assert write_shards(store, "inputs", [{"id": i} for i in range(40)], 4) == shards  # kept, not rewritten
    assert checks == [] and listings == ["stats", "inputs"]


def test_the_result_holds_sums_whatever_the_number_of_shards(store, in_process):
    small = run_shards(CountingWorker, {"store": store}, inputs(store, 4, 2), Markers(store, "stats"),
                       ShardPool(1, 1), log=lambda line: None)
    store.delete("stats")
    many = run_shards(CountingWorker, {"store": store}, inputs(store, 400, 2), Markers(store, "stats"),
                      ShardPool(1, 1), log=lambda line: None)
    assert len(small.ran) == 2 and len(many.ran) == 200
    for run in (small, many):  # only "tally" and "calls" sums, a few keys each, not one entry per shard
        assert set(run.totals) == set(run.ran_totals) == {"tally", "calls"}
        assert all(len(counts) <= 2 for counts in (*run.totals.values(), *run.ran_totals.values()))
    assert many.total("tally") == Counter({"records": 400})


def test_a_shard_that_never_reports_back_is_an_error_not_a_smaller_total(store, in_process):
    shards = inputs(store, 6, 2)
    in_process.drop = {shards[1]}
    with pytest.raises(RuntimeError, match="3 shards ran but 2 reported"):
        run_shards(CountingWorker, {"store": store}, shards, Markers(store, "stats"), ShardPool(1, 1),
                   log=lambda line: None)


def test_the_marker_holds_the_stats_the_driver_adds(store, in_process):
    shards = inputs(store, 3, 3)
    run_shards(CountingWorker, {"store": store}, shards, Markers(store, "stats"), ShardPool(1, 1),
               log=lambda line: None)
    stats = Markers(store, "stats").read(shards[0])
    assert stats["shard"] == shards[0] and stats["tally"] == {"records": 3}
    assert json.loads(json.dumps(stats))["calls"] == {"m.requests": 3, "m.completion_tokens": 30}


class OverlapWorker(CountingWorker):
    """A CountingWorker whose tally also says, for each shard, how many of this actor's shards
    were running when it started (`at_once.N`)."""

    running = 0

    async def work(self, shard: str) -> dict:
        OverlapWorker.running += 1
        at_once = OverlapWorker.running
        await asyncio.sleep(0.02)
        OverlapWorker.running -= 1
        result = await super().work(shard)
        result["tally"][f"at_once.{at_once}"] = 1
        return result


def test_one_shard_a_block_until_a_stage_has_many_more_shards_than_slots():
    pool = ShardPool(2, 4)  # 8 slots
    assert [shards_per_block(n, pool) for n in (1, 5, 255, 256, 511, 512, 1563, 15625)] == [1, 1, 1, 1, 1, 2, 6, 8]
    assert shards_per_block(10**7, ShardPool(1, 1)) == 8


def test_the_runner_runs_a_block_with_no_more_shards_at_once_than_it_is_given(store):
    shards = inputs(store, 6, 1)
    runner = ShardRunner(OverlapWorker, {"store": store}, at_once=2)
    out = asyncio.run(runner({"shard": shards}))
    assert out["shard"] == shards  # in the block's order
    tallies = [json.loads(stats)["tally"] for stats in out["stats"]]
    assert {key for tally in tallies for key in tally if key.startswith("at_once.")} == {"at_once.1", "at_once.2"}


class FailingWorker(CountingWorker):
    """Fails one shard; counts the shards that started and finished."""

    started, finished = [], []

    async def work(self, shard: str) -> dict:
        FailingWorker.started.append(shard)
        if shard.endswith("1"):
            raise RuntimeError(f"{shard} broke")
        await asyncio.sleep(0.2)
        FailingWorker.finished.append(shard)
        return await super().work(shard)


def test_a_retried_block_skips_its_committed_shards_and_a_failed_shard_stops_its_block(store, monkeypatch):
    shards = inputs(store, 4, 1)
    markers = Markers(store, "stats")
    markers.commit(shards[0], {"shard": shards[0], "tally": {"records": 1}, "calls": {}, "seconds": 9.0})
    runner = ShardRunner(CountingWorker, {"store": store}, at_once=2)
    ran = []
    monkeypatch.setattr(CountingWorker, "work", lambda self, shard: ran.append(shard) or asyncio.sleep(0, {
        "tally": {"records": 1}, "calls": {}}))
    out = asyncio.run(runner({"shard": shards}))
    assert ran == shards[1:]  # the committed shard is not run again: its marker is its result
    assert json.loads(out["stats"][0])["seconds"] == 9.0

    monkeypatch.setattr(FailingWorker, "started", [])
    monkeypatch.setattr(FailingWorker, "finished", [])
    store.delete("stats")
    failing = ShardRunner(FailingWorker, {"store": store}, at_once=2)

    async def run_and_wait():
        with pytest.raises(RuntimeError, match="shard-00001 broke"):
            await failing({"shard": shards})
        await asyncio.sleep(0.5)  # a sibling left running would finish by now

    asyncio.run(run_and_wait())
    assert FailingWorker.finished == [] and shards[3] not in FailingWorker.started  # cancelled, running or waiting


def test_blocks_of_several_shards_on_ray_data_run_each_shard_once_as_wide_as_the_pool(shared_ray, tmp_path,
                                                                                     monkeypatch):
    import ray.data

    store = Storage.open(str(tmp_path / "root"), StorageSection())
    shards = inputs(store, 256, 1)
    pool = ShardPool(1, 2)
    assert shards_per_block(len(shards), pool) == 4  # 64 blocks, 2 in flight: 8 shards for 2 slots
    blocks, from_items = [], ray.data.from_items
    monkeypatch.setattr(ray.data, "from_items",
                        lambda items, **kwargs: blocks.append(kwargs["override_num_blocks"]) or from_items(items, **kwargs))
    lines = []
    run = run_shards(OverlapWorker, {"store": store}, shards, Markers(store, "stats"), pool, log=lines.append)
    tally = run.total("tally")
    assert blocks == [64]
    assert tally["records"] == 256 and sorted(run.ran) == sorted(shards)
    assert Markers(store, "stats").complete(shards) == set(shards)
    assert {key for key in tally if key.startswith("at_once.")} == {"at_once.1", "at_once.2"}, tally
    assert lines[-1].startswith("shard ") and "(256/256 shards)" in lines[-1]
