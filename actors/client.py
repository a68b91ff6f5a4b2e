"""The async client pipeline stages use to call a served role (or any OpenAI-compatible
endpoint): chat, chat with a pre-filled assistant turn, and raw completion.

Per request it applies a timeout; transient failures (connection errors, timeouts, a connection
dropped mid-response, a reply body that is not JSON, HTTP 429 and 5xx) are retried with
exponential backoff up to `max_retries` times, waiting at least what a `Retry-After` header asks
(at most RETRY_AFTER_CAP_S); anything else (a reply without the expected fields included), or a
transient failure that outlasts the retries, raises `ModelCallError`, which the method records
on the record. Error text never becomes model output. A semaphore bounds in-flight requests.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections import Counter
from typing import Any

import httpx

from longform.model import Message, ModelCallError

TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
RETRY_AFTER_CAP_S = 60.0  # a server asking for a longer pause gets this, then the retry


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


class LLMClient:
    def __init__(
        self, base_url: str, api_key: str | None = None, timeout_s: float = 600,
        max_retries: int = 3, max_concurrency: int = 64, backoff_s: float = 0.5,
    ):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.backoff_s = backoff_s
        self.calls: Counter = Counter()  # per model: requests, retries, failures, completion_tokens
        self._http: httpx.AsyncClient | None = None
        self._limit: asyncio.Semaphore | None = None

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        # Created lazily inside the running event loop (Ray Data runs UDFs in its own loop).
        if self._http is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._http = httpx.AsyncClient(
                base_url=self.base_url, headers=headers, timeout=self.timeout_s,
                limits=httpx.Limits(max_connections=self.max_concurrency),
            )
            self._limit = asyncio.Semaphore(self.max_concurrency)
        return self._http, self._limit

    async def post(self, path: str, body: dict[str, Any]) -> dict:
        http, limit = self._session()
        model = body.get("model", "?")
        last_error, asked_wait = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.calls[f"{model}.retries"] += 1
                backoff = self.backoff_s * 2 ** (attempt - 1) * (1 + random.random())
                await asyncio.sleep(max(backoff, asked_wait))
            asked_wait = 0.0
            self.calls[f"{model}.requests"] += 1
            try:
                async with limit:
                    response = await http.post(path, json=body)
            except httpx.TransportError as err:  # connect errors, timeouts, dropped connections
                last_error = f"{type(err).__name__}: {err}"
                continue
            if response.status_code == 200:
                try:
                    data = response.json()
                except ValueError as err:  # e.g. a proxy's page, or a body cut short
                    last_error = f"HTTP 200 with a body that is not JSON ({err}): {response.text[:300]}"
                    continue
                usage = (data.get("usage") if isinstance(data, dict) else None) or {}
                self.calls[f"{model}.completion_tokens"] += usage.get("completion_tokens") or 0
                return data
            last_error = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code not in TRANSIENT_STATUS:
                break
            asked_wait = retry_after_s(response.headers.get("Retry-After"))
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
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def role(self, model: str) -> "RoleModel":
        return RoleModel(self, model)


class RoleModel:
    """A `longform.model.ChatModel` bound to one served model id."""

    def __init__(self, client: LLMClient, model: str):
        self.client, self.model = client, model

    async def chat(self, messages: list[Message], **sampling: Any) -> str:
        return await self.client.chat(self.model, messages, **sampling)

    async def continue_chat(self, messages: list[Message], prefix: str, **sampling: Any) -> str:
        return await self.client.continue_chat(self.model, messages, prefix, **sampling)
