"""The async client pipeline stages use to call a served role (or any OpenAI-compatible
endpoint): chat, chat with a pre-filled assistant turn, and raw completion.

Per request it applies a timeout; transient failures (connection errors, timeouts, HTTP 429
and 5xx) are retried with exponential backoff up to `max_retries` times; anything else, or a
transient failure that outlasts the retries, raises `ModelCallError`, which the method records
on the record. Error text never becomes model output. A semaphore bounds in-flight requests.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import httpx

from longform.model import Message, ModelCallError

TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


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
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.calls[f"{model}.retries"] += 1
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * (1 + random.random()))
            self.calls[f"{model}.requests"] += 1
            try:
                async with limit:
                    response = await http.post(path, json=body)
            except httpx.TransportError as err:  # connect errors, timeouts, dropped connections
                last_error = f"{type(err).__name__}: {err}"
                continue
            if response.status_code == 200:
                data = response.json()
                usage = data.get("usage") or {}
                self.calls[f"{model}.completion_tokens"] += usage.get("completion_tokens", 0)
                return data
            last_error = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code not in TRANSIENT_STATUS:
                break
        self.calls[f"{model}.failures"] += 1
        raise ModelCallError(f"{path} on {model!r}: {last_error}")

    async def chat(self, model: str, messages: list[Message], **sampling: Any) -> str:
        body = {"model": model, "messages": messages, **sampling}
        data = await self.post("/chat/completions", body)
        return data["choices"][0]["message"]["content"] or ""

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
        return data["choices"][0]["message"]["content"] or ""

    async def complete(self, model: str, prompt: str, **sampling: Any) -> str:
        data = await self.post("/completions", {"model": model, "prompt": prompt, **sampling})
        return data["choices"][0]["text"] or ""

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
