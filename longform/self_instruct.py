"""Self-instruct: grow the instruction pool with instructions the Generator writes itself.

One candidate: two instructions of one language are sampled from the pool and shown as
"Instruction 1" and "Instruction 2"; the Generator's reply is pre-filled up to "Instruction 3: "
and it writes the third. A candidate joins the pool if

  - it is one line of 3 < words < 500 (Self-Lengthen's word count), with no undecodable character,
  - it is in the language of its two examples,
  - it is no near-duplicate of an instruction already in the pool: texts are normalized
    (NFKC, case-folded, punctuation and spaces removed) and compared as sets of character
    3-grams; Jaccard similarity >= 0.7 counts as a duplicate (exact normalized matches included),
  - the judge answers yes to "would a good answer need more than 2,000 words?".

Candidates are made in batches and every accepted one is in the pool the next batch samples
from, so the pool grows across batches. Every rejection keeps its reason. The judge's yes and
the "Instruction 3:" label a model may repeat are each language's `yes` and
`instruction_label` (longform/languages.py).
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from longform import languages
from longform.model import ChatModel, ModelCallError, user
from longform.params import Decoding
from longform.prompts import PromptBook
from longform.words import count_words, detect_language

MIN_WORDS, MAX_WORDS = 3, 500  # exclusive bounds
DUPLICATE_JACCARD = 0.7


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if not (unicodedata.category(ch)[0] in "PZS" or ch.isspace()))


def shingles(text: str, n: int = 3) -> frozenset[str]:
    norm = normalize(text)
    return frozenset(norm[i: i + n] for i in range(max(1, len(norm) - n + 1)))


class DuplicateIndex:
    """Near-duplicate lookup over normalized character 3-grams (small pools: a linear scan)."""

    def __init__(self, texts: list[str] = ()):
        self.sets: list[frozenset[str]] = []
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        self.sets.append(shingles(text))

    def remove(self, text: str) -> None:
        self.sets.remove(shingles(text))

    def is_duplicate(self, text: str) -> bool:
        candidate = shingles(text)
        return any(len(candidate & s) / len(candidate | s) >= DUPLICATE_JACCARD for s in self.sets)


@functools.lru_cache(maxsize=4)
def _instruction_label(table: tuple[languages.Language, ...]) -> re.Pattern:
    labels = "|".join(lang.instruction_label for lang in table)
    return re.compile(rf"^\s*({labels})\s*", flags=re.I)


def clean_candidate(reply: str) -> str:
    """The first non-empty line, without a leading "Instruction 3:" the model may repeat."""
    label = _instruction_label(languages.supported())
    for line in reply.strip().splitlines():
        line = label.sub("", line.strip())
        if line:
            return line
    return ""


def says_yes(reply: str, lang: str) -> bool:
    words = re.findall(r"\w+", reply.strip().casefold())
    return bool(words) and words[0] == languages.get(lang).yes


def check_candidate(text: str, lang: str, index: DuplicateIndex) -> str | None:
    """Why a candidate cannot join the pool, before the judge is asked; None if it may."""
    if "\ufffd" in text:
        return "garbled: an undecodable character"
    words = count_words(text)
    if not MIN_WORDS < words < MAX_WORDS:
        return f"length: {words} words, not between {MIN_WORDS} and {MAX_WORDS} (exclusive)"
    if detect_language(text) != lang:
        return f"language: not {lang}"
    if index.is_duplicate(text):
        return "duplicate: a near-duplicate is already in the pool"
    return None


@dataclass
class SelfInstructResult:
    new: list[dict] = field(default_factory=list)  # accepted instructions, with provenance
    rejected: list[dict] = field(default_factory=list)  # candidates and their reasons
    tally: Counter = field(default_factory=Counter)


async def propose(pool: list[dict], lang: str, rng: random.Random, generator: ChatModel,
                  prompts: PromptBook, decoding: Decoding, key: str) -> tuple[str, list[str]]:
    first, second = rng.sample([r for r in pool if r["lang"] == lang], 2)
    prefix = prompts.render("self_instruct_prefix", lang, first=first["instruction"], second=second["instruction"])
    reply = await generator.continue_chat(user(prompts.render("self_instruct", lang)), prefix,
                                          **decoding.request_fields(key))
    return clean_candidate(reply), [first["id"], second["id"]]


async def grow_pool(pool: list[dict], wanted: int, generator: ChatModel, judge: ChatModel, prompts: PromptBook,
                    decoding: Decoding, judge_decoding: Decoding, rng: random.Random, id_prefix: str,
                    batch_size: int = 16, max_candidates: int | None = None) -> SelfInstructResult:
    """Up to `wanted` new instructions, keeping each seed language's share of the pool.
    Stops after `max_candidates` (default 4 x wanted) candidates whatever was accepted."""
    result = SelfInstructResult()
    pool = list(pool)
    index = DuplicateIndex([r["instruction"] for r in pool])
    langs = [lang for lang, n in Counter(r["lang"] for r in pool).items() if n >= 2]
    budget = max_candidates if max_candidates is not None else 4 * wanted
    made = 0
    while len(result.new) < wanted and made < budget and langs:
        size = min(batch_size, budget - made)
        picks = [rng.choice([r["lang"] for r in pool if r["lang"] in langs]) for _ in range(size)]
        keys = [f"{id_prefix}/c{made + i}" for i in range(size)]
        made += size
        proposals = await asyncio.gather(*(propose(pool, lang, random.Random(f"{k}:{rng.random()}"), generator,
                                                   prompts, decoding, k) for lang, k in zip(picks, keys)),
                                         return_exceptions=True)
        judged = []
        for lang, key, proposal in zip(picks, keys, proposals):
            result.tally["self_instruct.candidates"] += 1
            if isinstance(proposal, ModelCallError):
                reject(result, key, lang, "", f"call_failed: {proposal}")
                continue
            if isinstance(proposal, BaseException):
                raise proposal
            text, sources = proposal
            reason = check_candidate(text, lang, index)
            if reason:
                reject(result, key, lang, text, reason)
                continue
            index.add(text)  # a twin later in this batch is a duplicate of this one (until it is turned down)
            judged.append((lang, key, text, sources))
        verdicts = await asyncio.gather(*(judge.chat(user(prompts.render("judge_long", lang, instruction=text)),
                                                     **judge_decoding.request_fields(f"{key}/judge"))
                                          for lang, key, text, _ in judged), return_exceptions=True)
        for (lang, key, text, sources), verdict in zip(judged, verdicts):
            if isinstance(verdict, BaseException) and not isinstance(verdict, ModelCallError):
                raise verdict
            if isinstance(verdict, BaseException):
                reject(result, key, lang, text, f"call_failed: judge: {verdict}")
            elif not says_yes(verdict, lang):
                reject(result, key, lang, text, f"judge: not a long-answer instruction ({verdict.strip()[:40]!r})")
            elif len(result.new) < wanted:
                record = {"id": key, "instruction": text, "lang": lang, "source": "self_instruct",
                          "source_ids": sources}
                result.new.append(record)
                pool.append(record)
                result.tally["self_instruct.accepted"] += 1
                continue
            index.remove(text)  # not in the pool: a later candidate like it is judged on its own
    return result


def reject(result: SelfInstructResult, key: str, lang: str, text: str, reason: str) -> None:
    result.rejected.append({"id": key, "lang": lang, "instruction": text, "reason": reason})
    result.tally[f"self_instruct.rejected.{reason.split(':', 1)[0]}"] += 1
