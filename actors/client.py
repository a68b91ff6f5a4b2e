"""The async client pipeline stages use to call a served role (or any OpenAI-compatible
endpoint): chat, chat with a pre-filled assistant turn, and raw completion.

Two transports carry one attempt, chosen by the endpoint:
* `serve://<app>`: a Serve application of this Ray cluster, called through its deployments'
  handles (actors/handles.py). The pipeline's own workers use it (`serving.data_path: handle`):
  no HTTP proxy, no OpenAI front-end replica, no JSON over a socket.
* a URL: the HTTP side is the `openai` SDK (`AsyncOpenAI`): it builds and sends each request,
  applies the timeout and the API key, and turns what went wrong into typed errors
  (`APIStatusError` with the status and headers, `APITimeoutError` and `APIConnectionError` for
  the rest). Requests go through the SDK's documented `post(path, body=..., cast_to=object)`, so
  the body is sent as given: vLLM's own fields (`continue_final_message`,
  `add_generation_prompt`, `top_k`, ...) need no `extra_body` plumbing.
Either way `LLMClient.post(path, body) -> dict` stays the one funnel that subclasses
(bench/clients.py records every body) can wrap, and both transports report failures the same
way (an HTTP status, transient or not), so what follows holds for both.

Retries are ours, not the SDK's (`max_retries=0`), because the SDK's loop cannot keep what the
pipeline relies on: it cannot count attempts and retries per model in `calls`, it does not
retry a 200 whose body is not JSON, it has no `backoff_s` knob, and it gives up on a
`Retry-After` above its own limit where we wait RETRY_AFTER_CAP_S and try again. So transient
failures (connection errors, timeouts, a connection dropped mid-response, a reply body that is
not JSON, HTTP 408, 409, 425, 429, 500, 502, 503 and 504) are retried with exponential backoff up
to `max_retries` times, waiting at least what a `Retry-After` header asks (at most
RETRY_AFTER_CAP_S). Anything else (a reply without the expected fields included), or a
transient failure that outlasts the retries, raises `ModelCallError`, which the method records
on the record. Error text never becomes model output. A semaphore bounds in-flight requests.

Priorities: the models named in `priority_models` are served by engines that schedule by
priority (vLLM's `scheduling_policy: priority`); their `RoleModel`s say so (`by_priority`), and
the method then adds each call's `priority` to its fields (longform/params.py,
`chain_priority`), which go into the body as vLLM's `priority` field like any other.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import random
import time
from collections import Counter
from typing import Any, Collection

from longform.model import Message, ModelCallError

TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
RETRY_AFTER_CAP_S = 60.0  # a server asking for a longer pause gets this, then the retry
SERVE_SCHEME = "serve://"  # an endpoint in the cluster: serve://<app> (actors/handles.py)
NO_KEY = "EMPTY"  # the SDK insists on a key; a server that wants none ignores this one (vLLM's convention)


def retry_after_s(value: str | None) -> float:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date), capped at
    RETRY_AFTER_CAP_S; 0 when absent or unreadable."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    if math.isnan(seconds):
        return 0.0
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def reply_text(data: Any, path: str, model: str, field: str) -> str:
    """choices[0].message.content (`field` "content") or choices[0].text of a reply; a reply
    without it raises ModelCallError."""
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if field == "content" else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise ModelCallError(f"{path} on {model!r}: malformed reply, no choices[0] {field}: "
                             f"{str(data)[:300]}") from None
    if text is not None and not isinstance(text, str):
        raise ModelCallError(f"{path} on {model!r}: malformed reply, {field} is {type(text).__name__}")
    return text or ""


class TransientError(Exception):
    """One attempt failed in a way worth another try; `wait_s` is what the server asked for."""

    def __init__(self, message: str, wait_s: float = 0.0):
        super().__init__(message)
        self.wait_s = wait_s


class HttpTransport:
    """One attempt over HTTP, through the SDK: the reply's JSON object, or TransientError /
    ModelCallError."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float):
        import openai  # here: the SDK costs a process ~0.4 s to import, and a shard worker that
        # calls the roles through Serve handles never needs it (it starts while engines wait)

        # An explicit key, never None, also keeps the SDK from sending OPENAI_API_KEY from the
        # environment to a server it was not meant for.
        self.sdk = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or NO_KEY, timeout=timeout_s, max_retries=0)

    async def send(self, path: str, body: dict[str, Any]) -> dict:
        import openai  # imported by __init__ already: a lookup

        try:
            data = await self.sdk.post(path, body=body, cast_to=object)
        except openai.APIStatusError as err:
            raise status_error(err.status_code, err.response.text[:300],
                               retry_after_s(err.response.headers.get("Retry-After"))) from None
        except openai.APIConnectionError as err:  # connect errors, timeouts, dropped connections
            cause = err.__cause__ or err
            raise TransientError(f"{type(cause).__name__}: {cause}") from None
        except ValueError as err:  # said it was JSON, but is not (e.g. a body cut short)
            raise TransientError(f"HTTP 200 with a body that is not JSON ({err})") from None
        if not isinstance(data, dict):  # the SDK hands back the text of a reply that is not JSON
            raise TransientError(f"HTTP 200 with a body that is not JSON: {str(data)[:300]}")
        return data

    async def aclose(self) -> None:
        await self.sdk.close()


