"""The fixed probe set: the Generator answers the same instructions before and after every
round, with the probe's own (greedy by default) decoding, so that length changes are the
model's and not the sampler's."""

from __future__ import annotations

import asyncio

from actors.client import LLMClient
from longform.metrics import probe_summary
from longform.model import ModelCallError, user
from longform.params import Decoding


async def answer(client: LLMClient, model: str, probes: list[dict], decoding: Decoding) -> list[dict]:
    async def one(probe: dict) -> dict:
        try:
            text = await client.chat(model, user(probe["instruction"]), **decoding.request_fields(probe["id"]))
            return {**probe, "answer": text, "error": None}
        except ModelCallError as err:
            return {**probe, "answer": None, "error": str(err)}

    try:
        return await asyncio.gather(*(one(p) for p in probes))
    finally:
        await client.aclose()


def summarize(answers: list[dict]) -> dict:
    ok = [a for a in answers if a["answer"] is not None]
    summary = probe_summary([a["answer"] for a in ok])
    summary["errors"] = len(answers) - len(ok)
    for lang in sorted({a["lang"] for a in ok}):
        summary[lang] = probe_summary([a["answer"] for a in ok if a["lang"] == lang])
    return summary
