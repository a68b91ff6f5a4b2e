"""Asking a model every row of a benchmark: `concurrency` requests in flight, a progress line
now and then, a failed call recorded on its row (`response` None, `error`), never retried here
(the client retries what is transient). Responses so far are checkpointed every
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

CHECKPOINT_EVERY_S = 30
PARTIAL = "responses.partial.jsonl"  # responses so far, rewritten every CHECKPOINT_EVERY_S


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] [evaluate] {message}", flush=True)


class Progress:
    """Counts finished items and prints a line with the rate and an ETA now and then."""

    def __init__(self, what: str, total: int, log=log, every_s: float = 10):
        self.what, self.total, self.log, self.every_s = what, total, log, every_s
        self.done = self.failed = 0
        self.started = self.printed = time.time()

    def tick(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        now = time.time()
        if self.done == self.total or now - self.printed >= self.every_s:
            self.printed = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0
            self.log(f"{self.what}: {self.done}/{self.total} ({self.failed} failed) | "
                     f"{rate:.2f}/s | ETA {eta:.0f}s")


async def generate(model: ChatModel, benchmark: str | Benchmark, rows: list[dict], decoding: Decoding,
                   concurrency: int, checkpoint: Callable[[list[dict]], None] | None = None, log=log) -> list[dict]:
    """Every row plus `response`; a failed call gives `response` None and `error`. Rows that
    already have a response (from a checkpoint) are kept as they are."""
    benchmark = get(benchmark)
    limit = asyncio.Semaphore(concurrency)
    progress = Progress("responses", len(rows), log)
    results: dict[str, dict] = {}
    last_checkpoint = time.time()

    async def one(row: dict) -> None:
        nonlocal last_checkpoint
        if isinstance(row.get("response"), str):
            results[row["id"]] = row
            progress.tick(True)
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
