"""The probe sets the loop measures the Generator with:

    fixed probe    the same instructions before and after every round, with the probe's own
                   (greedy by default) decoding, so that length changes are the model's and
                   not the sampler's: mean words, unique-sentence ratio (probes/<label>.jsonl)
    length probe   the same instructions each given a requested length (final.probe_words):
                   LonGen's length score, share inside the window (final/length-probe/<label>.jsonl),
                   and the set's fixed-length ceiling (the best a writer ignoring the number scores)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cluster.layout import FINAL
from longform.length_probe import constrained_probes, fixed_length_ceiling
from longform.length_probe import summarize as length_summary
from longform.metrics import probe_summary
from longform.model import ChatModel, ModelCallError, user
from longform.params import Decoding

if TYPE_CHECKING:
    from runtime.context import RunContext


async def answer(client, model: str, probes: list[dict], decoding: Decoding) -> list[dict]:
    """Every probe with its `answer` (None and `error` when the call failed); closes `client`."""
    try:
        return await answer_with(client.role(model), probes, decoding)
    finally:
        await client.aclose()


async def answer_with(model: ChatModel, probes: list[dict], decoding: Decoding) -> list[dict]:
    async def one(probe: dict) -> dict:
        try:
            text = await model.chat(user(probe["instruction"]), **decoding.request_fields(probe["id"]))
            return {**probe, "answer": text, "error": None}
        except ModelCallError as err:
            return {**probe, "answer": None, "error": str(err)}

    return await asyncio.gather(*(one(p) for p in probes))


def summarize(answers: list[dict]) -> dict:
    ok = [a for a in answers if a["answer"] is not None]
    summary = probe_summary([a["answer"] for a in ok])
    summary["errors"] = len(answers) - len(ok)
    for lang in sorted({a["lang"] for a in ok}):
        summary[lang] = probe_summary([a["answer"] for a in ok if a["lang"] == lang])
    return summary


def served_answers(ctx: RunContext, asked: list[dict]) -> list[dict]:
    """The served Generator's answers to `asked`, with the probe decoding."""
    client = ctx.client(concurrency=False)
    return asyncio.run(answer(client, ctx.serving.model_id("generator"), asked, ctx.settings.probe.decoding))


def fixed_probe(ctx: RunContext, probes: list[dict], label: str) -> dict:
    answers = served_answers(ctx, probes)
    ctx.store.write_jsonl(f"probes/{label}.jsonl", answers)
    summary = summarize(answers)
    ctx.log(f"probe {label}: mean words {summary['mean_words']}, unique-sentence ratio "
            f"{summary['unique_sentence_ratio']}")
    return summary


def length_probe(ctx: RunContext, probes: list[dict], label: str) -> dict:
    """The served Generator on the length-constrained probe set (the final stage's measure)."""
    rows = constrained_probes(probes, ctx.settings.final.probe_words, ctx.settings.run.seed)
    asked = [{"id": r["id"], "instruction": r["query"], "lang": r["language"]} for r in rows]
    answers = served_answers(ctx, asked)
    ctx.store.write_jsonl(f"{FINAL}/length-probe/{label}.jsonl",
                          [{**row, "response": a["answer"], "error": a["error"]} for row, a in zip(rows, answers)])
    summary = length_summary(rows, {a["id"]: a["answer"] for a in answers})
    # the same for every model scored on these rows: how far a length prior alone can take one
    summary["fixed_length_ceiling"] = fixed_length_ceiling(rows)["length_score"]
    ctx.log(f"length probe {label}: LonGen length score {summary['length_score']}, inside the window "
            f"{summary['in_window']}, mean words {summary['mean_words']}")
    return summary
