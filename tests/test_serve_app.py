"""`python -m jobs.serve` serves the trained Generator as an OpenAI-compatible API on loopback,
behind an API key, and the `openai` client talks to it. Every wait is bounded: the server's
output is read with a deadline and `jobs.serve` itself gives up after serving.deploy_timeout_s.
The served test joins the shared Ray of tests/tiny_served.py (with --address) rather than
starting one; it runs after every other test on that Ray, as it shuts the shared Serve down."""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import free_port
from tests.tiny_served import KEY_VAR

pytestmark = pytest.mark.cluster
DEPLOY_TIMEOUT_S = 480  # jobs.serve gives up after this; the test waits a little longer


def lines_of(stream) -> queue.Queue:
    """The stream's lines, read by a thread, so that the test can wait for one with a timeout
    (None once the stream ends)."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line)
        lines.put(None)
    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue, text: str, timeout: float) -> tuple[str, list[str]]:
    seen, deadline = [], time.time() + timeout
    while (left := deadline - time.time()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        assert line is not None, "jobs.serve exited:\n" + "".join(seen[-40:])
        seen.append(line)
        if text in line:
            return line, seen
    raise AssertionError(f"no {text!r} from jobs.serve within {timeout:.0f} s:\n" + "".join(seen[-40:]))


@pytest.mark.replaces_served(4)
def test_the_openai_client_talks_to_the_served_generator_with_its_key(repo, tiny_model, tmp_path, shared_ray):
    import openai
    from openai import OpenAI
    from ray import serve

    # the shared Ray's Serve goes: jobs.serve starts Serve on a port of its own. The key is the
    # one in the environment of the shared Ray's processes, where the ingress replica reads it.
    serve.shutdown()
    port, key = free_port(), shared_ray.api_key
    server = subprocess.Popen(
        # the README's command: --round latest (no round exported yet: the base model), joining a Ray
        [sys.executable, "-m", "jobs.serve", "--config", "configs/tiny.yaml", "--round", "latest",
         "--address", shared_ray.gcs_address,
         "--set", f"model.base={tiny_model}", "--set", "serving.engine_kwargs.max_model_len=1024",
         "--set", f"serving.deploy_timeout_s={DEPLOY_TIMEOUT_S}", "--storage", str(tmp_path), "--port", str(port),
         "--api-key-env", KEY_VAR],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, KEY_VAR: key},
    )
    try:
        line, seen = wait_for_line(lines_of(server.stdout), "serving the Generator", DEPLOY_TIMEOUT_S + 120)
        assert f"at http://127.0.0.1:{port}/v1" in line and "the base model" in line and KEY_VAR in line
        assert not any(key in s for s in seen), "the API key was printed"

        url = f"http://127.0.0.1:{port}/v1"
        ask = {"model": "generator", "temperature": 0, "max_tokens": 32,
               "messages": [{"role": "user", "content": "Write a detailed essay about rain."}]}
        # no Authorization header at all, a wrong key, the right key but one character short
        no_header = {"Authorization": openai.Omit()}
        for wrong, headers in (("unused", no_header), ("sk-wrong-" + secrets.token_hex(16), None), (key[:-1], None)):
            client = OpenAI(base_url=url, api_key=wrong, max_retries=0, timeout=60)
            with pytest.raises(openai.AuthenticationError) as err:
                client.chat.completions.create(**ask, extra_headers=headers)
            assert err.value.status_code == 401
            with pytest.raises(openai.AuthenticationError):
                client.models.list(extra_headers=headers)

        client = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == ["generator"]
        chat = client.chat.completions.create(**ask)
        assert chat.choices[0].message.content.strip()
        completion = client.completions.create(model="generator", prompt="Rain", max_tokens=8, temperature=0)
        assert completion.choices[0].text
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=60)


def test_an_api_key_variable_that_is_not_set_stops_jobs_serve_before_ray_starts(repo, tiny_model, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != KEY_VAR}
    done = subprocess.run(
        [sys.executable, "-m", "jobs.serve", "--config", "configs/tiny.yaml", "--set", f"model.base={tiny_model}",
         "--storage", str(tmp_path), "--api-key-env", KEY_VAR],
        cwd=repo, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and f"--api-key-env {KEY_VAR}" in done.stderr and "not set" in done.stderr
