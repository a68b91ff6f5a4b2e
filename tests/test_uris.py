"""Storage locations: a typo in a URI must not turn into a local folder (issue 16, bad input 3)."""

import pytest

from cluster.settings import SettingsError, load_settings
from cluster.storage import Storage, filesystem_for

BAD = [
    ("S3://bucket/runs", "neither a local path nor an S3 URI: did you mean 's3://bucket/runs'?"),
    ("s3:/bucket/runs", "neither a local path nor an S3 URI: did you mean 's3://bucket/runs'?"),
    ("s3:bucket/runs", "neither a local path nor an S3 URI: did you mean 's3://bucket/runs'?"),
    ("gs://bucket/runs", "gs:// is not supported"),
    ("https://host/runs", "https:// is not supported"),
    ("s3://", "names no bucket"),
    ("s3:///runs", "names no bucket"),
    ("s3://my bucket/runs", "'my bucket' is not a valid S3 bucket name"),
    ("s3://My_Bucket/runs", "'My_Bucket' is not a valid S3 bucket name"),
    ("file://host/x", "a file:// URI must be file:///absolute/path"),
]

KEYS = ["storage.root", "model.base", "synthesis.seeds", "probe.file", "final.mix_with",
        "evaluation.judge_prompt", "agentwrite.prompts", "agentwrite.model"]


@pytest.mark.parametrize("uri, message", BAD)
def test_a_bad_storage_root_is_refused_naming_the_key(uri, message):
    with pytest.raises(SettingsError) as err:
        load_settings(None, ["model.base=x", f"storage.root={uri}"])
    assert f"storage.root: {message}" in str(err.value)


@pytest.mark.parametrize("key", KEYS)
def test_every_uri_valued_key_is_checked(key):
    with pytest.raises(SettingsError, match=f"{key}: neither a local path nor an S3 URI: did you mean 's3://b/x'"):
        load_settings(None, ["model.base=x", f"{key}=S3://b/x"])


def test_benchmark_data_is_checked():
    with pytest.raises(SettingsError, match=r"evaluation.benchmarks.0.data: gs:// is not supported"):
        load_settings(None, ["model.base=x", "evaluation.benchmarks=[{name: longen, data: 'gs://b/x'}]"])


@pytest.mark.parametrize("key", ["synthesis.prompt_dir", "agentwrite.prompt_dir"])
def test_prompt_folders_are_local_only(key):
    with pytest.raises(SettingsError, match=f"{key}: must be a local folder"):
        load_settings(None, ["model.base=x", f"{key}=s3://bucket/prompts"])


def test_good_locations_pass_and_file_uris_become_local_paths(tmp_path):
    s = load_settings(None, ["model.base=s3://models.example-1/qwen", f"storage.root=file://{tmp_path}/runs",
                             "synthesis.seeds=seeds.jsonl"])
    assert s.model.base == "s3://models.example-1/qwen"
    assert s.storage.root == f"{tmp_path}/runs" and not s.storage.is_s3
    assert s.synthesis.seeds.startswith("/") and s.synthesis.seeds.endswith("/seeds.jsonl")


@pytest.mark.parametrize("uri, message", BAD)
def test_the_storage_layer_refuses_the_same_uris(uri, message):
    cfg = load_settings(None, ["model.base=x"]).storage
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("?", r"\?")):
        filesystem_for(uri, cfg)
    with pytest.raises(ValueError):
        Storage.open(uri, cfg)


def test_the_storage_layer_opens_file_uris_as_local_folders(tmp_path):
    store = Storage.open(f"file://{tmp_path}/out", load_settings(None, ["model.base=x"]).storage)
    store.write_text("a.txt", "hi")
    assert store.protocol == "file" and (tmp_path / "out" / "a.txt").read_text() == "hi"


def test_credentials_in_a_uri_are_not_echoed():
    with pytest.raises(ValueError) as err:
        filesystem_for("s3://AKIA:hunter2@host/b", load_settings(None, ["model.base=x"]).storage)
    assert "hunter2" not in str(err.value)


def test_the_endpoint_url_needs_a_scheme():
    with pytest.raises(SettingsError, match="storage.endpoint_url: String should match pattern"):
        load_settings(None, ["model.base=x", "storage.endpoint_url=minio:9000"])
