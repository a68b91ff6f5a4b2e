"""The storage layer does the same on a local folder and on S3 (a real S3 endpoint: moto)."""

import asyncio
import collections
import glob
import json
import logging
import os
import tempfile
import threading
import time

import pytest

from cluster.settings import StorageSection
from cluster.storage import Storage, StorageUnavailable
from tests.conftest import free_port


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Storage.open(str(tmp_path / "root"), StorageSection())
    bucket = request.getfixturevalue("s3_bucket")
    return Storage.open(f"s3://{bucket}/runs", StorageSection())


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
# objects in the process, so what was written before the outage is there after it.

class Outage:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.make = lambda: ThreadedMotoServer(ip_address="127.0.0.1", port=self.port)
        self.server = self.make()
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self, restart_after: float | None = None) -> None:
        self.server.stop()
        if restart_after is not None:
            threading.Timer(restart_after, self.start).start()

    def start(self) -> None:
        self.server = self.make()
        self.server.start()


@pytest.fixture()
def outage(s3_server):
    import boto3

    endpoint = Outage()
    boto3.client("s3", endpoint_url=endpoint.endpoint, region_name="us-east-1").create_bucket(Bucket="outage")
    yield endpoint
    endpoint.server.stop()


def outage_settings(repo, endpoint: str, timeout_s: float):
    from cluster.settings import load_settings

    return load_settings(repo / "configs/tiny.yaml", [
        "model.base=unused", f"storage.endpoint_url={endpoint}", f"storage.retry_timeout_s={timeout_s}",
        "storage.retry_backoff_s=0.5", "synthesis.method.length_biased_sampling=false"])


class OutageClient:
    """The engine of a shard, scripted (tests/scripted.py), that takes the S3 server down on its
    first call: every write of the shard then meets the outage."""

    def __init__(self, on_first_call):
        from tests.test_round import models

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
    from jobs.synthesize import RoundPlan, ShardWorker, write_instruction_shards
    from tests.test_round import INSTRUCTIONS

    settings = outage_settings(repo, outage.endpoint, timeout_s)
    layout = RunLayout(Storage.open(f"s3://outage/runs/{run_name}", settings.storage))
    (shard,) = write_instruction_shards(layout, 1, INSTRUCTIONS, 64)
    plan = RoundPlan(round=1, base_url="unused", model_ids={"generator": "generator", "extender": "extender"},
                     versions={})
    worker = ShardWorker(settings, layout.store.uri(), plan, client_factory=lambda s, p: OutageClient(on_first_call))
    return layout, shard, lambda: asyncio.run(worker.run(shard))


def test_writes_wait_out_an_outage_and_the_shard_completes(repo, outage, caplog):
    from tests.test_round import INSTRUCTIONS

    # 25 s: longer than botocore's own retries (up to ~15 s) can hide, so this layer must wait
    layout, shard, run = run_one_shard(repo, outage, "waits", 90, lambda: outage.stop(restart_after=25))
    start = time.time()
    with caplog.at_level(logging.WARNING, logger="cluster.storage"):
        stats = run()
    assert time.time() - start > 24, "the writes did not wait for the server"
    assert "storage unreachable" in caplog.text and "retrying" in caplog.text
    assert layout.store.read_json(f"round-1/stats/{shard}.json") == json.loads(json.dumps(stats))
    drafts = list(layout.store.read_jsonl(f"round-1/drafts/{shard}.jsonl"))
    assert {d["instruction_id"] for d in drafts} == {i["id"] for i in INSTRUCTIONS}


def test_an_outage_past_the_limit_stops_with_a_clear_error_and_no_shard_looks_complete(repo, outage):
    from jobs.synthesize import completed

    layout, shard, run = run_one_shard(repo, outage, "stops", 2, lambda: outage.stop())
    start = time.time()
    with pytest.raises(StorageUnavailable) as err:
        run()
    message = str(err.value)
    assert "s3://outage/runs/stops/round-1/" in message and "retry_timeout_s=2" in message, message
    assert time.time() - start < 60
    outage.start()  # back: the shard is not taken as complete, and running it again completes it
    assert completed(layout, 1, [shard]) == {}
    layout2, shard2, run2 = run_one_shard(repo, outage, "stops", 60, None)
    run2()
    assert set(completed(layout2, 1, [shard2])) == {shard}


def test_ray_train_uploads_wait_out_an_outage(outage, tmp_path):
    """Ray Train writes checkpoints through `Storage.pyarrow()`: with botocore's own retries off,
    a plain pyarrow view of s3fs fails at once, ours waits for the endpoint and the files arrive."""
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
    settings = StorageSection(endpoint_url=outage.endpoint, retry_timeout_s=60, retry_backoff_s=0.5)

    outage.stop(restart_after=4)
    start = time.time()
    with pytest.raises(Exception):
        pafs.copy_files(str(checkpoint), "outage/plain", destination_filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)))
    assert time.time() - start < 4, "the plain view should fail while the endpoint is down"
    pafs.copy_files(str(checkpoint), "outage/train/checkpoint_000001",
                    destination_filesystem=pafs.PyFileSystem(RetryingFSSpecHandler(fs, settings)))
    assert time.time() - start > 3

    s3 = boto3.client("s3", endpoint_url=outage.endpoint, region_name="us-east-1")
    for name, data in files.items():
        assert s3.get_object(Bucket="outage", Key=f"train/checkpoint_000001/{name}")["Body"].read() == data
    assert not glob.glob(os.path.join(tempfile.gettempdir(), "upload-*-model_states.pt")), "temporary files left"
