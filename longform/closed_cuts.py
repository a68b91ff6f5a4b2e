"""Closed cuts: final SFT examples whose stop the length asked explains (`final.closed_cuts`).

The final data gives each collected answer one constraint it satisfies. A model trained on it
learns to write long, but hardly to read the number: the answers it saw end where the writer
chose, and the number only restates that. On the tiny model such data leaves asked ~ written
near 0; the same answers cut after each paragraph teach the number (bench/number_reading.py,
bench/RESULTS.md). A bare cut is no text to learn from, though: it has lost its end. So each
cut is closed by one paragraph the last Generator writes after it, and the text stops there:

    beginning   a collected answer's first j paragraphs, for every j short of the whole, under
                the query that answer was collected with
    closing     the Generator's next paragraph after it (an assistant turn pre-filled with the
                beginning, sampled with the synthesis decoding, stopped at the blank line that
                would start the paragraph after it)
    example     the beginning and its closing as the answer to the instruction, under a
                constraint that admits its length (a type drawn as collect draws it, the
                roundest numbers that admit the text), if it is in collect's window and passes
                the quality rules

The stop is placed from outside, where the length asked says; the last paragraph is the model's
own. On the tiny model, trained by the bench's own trainer (lr 1e-3, ~6,800 steps of one or two
examples), such examples took the final SFT's length score from 0.50-0.56 to 0.65-0.73 and
asked ~ written from ~0 to 0.26-0.40 (bench/number_reading.py, `--samples 1 --continue-from
paragraphs --until paragraph`). In the loop's own fine-tune, which packs 10-20 examples into a
step (448-1,808 steps), they raised the length score by 0.06-0.15 on 150 probes, but asked ~
written stayed near 0 (bench/final_models.py; README, "The final model"); without packing
(`training.packing=false`, 5,288 steps) it rose to 0.14-0.17. Every beginning that gives no
example is set aside with its reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from longform.constraints import appended_query, drawn_constraint, query_record
from longform.model import ChatModel, ModelCallError, user
from longform.params import Decoding
from longform.preference import first_queries, paragraph_cuts
from longform.quality import check_quality
from longform.sampling import seeded_rng
from longform.words import count_words

PARAGRAPH_END = "\n\n"


@dataclass(frozen=True)
class Beginning:
    id: str  # <collected source id>/cut-<j>: j paragraphs
    meta: dict  # the collected query's meta (instruction, language, round)
    query: str  # the user turn the answer was collected with
    text: str  # its first j paragraphs


def beginnings(queries: list[dict]) -> list[Beginning]:
    """Each distinct collected answer's first j paragraphs, for every j short of the whole, under
    the first query that holds the answer."""
    return [Beginning(f"{q['meta']['source_id']}/cut-{j}", q["meta"], q["messages"][0]["content"], cut)
            for q, text in first_queries(queries)
            for j, (cut, _) in enumerate(paragraph_cuts(text)[:-1], start=1)]


async def close(model: ChatModel, todo: list[Beginning], decoding: Decoding, concurrency: int) -> list[str | Exception]:
    """The paragraph `model` writes after each beginning (or the ModelCallError of its call)."""
    limit = asyncio.Semaphore(concurrency)
    fields = decoding.model_copy(update={"stop": [*decoding.stop, PARAGRAPH_END]})

    async def one(b: Beginning) -> str | Exception:
        async with limit:
            try:
                return await model.continue_chat(user(b.query), b.text + PARAGRAPH_END, **fields.request_fields(b.id))
            except ModelCallError as err:
                return err

    return await asyncio.gather(*(one(b) for b in todo))


def examples(todo: list[Beginning], closings: list[str | Exception], min_words: int, max_words: int,
             seed: int) -> tuple[list[dict], list[dict]]:
    """(examples, set aside): each closed beginning as a constrained query of the final data, or
    the rule it fell to (a short name, for counting) and the reason it is not one."""
    kept, aside, seen = [], [], set()
    for b, closing in zip(todo, closings):
        def reject(rule: str, reason: str) -> None:
            aside.append({"id": b.id, "rule": rule, "reason": reason})

        if isinstance(closing, Exception):
            reject("call_failed", f"call_failed: {closing}")
            continue
        closing = closing.strip()
        if not closing:
            reject("empty", "empty closing paragraph")
            continue
        text = f"{b.text}{PARAGRAPH_END}{closing}"
        words = count_words(text)
        if not min_words <= words <= max_words:
            reject("outside_window", f"outside the window {min_words}-{max_words} words ({words})")
            continue
        failed = check_quality(text)
        if failed is not None:
            reject("quality", f"quality: {failed}")
            continue
        if text in seen:
            reject("duplicate", "the same text as another closed cut")
            continue
        c = drawn_constraint(words, seeded_rng(seed, "closed-cut", b.id))
        if c is None:
            reject("no_constraint", f"no constraint type has round numbers for {words} words")
            continue
        seen.add(text)
        kept.append(query_record(b.id, b.meta.get("round"), b.meta["lang"], b.meta["instruction"],
                                 appended_query(b.meta["instruction"], c, b.meta["lang"]), text, c, words,
                                 origin="closed cut", closing_words=count_words(closing)))
    return kept, aside
