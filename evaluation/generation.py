"""Asking a model every row of a benchmark: `concurrency` requests in flight, a progress line
now and then (runtime/log.py's Progress; evaluation/judging.py imports it from here too), a
failed call recorded on its row (`response` None, `error`), never retried here (the client
retries what is transient). Responses so far are checkpointed every
CHECKPOINT_EVERY_S to a file that a rerun after a stop picks up (`checkpointed`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from evaluation.benchmark import Benchmark
from evaluation.registry import get
from longform.model import ChatModel, ModelCallError, user
from longform.params import Decoding, portable_fields
from runtime.log import Progress, logger

CHECKPOINT_EVERY_S = 30
PARTIAL = "responses.partial.jsonl"  # responses so far, rewritten every CHECKPOINT_EVERY_S


log = logger("evaluate")


async def generate(model: ChatModel, benchmark: str | Benchmark, rows: list[dict], decoding: Decoding,
                   concurrency: int, checkpoint: Callable[[list[dict]], None] | None = None, log=log) -> list[dict]:
    """Every row plus `response`; a failed call gives `response` None and `error`. Rows that
    already have a response (from a checkpoint) are kept as they are."""
    benchmark = get(benchmark)
    limit = asyncio.Semaphore(concurrency)
    results = {r["id"]: r for r in rows if isinstance(r.get("response"), str)}  # from a checkpoint
    answered = set(results)
    progress = Progress("responses", len(rows), log, done=len(answered))
    last_checkpoint = time.time()

    async def one(row: dict) -> None:
        nonlocal last_checkpoint
        if row["id"] in answered:
            return
        async with limit:
            try:
                text = await model.chat(user(benchmark.prompt(row)),
                                        **portable_fields(decoding, f"{benchmark.name}/{row['id']}"))
                results[row["id"]] = {**row, "response": text, "error": None}
            except ModelCallError as err:
                results[row["id"]] = {**row, "response": None, "error": str(err)}
        progress.tick(results[row["id"]]["response"] is not None)
        if checkpoint and time.time() - last_checkpoint > CHECKPOINT_EVERY_S:
            last_checkpoint = time.time()
            checkpoint([r for r in results.values() if r["response"] is not None])

    await asyncio.gather(*(one(r) for r in rows))
    return [results[r["id"]] for r in rows]


def checkpointed(benchmark: str | Benchmark, rows: list[dict], earlier: list[dict], log=log,
                 where: str = PARTIAL) -> list[dict]:
    """The rows, with the responses of `earlier` (a stopped run's checkpoint) put back in where
    the prompt is still the same."""
    benchmark = get(benchmark)
    by_id = {r["id"]: r for r in earlier}

    def reusable(row: dict) -> bool:
        old = by_id.get(row["id"])
        return old is not None and benchmark.prompt(old) == benchmark.prompt(row)

    merged = [by_id[r["id"]] if reusable(r) else r for r in rows]
    log(f"reusing {sum(map(reusable, rows))} responses from {where}")
    return merged