def status_error(code: int, text: str, wait_s: float = 0.0) -> Exception:
    """What an error status means for the retry loop: TransientError for the statuses worth
    another try, ModelCallError for the rest."""
    message = f"HTTP {code}: {text}"
    return TransientError(message, wait_s) if code in TRANSIENT_STATUS else ModelCallError(message)


def transport_for(base_url: str, api_key: str | None, timeout_s: float):
    """HTTP for a URL; a `serve://<app>` endpoint is a Serve application of this Ray cluster,
    called through its deployments' handles (actors/handles.py)."""
    if base_url.startswith(SERVE_SCHEME):
        from actors.handles import HandleTransport

        return HandleTransport(base_url[len(SERVE_SCHEME):], timeout_s)
    return HttpTransport(base_url, api_key, timeout_s)


class LLMClient:
    def __init__(
        self, base_url: str, api_key: str | None = None, timeout_s: float = 600,
        max_retries: int = 3, max_concurrency: int = 64, backoff_s: float = 0.5,
        priority_models: Collection[str] = (), api_key_env: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        # the *name* of a variable holding the key, read where the requests are sent (a shard
        # worker reads its own environment): the key never travels with a pickled client
        self.api_key_env = api_key_env
        self.priority_models = frozenset(priority_models)
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.backoff_s = backoff_s
        self.calls: Counter = Counter()  # per model: requests, retries, failures, completion_tokens
        self._transport = None
        self._limit: asyncio.Semaphore | None = None

    def _session(self):
        # Created lazily inside the running event loop (Ray Data runs UDFs in its own loop).
        if self._transport is None:
            key = self._api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
            self._transport = transport_for(self.base_url, key, self.timeout_s)
            self._limit = asyncio.Semaphore(self.max_concurrency)
        return self._transport, self._limit

    async def post(self, path: str, body: dict[str, Any]) -> dict:
        transport, limit = self._session()
        model = body.get("model", "?")
        last_error, asked_wait = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.calls[f"{model}.retries"] += 1
                backoff = self.backoff_s * 2 ** (attempt - 1) * (1 + random.random())
                await asyncio.sleep(max(backoff, asked_wait))
            self.calls[f"{model}.requests"] += 1
            try:
                async with limit:
                    data = await transport.send(path, body)
            except TransientError as err:
                last_error, asked_wait = str(err), err.wait_s
                continue
            except ModelCallError as err:
                last_error = str(err)
                break
            usage = data.get("usage") or {}
            self.calls[f"{model}.completion_tokens"] += usage.get("completion_tokens") or 0
            return data
        self.calls[f"{model}.failures"] += 1
        raise ModelCallError(f"{path} on {model!r}: {last_error}")

    async def chat(self, model: str, messages: list[Message], **sampling: Any) -> str:
        body = {"model": model, "messages": messages, **sampling}
        data = await self.post("/chat/completions", body)
        return reply_text(data, "/chat/completions", model, "content")

    async def continue_chat(self, model: str, messages: list[Message], prefix: str, **sampling: Any) -> str:
        """The server renders the chat template with the assistant turn left open after
        `prefix` (vLLM's continue_final_message) and returns only the new text."""
        body = {
            "model": model,
            "messages": [*messages, {"role": "assistant", "content": prefix}],
            "continue_final_message": True,
            "add_generation_prompt": False,
            **sampling,
        }
        data = await self.post("/chat/completions", body)
        return reply_text(data, "/chat/completions", model, "content")

    async def complete(self, model: str, prompt: str, **sampling: Any) -> str:
        data = await self.post("/completions", {"model": model, "prompt": prompt, **sampling})
        return reply_text(data, "/completions", model, "text")

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    def role(self, model: str) -> "RoleModel":
        return RoleModel(self, model)


class RoleModel:
    """A `longform.model.ChatModel` bound to one served model id; `by_priority` when its engine
    schedules by priority."""

    def __init__(self, client: LLMClient, model: str):
        self.client, self.model = client, model
        self.by_priority = model in client.priority_models

    async def chat(self, messages: list[Message], **sampling: Any) -> str:
        return await self.client.chat(self.model, messages, **sampling)

    async def continue_chat(self, messages: list[Message], prefix: str, **sampling: Any) -> str:
        return await self.client.continue_chat(self.model, messages, prefix, **sampling)
