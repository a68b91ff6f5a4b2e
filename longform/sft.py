"""Supervised fine-tuning examples made from a round's results.

* Generator example: instruction -> extended text.
* Extender example: extend-template(instruction, the draft with about 20% of its lines
  dropped) -> extended text. Dropping lines teaches the Extender to add content rather than
  to copy its input.
Both are chat `messages` with a `meta` block of provenance. `to_alpaca` gives the
instruction/input/output form that LLaMA-Factory reads.
"""

from __future__ import annotations

import random
import re
from typing import Any

from longform.extension import join_units, split_sentences
from longform.languages import LangCode
from longform.prompts import PromptBook


def drop_lines(text: str, keep: float, rng: random.Random) -> str:
    """Keep each line with probability `keep`: lines, not paragraphs (a heading and its list
    lose lines, not the whole block), the blank lines between paragraphs as they were. A text
    of one line loses sentences instead. At least one unit always survives, so the input is
    never empty."""
    lines = text.strip().split("\n")
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if len(filled) <= 1:
        sentences = split_sentences(text)
        kept = [u for u in sentences if rng.random() < keep]
        return join_units(kept or ([rng.choice(sentences)] if sentences else []))
    kept = {i for i in filled if rng.random() < keep} or {rng.choice(filled)}
    text = "\n".join(line for i, line in enumerate(lines) if i in kept or not line.strip())
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text).strip()  # a dropped paragraph leaves no gap


def chat_example(example_id: str, prompt: str, answer: str, meta: dict[str, Any]) -> dict:
    return {
        "id": example_id,
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ],
        "meta": meta,
    }


def generator_example(example_id: str, instruction: str, target: str, meta: dict) -> dict:
    return chat_example(example_id, instruction, target, {**meta, "role": "generator"})


def extender_example(
    example_id: str, instruction: str, draft: str, target: str, lang: LangCode,
    prompts: PromptBook, keep: float, rng: random.Random, meta: dict,
) -> dict:
    prompt = prompts.render("extend", lang, instruction=instruction, text=drop_lines(draft, keep, rng))
    return chat_example(example_id, prompt, target, {**meta, "role": "extender"})


def to_alpaca(example: dict) -> dict:
    user_turn, assistant_turn = example["messages"][0], example["messages"][-1]
    return {"instruction": user_turn["content"], "input": "", "output": assistant_turn["content"]}
