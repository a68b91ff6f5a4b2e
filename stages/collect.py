"""Final data collection, after the last round (longform/constraints.py); the final stage runs
it (stages/final.py), and `python -m jobs.collect` on a finished run:

Every round's kept extended responses whose words fall in [collect.min_words, collect.max_words]
(default 2,000-8,000) become SFT examples whose query carries a length constraint the response
satisfies: about / range / above / below in the proportions 40 / 25 / 10 / 25 %, drawn per
response from a seeded generator. The Generator of the last round (or `collect.endpoint`)
rewrites each query so that it states the constraint in its own words; a rewrite is used only
if it states the constraint's numbers and keeps the query's language, else the query gets the
constraint appended as a plain sentence (counted as a fallback, with the reason).

Under <run>/collect/ on storage:
    data.jsonl      chat `messages` with provenance: constraint type, numbers, window, words, round
    alpaca.jsonl    the same as instruction / input / output, for LLaMA-Factory
    rejected.jsonl  responses outside the window, or not admitted by any constraint, with the reason
    summary.json
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from cluster.layout import FINAL, RunLayout
from cluster.settings import Settings
from longform.constraints import (Constraint, appended_query, drawn_constraint, numbers_stated,
                                  query_record)
from longform.model import ChatModel, ModelCallError, user
from longform.prompts import PromptBook, load_prompts
from longform.sampling import seeded_rng
from longform.sft import to_alpaca
from longform.words import count_words, detect_language

ROOT = "collect"


def gather(layout: RunLayout, rounds: int) -> list[dict]:
    """Every kept extended response of rounds 1..rounds, and the final stage's kept answers."""
    sources = [*((k, "extensions") for k in range(1, rounds + 1)), (FINAL, "drafts")]
    return [r for k, kind in sources for r in layout.shard_records(k, kind) if r.get("status") == "kept"]


async def rewrite(model: ChatModel | None, prompts: PromptBook, record: dict, c: Constraint,
                  settings: Settings) -> tuple[str, str | None]:
    """(query, None) from the Generator, or (appended query, why the rewrite was not used)."""
    lang, requirement = record["lang"], c.label(record["lang"])
    fallback = appended_query(record["instruction"], c, lang)
    if model is None:
        return fallback, "rewrite off"
    prompt = prompts.render("constrain_query", lang, instruction=record["instruction"], requirement=requirement)
    try:
        reply = await model.chat(user(prompt), **settings.collect.decoding.request_fields(record["id"]))
    except ModelCallError as err:
        return fallback, f"call_failed: {err}"
    query = reply.strip()
    if not query:
        return fallback, "empty rewrite"
    if not numbers_stated(query, c):
        return fallback, "rewrite does not state the constraint's numbers"
    if detect_language(query) != lang:
        return fallback, f"rewrite is not in {lang}"
    return query, None


async def build(records: list[dict], model: ChatModel | None, settings: Settings) -> tuple[list, list, Counter]:
    col, prompts = settings.collect, load_prompts(settings.synthesis.prompt_dir)
    kept, rejected, tally = [], [], Counter(rewritten=0, appended=0)
    chosen = []
    for r in records:
        words = count_words(r["text"])
        if not col.min_words <= words <= col.max_words:
            rejected.append({"id": r["id"], "round": r["round"], "words": words,
                             "reason": f"outside the window {col.min_words}-{col.max_words} words"})
            continue
        # drawn per response: the round too (every round names its records after the same seeds)
        c = drawn_constraint(words, seeded_rng(settings.run.seed, "collect", r["round"], r["id"]))
        if c is None:
            rejected.append({"id": r["id"], "round": r["round"], "words": words,
                             "reason": f"no constraint type has round numbers for {words} words"})
            continue
        chosen.append((r, words, c))
    limit = asyncio.Semaphore(col.concurrency)

    async def one(r, c):
        async with limit:
            return await rewrite(model, prompts, r, c, settings)

    queries = await asyncio.gather(*(one(r, c) for r, _, c in chosen))
    for (r, words, c), (query, fallback) in zip(chosen, queries):
        assert c.admits(words), (r["id"], c, words)  # by construction; checked again in the tests
        tally[f"type.{c.kind}"] += 1
        tally["rewritten" if fallback is None else "appended"] += 1
        if fallback:
            tally[f"appended.{fallback.split(':', 1)[0]}"] += 1
        kept.append(query_record(r["id"], r["round"], r["lang"], r["instruction"], query, r["text"], c, words,
                                 rewritten=fallback is None, fallback_reason=fallback))
    return kept, rejected, tally


def collect(settings: Settings, layout: RunLayout, model: ChatModel | None) -> dict:
    """Gather, constrain and write the final data; returns its summary (also collect/summary.json)."""
    started = time.time()
    records = gather(layout, settings.run.rounds)
    kept, rejected, tally = asyncio.run(build(records, model, settings))
    store = layout.store.child(ROOT)
    store.write_jsonl("data.jsonl", kept)
    store.write_jsonl("alpaca.jsonl", [to_alpaca(e) for e in kept])
    store.write_jsonl("rejected.jsonl", rejected)
    summary = {"run": settings.run.name, "responses": len(records), "collected": len(kept),
               "outside_window": len(rejected), "window": [settings.collect.min_words, settings.collect.max_words],
               "tally": dict(tally), "files": {n: store.uri(f"{n}.jsonl") for n in ("data", "alpaca", "rejected")},
               "seconds": round(time.time() - started, 1)}
    store.write_json("summary.json", summary)
    return summary
