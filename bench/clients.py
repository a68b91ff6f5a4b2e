"""The recording client factory bench/round_efficiency.py hands to
`actors.synthesis.run_synthesis` in place of the served roles (see `ClientFactory` there):
the real HTTP client (`actors.client.LLMClient`) that also keeps every request body it sends
and writes them to a JSONL file when the shard closes it.

(The stand-in engines the other benchmarks use, the zero-cost `InstantClientFactory` and the
simulated continuous-batching `SimulatedEngine`, live in the product: actors/engines.py.)

The factory and the client are module-level classes, so they pickle for Ray Data's actors (the
script registers this module to be pickled by value, so the workers need not import bench/).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from actors.client import LLMClient


class RecordingClient(LLMClient):
    """LLMClient that keeps the body of every request that got an answer (with the completion
    tokens the server reported, and when it was sent and answered) and writes them as JSONL
    under `folder` when closed: one file per client, i.e. per shard run. Failed attempts are not
    kept (none failed in the measured runs)."""

    def __init__(self, folder: str, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.folder = folder
        self.sent: list[dict] = []

    async def post(self, path: str, body: dict[str, Any]) -> dict:
        sent = time.time()
        data = await super().post(path, body)
        usage = data.get("usage") or {}
        self.sent.append({"path": path, "body": body, "completion_tokens": usage.get("completion_tokens"),
                          "prompt_tokens": usage.get("prompt_tokens"), "sent": sent, "done": time.time()})
        return data

    async def aclose(self) -> None:
        await super().aclose()
        if self.sent:
            os.makedirs(self.folder, exist_ok=True)
            name = f"{self.folder}/requests-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            with open(name, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self.sent)
            self.sent = []


class RecordingClientFactory:
    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self, settings, plan) -> RecordingClient:
        from actors.synthesis import client_options

        # the product's shard client's options (actors/synthesis.py), priorities included
        return RecordingClient(self.folder, plan.base_url, **client_options(settings, plan))
