"""The async client against an HTTP endpoint that fails on purpose (a test double for a
flaky OpenAI-compatible server: a real engine cannot be made to answer 503 on cue): statuses,
429 with Retry-After, a reply slower than the timeout, a connection dropped before or in the
middle of a reply, a reply that is not JSON or lacks its fields."""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from actors.client import LLMClient
from longform.model import ModelCallError


class FlakyServer:
    """Answers each request with the next entry of `script`: a status (200 = a chat completion),
    (status, headers), or one of "slow" (a completion after `slow_s`), "drop" (the connection
    closed with no reply), "cut" (half of a completion, then the connection closed), "html"
    (200 with a page that is not JSON), "empty" (200 with a JSON object without `choices`)."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        self.delay_s, self.in_flight, self.peak, self.slow_s = 0.0, 0, 0, 2.0
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
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization"),
                                       "at": time.monotonic()})
                step = outer.script.pop(0) if outer.script else 200
                if step == "drop":
                    return  # the server closes the connection: no status line, nothing
                if step == "slow":
                    time.sleep(outer.slow_s)
                status, headers = step if isinstance(step, tuple) else (200 if isinstance(step, str) else step, {})
                reply = ({"choices": [{"message": {"content": "ok"}, "text": "ok"}],
                          "usage": {"completion_tokens": 1}} if status == 200 else {"error": "nope"})
                data = {"html": b"<html>Bad gateway</html>", "empty": b'{"object": "error"}'}.get(
                    step if isinstance(step, str) else "", json.dumps(reply).encode())
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if step == "html" else "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if step == "cut" else data)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that gave up on a slow reply: the write fails, as it should

        self.httpd = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()  # its listening socket too


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
    flaky.delay_s = 0.2  # each answer takes a while (on a loaded machine too), so requests pile up unless bounded
    client = LLMClient(flaky.url, max_concurrency=3)
    many = lambda c: asyncio.gather(*(c.chat("m", [{"role": "user", "content": str(i)}]) for i in range(20)))
    assert call(client, many) == ["ok"] * 20
    assert flaky.peak == 3


# -- 429 with Retry-After, timeouts, dropped connections, bad replies -------------------------------
HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("flaky", [[(429, {"Retry-After": "1"}), 200]], indirect=True)
def test_429_is_retried_after_the_pause_the_server_asks_for(flaky):
    client = LLMClient(flaky.url, max_retries=2, backoff_s=0.01)
    assert call(client, lambda c: c.chat("m", HI)) == "ok"
    assert client.calls["m.retries"] == 1
    waited = flaky.requests[1]["at"] - flaky.requests[0]["at"]
    assert 0.95 <= waited < 5, waited  # Retry-After: 1, not the 0.01 s backoff


@pytest.mark.parametrize("flaky", [[(429, {"Retry-After": "0"})] * 3], indirect=True)
def test_429_that_outlasts_the_retries_is_an_error(flaky):
    client = LLMClient(flaky.url, max_retries=2, backoff_s=0.01)
    with pytest.raises(ModelCallError, match="HTTP 429"):
        call(client, lambda c: c.chat("m", HI))
    assert len(flaky.requests) == 3 and client.calls["m.failures"] == 1


def test_retry_after_reads_seconds_and_dates_and_is_capped():
    from email.utils import formatdate

    from actors.client import RETRY_AFTER_CAP_S, retry_after_s

    assert retry_after_s("2") == 2.0 and retry_after_s(None) == 0.0 and retry_after_s("soon") == 0.0
    assert retry_after_s("-5") == 0.0 and retry_after_s("nan") == 0.0 and retry_after_s("86400") == RETRY_AFTER_CAP_S
    assert 25 <= retry_after_s(formatdate(time.time() + 30, usegmt=True)) <= 30
    assert retry_after_s(formatdate(time.time() - 30, usegmt=True)) == 0.0


@pytest.mark.parametrize("flaky", [["slow", 200]], indirect=True)
def test_a_reply_slower_than_the_timeout_is_retried(flaky):
    # the timeout well under the slow reply's 2 s, and well over what the prompt reply takes on
    # a loaded two-core machine: at 0.3 s a scheduling hiccup could time out the retry too
    client = LLMClient(flaky.url, max_retries=1, backoff_s=0.01, timeout_s=0.8)
    start = time.monotonic()
    assert call(client, lambda c: c.chat("m", HI)) == "ok"
    assert client.calls["m.retries"] == 1 and len(flaky.requests) == 2
    assert time.monotonic() - start < flaky.slow_s  # the client gave up on the slow one, it did not wait it out


@pytest.mark.parametrize("flaky", [["slow", "slow"]], indirect=True)
def test_timeouts_that_outlast_the_retries_are_an_error(flaky):
    client = LLMClient(flaky.url, max_retries=1, backoff_s=0.01, timeout_s=0.8)
    with pytest.raises(ModelCallError, match="ReadTimeout"):
        call(client, lambda c: c.chat("m", HI))


@pytest.mark.parametrize("flaky", [["drop", "cut", 200]], indirect=True)
def test_a_connection_dropped_before_or_in_the_middle_of_a_reply_is_retried(flaky):
    client = LLMClient(flaky.url, max_retries=2, backoff_s=0.01)
    assert call(client, lambda c: c.chat("m", HI)) == "ok"
    assert client.calls["m.retries"] == 2 and len(flaky.requests) == 3


@pytest.mark.parametrize("flaky", [["html", 200]], indirect=True)
def test_a_reply_that_is_not_json_is_retried(flaky):
    client = LLMClient(flaky.url, max_retries=1, backoff_s=0.01)
    assert call(client, lambda c: c.complete("m", "prompt")) == "ok"
    assert client.calls["m.retries"] == 1


@pytest.mark.parametrize("flaky", [["empty"]], indirect=True)
def test_a_reply_without_choices_is_an_error_not_text(flaky):
    client = LLMClient(flaky.url, max_retries=3, backoff_s=0.01)
    with pytest.raises(ModelCallError, match="malformed reply"):
        call(client, lambda c: c.chat("m", HI))


@pytest.mark.parametrize("flaky", [["cut"] * 3 + ["drop"] * 3], indirect=True)
def test_a_call_that_still_fails_is_recorded_as_an_error_never_as_text(flaky):
    """Through a stage that records what the client returns (the probe set's answers)."""
    from stages.probe import answer
    from longform.params import Decoding

    client = LLMClient(flaky.url, max_retries=2, backoff_s=0.01)
    probes = [{"id": "p0", "instruction": "Write.", "lang": "en"}]
    (row,) = asyncio.run(answer(client, "m", probes, Decoding(max_tokens=8)))
    assert row["answer"] is None and "RemoteProtocolError" in row["error"], row
    assert len(flaky.requests) == 3 and client.calls["m.failures"] == 1
