"""The storage layer does the same on a local folder and on S3 (a real S3 endpoint: moto)."""

import os

import pytest

from cluster.settings import StorageSection
from cluster.storage import Storage


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
