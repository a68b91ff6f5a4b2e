"""The storage layer does the same on a local folder and on S3 (a real S3 endpoint: moto), and
waits out an S3 endpoint that goes away: reads, writes under a real shard, checkpoint uploads."""

import asyncio
import collections
import json
import logging
import os
import tempfile
import threading
import time
from contextlib import contextmanager

import pytest

from cluster.settings import StorageSection
from cluster.storage import Storage, StorageUnavailable
from tests.conftest import free_port


def test_write_read_list_delete(store):
    store.write_jsonl("demo/round-1/drafts/shard-00001.jsonl", [{"a": 1}, {"b": "蜜蜂"}])
    store.write_json("demo/round-1/stats/shard-00001.json", {"ok": True})
    store.write_text("demo/round-1/drafts/shard-00000.jsonl", "")
    assert list(store.read_jsonl("demo/round-1/drafts/shard-00001.jsonl")) == [{"a": 1}, {"b": "蜜蜂"}]
    assert store.read_json("demo/round-1/stats/shard-00001.json") == {"ok": True}
    assert store.list("demo/round-1/drafts") == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert store.list("demo/round-9") == []
    assert store.exists("demo/round-1/stats/shard-00001.json")
    store.delete("demo/round-1")
    assert not store.exists("demo/round-1/stats/shard-00001.json")


def test_directories_round_trip(store, tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "weights.bin").write_bytes(os.urandom(1000))
    store.put_dir(str(src), "demo/round-1/generator")
    out = store.get_dir("demo/round-1/generator", str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "sub" / "weights.bin").read_bytes() == (src / "sub" / "weights.bin").read_bytes()
    assert os.path.exists(os.path.join(out, "config.json"))


def test_uri_names_the_protocol(store):
    uri = store.uri("demo/summary.json")
    assert uri.startswith("s3://") if store.protocol == "s3" else uri.startswith("/")


def test_local_writes_leave_no_temporary_files(tmp_path):
    store = Storage.open(str(tmp_path), StorageSection())
    for i in range(3):
        store.write_text("a/b.txt", f"version {i}")
    assert os.listdir(tmp_path / "a") == ["b.txt"]
    assert store.read_text("a/b.txt") == "version 2"


# -- the S3 endpoint going away -------------------------------------------------------------
# A moto server of the test's own (stopped and started again here) on its own port; moto keeps
# objects in the process, so what was written before the outage is there after it. botocore's
# own retries are off (AWS_MAX_ATTEMPTS=1): what waits is this storage layer, and the endpoint
# comes back when that layer has logged its retries, not on a timer the test would race.

class Outage:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.make = lambda: ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server = self.make()
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.up = True

    def stop(self) -> None:
        self.server.stop()
        self.up = False

    def start(self) -> None:
        """The server again on its port. moto's start() waits without end for a server that
        could not bind (the port taken during the outage): waited here a while, then a failure."""
        self.server = self.make()
        starting = threading.Thread(target=self.server.start, daemon=True)
        starting.start()
        starting.join(timeout=30)
        if starting.is_alive():
            raise RuntimeError(f"the S3 server did not start again on port {self.port} (taken during the outage?)")
        self.up = True


class RestartAfterRetries(logging.Handler):
    """Starts the endpoint again once the storage layer has logged `retries` retries."""

    def __init__(self, outage: Outage, retries: int):
        super().__init__(logging.WARNING)
        self.outage, self.retries, self.seen = outage, retries, []

    def emit(self, record: logging.LogRecord) -> None:
        if "storage unreachable" in record.getMessage():
            self.seen.append(record.getMessage())
            if len(self.seen) == self.retries:
                self.outage.start()


@contextmanager
def back_after(outage: Outage, retries: int = 1):
    logger = logging.getLogger("cluster.storage")
    handler, level = RestartAfterRetries(outage, retries), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture()
