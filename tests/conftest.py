"""Shared fixtures. The expensive things (the tiny model, the S3 server, a Ray cluster) are
made once per test session."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TINY_MODEL = REPO / "models" / "tiny"

pytest_plugins = ["tests.tiny_served"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny model `make test` builds; built here when pytest runs on its own."""
    if not (TINY_MODEL / "config.json").exists():
        subprocess.run([sys.executable, "-m", "toyworld", "build", str(TINY_MODEL), "--no-probes"],
                       cwd=REPO, check=True)
    return TINY_MODEL


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP endpoint (moto) on loopback, with the standard AWS variables pointing at
    it for this process and every process it starts."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield {"endpoint": endpoint, "env": env}
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def s3_bucket(s3_server, request):
    """A fresh bucket per test (buckets are created with boto3: s3fs's region handling fails
    against moto)."""
    import boto3

    # the name cut to fit a bucket's 63 characters, and told apart from its parametrized siblings
    # (test_x[full] and test_x[lora] share their first 40 characters) by its node id's digest
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    name = "t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-") + "-" + digest
    boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """A Storage on a local folder, and the same on the S3 server: tests that take it run twice."""
    from cluster.settings import StorageSection
    from cluster.storage import Storage

    if request.param == "local":
        return Storage.open(str(tmp_path / "root"), StorageSection())
    bucket = request.getfixturevalue("s3_bucket")
    return Storage.open(f"s3://{bucket}/runs", StorageSection())
