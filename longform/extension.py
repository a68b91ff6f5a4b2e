"""The two-stage extension of a draft, the heart of Self-Lengthen.

One micro-step lengthens a text T written for instruction I:
  1. split T into units: paragraphs on blank lines; single lines when that gives 2 or fewer
     parts; sentences when the text has no line breaks at all (a short draft is often one
     paragraph, and half of one paragraph is nothing);
  2. stage 1 asks the Extender to ENRICH (not continue) the first half of the units;
  3. the first 2/3 of the units it returns become the prefix P;
  4. stage 2 is a raw completion: the prompt shows I and the whole of T as the outline and the
     assistant turn is pre-filled with P, so the model writes on after P;
  5. the candidate is P + continuation.
A candidate is accepted only if it passes the quality rules and is longer than the best text
so far; up to `extension_steps` micro-steps run, each starting from the best text. The result
is kept only if it is more than `min_growth` (1.2) times the draft's words. Where a sentence
ends is each language's `sentence_break` (longform/languages.py).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from longform import languages
from longform.languages import LangCode
from longform.model import ChatModel, ModelCallError, user
from longform.params import STAGE1, STAGE2, Decoding, MethodParams, chain_priority
from longform.prompts import PromptBook
from longform.quality import check_quality
from longform.words import count_words


@functools.lru_cache(maxsize=4)
def _sentence_break(table: tuple[languages.Language, ...]) -> re.Pattern:
    """English sentences end at . ! ? followed by whitespace; Chinese ones at 。！？ with or
    without it: a text of either language (or both) is split by every language's rule."""
    return re.compile("|".join(lang.sentence_break for lang in table))


def split_sentences(text: str) -> list[str]:
    pattern = _sentence_break(languages.supported())
    return [s.strip() for s in pattern.split(text.strip()) if s.strip()]


def split_units(text: str) -> list[str]:
    """Paragraphs, else lines, else sentences (see the module docstring)."""
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    if len(parts) > 2:
        return parts
    lines = [p.strip() for p in text.split("\n") if p.strip()]
    if len(lines) > 1:
        return lines
    return split_sentences(text)


def join_units(units: list[str]) -> str:
    return "\n\n".join(units)


def keep_head(units: list[str], share: float) -> list[str]:
    return units[: int(len(units) * share)]


@dataclass
class Step:
    words: int
    accepted: bool
    reason: str

    def as_dict(self) -> dict:
        return {"words": self.words, "accepted": self.accepted, "reason": self.reason}


@dataclass
class Extension:
    """The outcome of extending one draft: `text` is None when no attempt grew enough."""

    text: str | None
    draft_words: int
    words: int
    steps: list[Step] = field(default_factory=list)
    attempts: int = 0
    error: str | None = None
    failed: tuple[str, str] | None = None  # (text, rule) of the last candidate a quality rule turned down

    @property
    def reason(self) -> str | None:
        if self.text is not None:
            return None
        return self.error or "not_longer"


async def extension_step(
    instruction: str, text: str, lang: LangCode, model: ChatModel,
    prompts: PromptBook, params: MethodParams, decoding: Decoding, key: str, tries: int = 0,
) -> str:
    """One micro-step: returns the candidate P + continuation (not yet judged). `tries`: the
    micro-steps this extension ran before this one, earlier attempts' included (for the
    calls' priority, see `chain_priority`)."""
    units = split_units(text)
    first_half = join_units(units[: len(units) // 2])
    words = count_words(text)
    enriched = await model.chat(
        user(prompts.render("extend", lang, instruction=instruction, text=first_half)),
        **decoding.request_fields(f"{key}/stage1", chain_priority(model, STAGE1, tries, words)),
    )
    prefix = join_units(keep_head(split_units(enriched), params.stage1_keep))
    outline = user(prompts.render("extend", lang, instruction=instruction, text=text))
    continuation = await model.continue_chat(
        outline, prefix, **decoding.request_fields(f"{key}/stage2", chain_priority(model, STAGE2, tries, words))
    )
    return prefix + continuation


async def extend_once(
    instruction: str, draft: str, lang: LangCode, model: ChatModel,
    prompts: PromptBook, params: MethodParams, decoding: Decoding, key: str, attempt: int = 1,
) -> Extension:
    """Up to `extension_steps` micro-steps from the draft, keeping the best accepted text.
    `attempt` counts from 1 (`extend`'s retries)."""
    draft_words = count_words(draft)
    best, best_words = draft, draft_words
    result = Extension(text=None, draft_words=draft_words, words=draft_words)
    for step in range(params.extension_steps):
        candidate = (await extension_step(
            instruction, best, lang, model, prompts, params, decoding, f"{key}/s{step}",
            tries=(attempt - 1) * params.extension_steps + step,
        )).strip()  # judged and kept stripped, as drafts are
        words = count_words(candidate)
        rejection = check_quality(candidate)
        if rejection is not None:
            result.steps.append(Step(words, False, rejection.rule))
            result.failed = (candidate, rejection.rule)
        elif words <= best_words:
            result.steps.append(Step(words, False, "not_longer"))
        else:
            result.steps.append(Step(words, True, "accepted"))
            best, best_words = candidate, words
    if best_words > params.min_growth * draft_words:
        result.text, result.words = best, best_words
    return result


async def extend(
    instruction: str, draft: str, lang: LangCode, model: ChatModel,
    prompts: PromptBook, params: MethodParams, decoding: Decoding, key: str,
) -> Extension:
    """Extend a draft, retrying whole extensions until one grows past `min_growth`."""
    total = Extension(text=None, draft_words=count_words(draft), words=count_words(draft))
    for attempt in range(1, params.extension_attempts + 1):
        try:
            result = await extend_once(
                instruction, draft, lang, model, prompts, params, decoding, f"{key}/a{attempt}", attempt
            )
        except ModelCallError as err:
            total.error = f"model_error: {err}"
            total.attempts = attempt
            return total
        total.steps.extend(result.steps)
        total.attempts = attempt
        total.failed = result.failed or total.failed
        if result.text is not None:
            total.text, total.words = result.text, result.words
            return total
    return total