def outage(s3_server, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    endpoint = Outage()
    boto3.client("s3", endpoint_url=endpoint.endpoint, region_name="us-east-1").create_bucket(Bucket="outage")
    yield endpoint
    if endpoint.up:
        endpoint.stop()


def outage_store(outage: Outage, prefix: str, timeout_s: float) -> Storage:
    return Storage.open(f"s3://outage/{prefix}", StorageSection(
        endpoint_url=outage.endpoint, retry_timeout_s=timeout_s, retry_backoff_s=0.2))


READS = {
    "exists": (lambda store, tmp: store.exists("a/summary.json"), True),
    "list": (lambda store, tmp: store.list("a"), ["rows.jsonl", "summary.json"]),
    "read_json": (lambda store, tmp: store.read_json("a/summary.json"), {"ok": True}),
    "read_jsonl": (lambda store, tmp: list(store.read_jsonl("a/rows.jsonl")), [{"i": 1}, {"i": 2}]),
    "get_dir": (lambda store, tmp: sorted(os.listdir(store.get_dir("a", str(tmp / "copy")))),
                ["rows.jsonl", "summary.json"]),
}


@pytest.mark.parametrize("read", list(READS))
def test_reads_wait_out_an_outage(outage, tmp_path, read):
    store = outage_store(outage, "reads", timeout_s=30)
    store.write_json("a/summary.json", {"ok": True})
    store.write_jsonl("a/rows.jsonl", [{"i": 1}, {"i": 2}])
    call, expected = READS[read]
    outage.stop()
    start = time.monotonic()
    with back_after(outage, retries=2) as restarted:
        assert call(store, tmp_path) == expected
    assert len(restarted.seen) == 2 and "s3://outage/reads/a" in restarted.seen[0], restarted.seen
    assert "retrying" in restarted.seen[0] and time.monotonic() - start < 30


def test_a_read_past_the_limit_fails_with_storage_unavailable(outage):
    store = outage_store(outage, "limit", timeout_s=1)
    store.write_text("a.txt", "x")
    outage.stop()
    start = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"could not read s3://outage/limit/a\.txt within "
                                                 r"storage\.retry_timeout_s=1s \(last error: "):
        store.read_text("a.txt")
    assert time.monotonic() - start < 15
    outage.start()
    assert store.read_text("a.txt") == "x"


def outage_settings(repo, endpoint: str, timeout_s: float):
    from cluster.settings import load_settings

    return load_settings(repo / "configs/tiny.yaml", [
        "model.base=unused", f"storage.endpoint_url={endpoint}", f"storage.retry_timeout_s={timeout_s}",
        "storage.retry_backoff_s=0.5", "synthesis.method.length_biased_sampling=false"])


class OutageClient:
    """The engine of a shard, scripted (tests/round_data.py), that takes the S3 server down on its
    first call: every write of the shard then meets the outage."""

    def __init__(self, on_first_call):
        from tests.round_data import models

        self.generator, self.extender = models()
        self.on_first_call, self.calls = on_first_call, collections.Counter()

    def role(self, model_id: str):
        model = self.generator if model_id == "generator" else self.extender
        if self.on_first_call:
            self.on_first_call()
            self.on_first_call = None
        return model

    async def aclose(self):
        pass


def run_one_shard(repo, outage, run_name, timeout_s, on_first_call):
    from cluster.layout import RunLayout
    from actors.synthesis import RoundPlan, ShardWorker, write_instruction_shards
    from tests.round_data import INSTRUCTIONS

    settings = outage_settings(repo, outage.endpoint, timeout_s)
    layout = RunLayout(Storage.open(f"s3://outage/runs/{run_name}", settings.storage))
    (shard,) = write_instruction_shards(layout, 1, INSTRUCTIONS, 64)
    plan = RoundPlan(round=1, base_url="unused", model_ids={"generator": "generator", "extender": "extender"},
                     versions={})
    worker = ShardWorker(settings, layout.store.uri(), plan, client_factory=lambda s, p: OutageClient(on_first_call))
    return layout, shard, lambda: asyncio.run(worker.run(shard))


