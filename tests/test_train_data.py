"""`jobs.train`'s inputs (training/sources.py): every record shape and container becomes chat
messages; a record that cannot be used is set aside with its file, its line or row and why;
weights repeat or subsample a file; bad --data stops the job before any cluster starts."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.settings import StorageSection
from jobs import train as train_job
from longform.sft import to_alpaca
from training.sources import BadRecord, DataSpec, load_mixture, read_source, to_messages

CFG = StorageSection()
QA = [{"role": "user", "content": "Write about rain."}, {"role": "assistant", "content": "Rain falls."}]


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def test_the_three_record_shapes_become_the_same_messages():
    assert to_messages({"messages": QA}) == QA
    assert to_messages({"instruction": "Write about rain.", "input": "", "output": "Rain falls."}) == QA
    assert to_messages({"conversations": [{"from": "human", "value": "Write about rain."},
                                          {"from": "gpt", "value": "Rain falls."}]}) == QA
    # alpaca's optional parts: system, history and a non-empty input
    full = to_messages({"system": "Be brief.", "history": [["Hi", "Hello."]], "instruction": "Summarise:",
                        "input": "A long text.", "output": "Short."})
    assert [m["role"] for m in full] == ["system", "user", "assistant", "user", "assistant"]
    assert full[3]["content"] == "Summarise:\n\nA long text."
    # ShareGPT keeps its system prompt in a column of its own, as alpaca does
    assert to_messages({"system": "Be brief.", "conversations": [{"from": "human", "value": "Write about rain."},
                                                               {"from": "gpt", "value": "Rain falls."}]}) == [
        {"role": "system", "content": "Be brief."}, *QA]
    # what the project itself writes round-trips: collect's alpaca.jsonl and data.jsonl
    assert to_messages(to_alpaca({"messages": QA})) == QA


@pytest.mark.parametrize("record, reason", [
    ({"prompt": "x", "completion": "y"}, "no `messages`"),
    ({"messages": [{"role": "user", "content": "Hi"}]}, "last turn must be the assistant's"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]}, "with text"),
    ({"messages": [{"role": "robot", "content": "Hi"}]}, "unknown role 'robot'"),
    ({"messages": [{"role": "assistant", "content": "Hi"}]}, "no user turn"),
    ({"conversations": [{"from": "alien", "value": "Hi"}]}, "unknown speaker 'alien'"),
    ({"instruction": "Hi", "output": 3}, "content must be a string"),
    ({"instruction": "Hi", "output": "Yo", "history": [["only one"]]}, "history[0]"),
    (["not", "an", "object"], "must be an object"),
])
def test_a_bad_record_says_why(record, reason):
    with pytest.raises(BadRecord, match=reason.replace("[", r"\[").replace("(", r"\(")):
        to_messages(record)


def test_bad_lines_are_set_aside_with_file_line_and_reason(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"messages": QA}, '{"messages": [', {"instruction": "Hi", "output": "Hello."}, {"prompt": "x"}, "",
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}])
    source = read_source(path, CFG)
    assert len(source.records) == 3
    assert [(r["file"], r["where"]) for r in source.rejected] == [(path, "line 2"), (path, "line 4")]
    assert "not a JSON line" in source.rejected[0]["reason"] and "no `messages`" in source.rejected[1]["reason"]
    assert source.records[0]["meta"]["source"] == f"{path} line 1"


def test_a_bom_does_not_cost_the_first_line(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"messages": QA}).encode() + b"\n")
    assert len(read_source(str(path), CFG).records) == 1
    listed = tmp_path / "bom.json"  # a JSON list is still taken for one, not for JSON lines
    listed.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"messages": QA}] * 2, indent=1).encode())
    source = read_source(str(listed), CFG)
    assert len(source.records) == 2 and source.rejected == []


def test_parquet_json_list_and_a_saved_datasets_folder(tmp_path):
    import datasets

    rows = [{"instruction": f"Write about rain {i}.", "input": "", "output": "Rain falls."} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows + [{"instruction": "Hi", "input": "", "output": ""}]), tmp_path / "a.parquet")
    parquet = read_source(str(tmp_path / "a.parquet"), CFG)
    assert len(parquet.records) == 4 and parquet.rejected[0]["where"] == "row 5"
    (tmp_path / "b.json").write_text(json.dumps([{"messages": QA}, {"messages": QA}]))
    assert len(read_source(str(tmp_path / "b.json"), CFG).records) == 2
    datasets.Dataset.from_list([{"messages": QA}] * 3).save_to_disk(str(tmp_path / "saved"))
    assert len(read_source(str(tmp_path / "saved"), CFG).records) == 3
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"messages": QA}] * 2),
                          "extra": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dict"))
    saved = read_source(str(tmp_path / "dict"), CFG)
    assert len(saved.records) == 6 and saved.records[0]["meta"]["source"].endswith("extra row 1")


def test_the_longwriter_style_fixture_and_the_projects_own_files(repo, tmp_path):
    fixture = read_source(str(repo / "tests/data/longwriter6k_style.jsonl"), CFG)
    assert len(fixture.records) == 20 and not fixture.rejected
    # AgentWrite's SFT shards and collect's data are chat messages with a meta block: kept
    shard = write_jsonl(tmp_path / "shard-00000.jsonl", [{"id": "aw-1", "messages": QA, "meta": {"round": 1}}])
    record = read_source(shard, CFG).records[0]
    assert record["id"] == "aw-1" and record["meta"]["round"] == 1


def test_weights_repeat_and_subsample(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"messages": QA, "id": f"a{i}"} for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"messages": QA, "id": f"b{i}"} for i in range(10)])
    records, rejected, counts = load_mixture([DataSpec.parse(f"{a}@2"), DataSpec.parse(f"{b}@0.3")], CFG, seed=0)
    ids = [r["id"] for r in records]
    assert sum(i.startswith("a") for i in ids) == 20 and sum(i.startswith("b") for i in ids) == 3
    assert [c["used"] for c in counts] == [20, 3] and not rejected
    again, _, _ = load_mixture([DataSpec.parse(f"{a}@2"), DataSpec.parse(f"{b}@0.3")], CFG, seed=0)
    assert [r["id"] for r in again] == ids  # seeded


def test_data_specs():
    assert DataSpec.parse("s3://b/x.jsonl@0.5") == DataSpec("s3://b/x.jsonl", 0.5)
    assert DataSpec.parse("s3://user@host/x.jsonl") == DataSpec("s3://user@host/x.jsonl")
    for bad in ("x.jsonl@-1", "x.jsonl@abc", "x.jsonl@nan", "x.jsonl@0"):
        with pytest.raises(ValueError, match="weight"):
            DataSpec.parse(bad)


def test_reads_from_s3(s3_server, s3_bucket, tmp_path):
    import datasets

    from cluster.storage import Storage

    store = Storage.open(f"s3://{s3_bucket}/data", CFG)
    store.write_jsonl("chat.jsonl", [{"messages": QA}, {"nope": 1}])
    datasets.Dataset.from_list([{"messages": QA}] * 2).save_to_disk(str(tmp_path / "saved"))
    store.put_dir(str(tmp_path / "saved"), "saved")
    chat = read_source(f"s3://{s3_bucket}/data/chat.jsonl", CFG)
    assert len(chat.records) == 1 and chat.rejected[0]["where"] == "line 2"
    assert len(read_source(f"s3://{s3_bucket}/data/saved", CFG).records) == 2


def test_the_job_stops_before_any_cluster_on_bad_data(repo, tiny_model, tmp_path, capsys):
    base = ["--config", str(repo / "configs/tiny.yaml"), "--set", f"model.base={tiny_model}",
            "--storage", str(tmp_path / "runs")]
    assert train_job.main([*base, "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: not found" in capsys.readouterr().err
    empty = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x"}])
    assert train_job.main([*base, "--data", empty]) == 2
    assert "no usable record" in capsys.readouterr().err
    assert train_job.main([*base, "--data", f"{empty}@zero"]) == 2
    good = write_jsonl(tmp_path / "good.jsonl", [{"messages": QA}])
    for args, message in [
        (["--init-model", str(tmp_path)], f"error: --init-model: no model at {tmp_path} (config.json not found)"),
        (["--init-model", "S3://bucket/model"], "error: --init-model: S3://bucket/model: neither a local path nor"),
        (["--init-adapter", str(tmp_path / "no-adapter")], "--init-adapter: no LoRA adapter at"),
        (["--init-adapter", "gs://bucket/adapter"], "error: --init-adapter: gs://bucket/adapter: gs:// is not supported"),
    ]:
        with pytest.raises(SystemExit) as stop:
            train_job.main([*base, "--data", good, *args])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    for name in ("../../escaped", "a/b", ".hidden"):  # a fine-tune's folder stays inside its run
        assert train_job.main([*base, "--data", good, "--name", name]) == 2
        assert f"--name {name!r}: a folder inside the run is one name" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs").exists()
    import ray

    assert not ray.is_initialized()
