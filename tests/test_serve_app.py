"""`python -m jobs.serve` serves the trained Generator as an OpenAI-compatible API on loopback,
and the `openai` client talks to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.cluster


def test_the_openai_client_talks_to_the_served_generator(repo, tiny_model, tmp_path):
    from openai import OpenAI

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jobs.serve", "--config", "configs/tiny.yaml", "--set", f"model.base={tiny_model}",
         "--set", "serving.engine_kwargs.max_model_len=1024", "--storage", str(tmp_path), "--port", str(port)],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        lines = []
        deadline = time.time() + 600
        while time.time() < deadline:
            line = server.stdout.readline()
            assert line or server.poll() is None, "jobs.serve exited:\n" + "".join(lines[-40:])
            lines.append(line)
            if "serving the Generator" in line:
                break
        assert f"at http://127.0.0.1:{port}/v1" in line and "the base model" in line

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed")
        assert [m.id for m in client.models.list().data] == ["generator"]
        chat = client.chat.completions.create(model="generator", temperature=0, max_tokens=32,
                                              messages=[{"role": "user", "content": "Write a detailed essay about rain."}])
        assert chat.choices[0].message.content.strip()
        completion = client.completions.create(model="generator", prompt="Rain", max_tokens=8, temperature=0)
        assert completion.choices[0].text
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