def test_writes_wait_out_an_outage_and_the_shard_completes(repo, outage):
    from tests.round_data import INSTRUCTIONS

    layout, shard, run = run_one_shard(repo, outage, "waits", 60, lambda: outage.stop())
    start = time.monotonic()
    with back_after(outage, retries=3) as restarted:  # three retries: the writes did wait
        stats = run()
    assert len(restarted.seen) >= 3 and all("retrying" in m for m in restarted.seen), restarted.seen
    assert "s3://outage/runs/waits/round-1/" in restarted.seen[0] and time.monotonic() - start < 60
    assert layout.store.read_json(f"round-1/stats/{shard}.json") == json.loads(json.dumps(stats))
    drafts = list(layout.store.read_jsonl(f"round-1/drafts/{shard}.jsonl"))
    assert {d["instruction_id"] for d in drafts} == {i["id"] for i in INSTRUCTIONS}


def test_an_outage_past_the_limit_stops_with_a_clear_error_and_no_shard_looks_complete(repo, outage):
    from actors.synthesis import round_markers

    layout, shard, run = run_one_shard(repo, outage, "stops", 2, lambda: outage.stop())
    start = time.time()
    with pytest.raises(StorageUnavailable) as err:
        run()
    message = str(err.value)
    assert "s3://outage/runs/stops/round-1/" in message and "retry_timeout_s=2" in message, message
    assert time.time() - start < 30
    outage.start()  # back: the shard is not taken as complete, and running it again completes it
    assert round_markers(layout, 1).complete([shard]) == set()
    layout2, shard2, run2 = run_one_shard(repo, outage, "stops", 60, None)
    run2()
    assert round_markers(layout2, 1).complete([shard2]) == {shard}


def test_ray_train_uploads_wait_out_an_outage(outage, tmp_path, monkeypatch):
    """Ray Train writes checkpoints through `Storage.pyarrow()`: with botocore's own retries off,
    a plain pyarrow view of s3fs fails at once, ours waits for the endpoint and the files arrive.
    The outage begins with the first upload; the temporary files stay in this test's folder."""
    import boto3
    import fsspec
    import pyarrow.fs as pafs

    from cluster.storage import RetryingFSSpecHandler

    checkpoint = tmp_path / "checkpoint_000001"
    (checkpoint / "global_step4").mkdir(parents=True)
    files = {"trainer_state.json": b'{"global_step": 4}', "global_step4/model_states.pt": os.urandom(300_000)}
    for name, data in files.items():
        (checkpoint / name).write_bytes(data)
    fs = fsspec.filesystem("s3", endpoint_url=outage.endpoint, skip_instance_cache=True,
                           config_kwargs={"retries": {"max_attempts": 1}})
    settings = StorageSection(endpoint_url=outage.endpoint, retry_timeout_s=60, retry_backoff_s=0.2)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where the uploads are kept until closed

    outage.stop()
    start = time.monotonic()
    with pytest.raises(Exception):
        pafs.copy_files(str(checkpoint), "outage/plain", destination_filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)))
    assert time.monotonic() - start < 15, "the plain view should fail while the endpoint is down"
    outage.start()

    put_file = fs.put_file

    def put_file_into_an_outage(local, remote, **kwargs):
        if not hasattr(put_file_into_an_outage, "done"):
            put_file_into_an_outage.done = True
            outage.stop()
        return put_file(local, remote, **kwargs)

    monkeypatch.setattr(fs, "put_file", put_file_into_an_outage)
    with back_after(outage, retries=2) as restarted:
        pafs.copy_files(str(checkpoint), "outage/train/checkpoint_000001",
                        destination_filesystem=pafs.PyFileSystem(RetryingFSSpecHandler(fs, settings)))
    # the endpoint comes back at the second retry logged. pyarrow uploads the two files on
    # threads, so the other file's upload may log retries of its own while the endpoint
    # restarts (CI once saw three): how many is timing, that each one waited is the point
    assert len(restarted.seen) >= 2, restarted.seen
    assert all("write s3://outage/train/checkpoint_000001/" in seen for seen in restarted.seen), restarted.seen

    s3 = boto3.client("s3", endpoint_url=outage.endpoint, region_name="us-east-1")
    for name, data in files.items():
        assert s3.get_object(Bucket="outage", Key=f"train/checkpoint_000001/{name}")["Body"].read() == data
    assert list(spool.iterdir()) == [], "temporary files left"
