"""The async client against an HTTP endpoint that fails on purpose (a test double for a
flaky OpenAI-compatible server: a real engine cannot be made to answer 503 on cue)."""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from actors.client import LLMClient
from longform.model import ModelCallError


class FlakyServer:
    """Answers each request with the next status in `script` (200 = a chat completion)."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        self.delay_s, self.in_flight, self.peak = 0.0, 0, 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.in_flight += 1
                    outer.peak = max(outer.peak, outer.in_flight)
                time.sleep(outer.delay_s)
                with lock:
                    outer.in_flight -= 1
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status = outer.script.pop(0) if outer.script else 200
                reply = ({"choices": [{"message": {"content": "ok"}, "text": "ok"}],
                          "usage": {"completion_tokens": 1}} if status == 200 else {"error": "nope"})
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self):
        self.httpd.shutdown()


@pytest.fixture()
def flaky(request):
    server = FlakyServer(request.param)
    yield server
    server.close()


def call(client, coro_fn):
    async def go():
        try:
            return await coro_fn(client)
        finally:
            await client.aclose()
    return asyncio.run(go())


@pytest.mark.parametrize("flaky", [[503, 502, 200]], indirect=True)
def test_transient_errors_are_retried(flaky):
    client = LLMClient(flaky.url, max_retries=3, backoff_s=0.01)
    assert call(client, lambda c: c.chat("m", [{"role": "user", "content": "hi"}])) == "ok"
    assert client.calls["m.requests"] == 3 and client.calls["m.retries"] == 2


@pytest.mark.parametrize("flaky", [[503, 503, 503]], indirect=True)
def test_retries_are_bounded_and_the_error_is_raised_not_returned(flaky):
    client = LLMClient(flaky.url, max_retries=2, backoff_s=0.01)
    with pytest.raises(ModelCallError, match="HTTP 503"):
        call(client, lambda c: c.chat("m", [{"role": "user", "content": "hi"}]))
    assert len(flaky.requests) == 3 and client.calls["m.failures"] == 1


@pytest.mark.parametrize("flaky", [[400]], indirect=True)
def test_client_errors_are_not_retried(flaky):
    client = LLMClient(flaky.url, max_retries=5, backoff_s=0.01)
    with pytest.raises(ModelCallError, match="HTTP 400"):
        call(client, lambda c: c.complete("m", "prompt"))
    assert len(flaky.requests) == 1


def test_unreachable_endpoint_fails_after_retries():
    client = LLMClient("http://127.0.0.1:9/v1", max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(ModelCallError, match="ConnectError"):
        call(client, lambda c: c.chat("m", [{"role": "user", "content": "hi"}]))


@pytest.mark.parametrize("flaky", [[]], indirect=True)
def test_continue_chat_sends_the_prefilled_turn_and_the_key(flaky):
    client = LLMClient(flaky.url, api_key="sk-test-123")
    call(client, lambda c: c.continue_chat("m", [{"role": "user", "content": "go"}], "Start of", top_k=20))
    body = flaky.requests[0]["body"]
    assert body["messages"][-1] == {"role": "assistant", "content": "Start of"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["top_k"] == 20 and flaky.requests[0]["auth"] == "Bearer sk-test-123"


@pytest.mark.parametrize("flaky", [[]], indirect=True)
def test_concurrency_is_bounded(flaky):
    flaky.delay_s = 0.05  # each answer takes a while, so requests pile up unless bounded
    client = LLMClient(flaky.url, max_concurrency=3)
    many = lambda c: asyncio.gather(*(c.chat("m", [{"role": "user", "content": str(i)}]) for i in range(20)))
    assert call(client, many) == ["ok"] * 20
    assert flaky.peak == 3
