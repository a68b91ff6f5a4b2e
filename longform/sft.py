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
from typing import Any

from longform.extension import join_units, split_units
from longform.languages import LangCode
from longform.prompts import PromptBook


def drop_lines(text: str, keep: float, rng: random.Random) -> str:
    """Keep each unit (line, or sentence for a one-line text) with probability `keep`.
    At least one unit always survives, so the input is never empty."""
    units = split_units(text)
    kept = [u for u in units if rng.random() < keep]
    if not kept and units:
        kept = [rng.choice(units)]
    return join_units(kept)


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
