"""Training examples for the tiny model, as chat `messages` rendered with the method's own
prompt templates (longform/prompts), so the model has seen exactly the prompts the method sends.

Tasks:
  answer        long-form instruction -> 2-4 sentences on its topic, one per paragraph
  extend        "extend" template(instruction, k units) -> every unit kept, each followed by one
                new sentence; k from 1 to MAX_EXTEND_UNITS. Whole texts teach stage 2 (the whole
                text as outline, the reply pre-filled with a prefix, go on to the end); first
                halves of texts teach stage 1 (enrich the first half at the same density)
  self_instruct "self_instruct" template -> the filled "self_instruct_prefix" and a third
                instruction of the same language, then a newline
  judge_long    "judge_long" template -> yes/no (是/否)
"""

from __future__ import annotations

import random

from longform.prompts import YES, PromptBook
from toyworld.world import TOPICS, aspects, instruction, sentences

LANGS = ("en", "zh")
NO = {"en": "no", "zh": "否"}
ANSWER_SENTENCES = {2: 0.35, 3: 0.40, 4: 0.25}
MAX_EXTEND_UNITS = 12  # at most half the aspects of the world (world.TEMPLATES)
TASK_WEIGHTS = {"answer": 0.38, "extend": 0.45, "self_instruct": 0.07, "judge_long": 0.10}


def chat(prompt: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


def join(units: list[str]) -> str:
    return "\n\n".join(units)


def interleave(units: list[str], new: list[str]) -> list[str]:
    return [s for pair in zip(units, new) for s in pair]


def answer_example(rng: random.Random, lang: str, topic: int) -> dict:
    n = rng.choices(list(ANSWER_SENTENCES), weights=list(ANSWER_SENTENCES.values()))[0]
    text = join(sentences(rng, lang, topic, aspects(rng, lang, n)))
    return {"task": "answer", "messages": chat(instruction(rng, lang, topic), text)}


def extend_example(rng: random.Random, lang: str, topic: int, prompts: PromptBook, k: int,
                   first_half: bool = False) -> dict:
    """A text of k units and its extension: a walk of 2k aspects, the text being every other
    one, so that each new sentence lies between two kept ones. With `first_half`, the input is
    only the first half of the text and the reply its extension so far (stage 1 sees that)."""
    walk = sentences(rng, lang, topic, aspects(rng, lang, 2 * k))
    units = walk[0::2]
    if first_half and k > 1:
        units, walk = units[: k // 2], walk[: 2 * (k // 2)]
    prompt = prompts.render("extend", lang, instruction=instruction(rng, lang, topic), text=join(units))
    return {"task": "extend", "messages": chat(prompt, join(walk))}


def self_instruct_example(rng: random.Random, lang: str, prompts: PromptBook) -> dict:
    first, second, third = (instruction(rng, lang, t) for t in rng.sample(range(len(TOPICS)), 3))
    prefix = prompts.render("self_instruct_prefix", lang, first=first, second=second)
    return {
        "task": "self_instruct",
        "messages": chat(prompts.render("self_instruct", lang), prefix + third + "\n"),
        "assistant_prefix": prefix,  # the method may pre-fill the reply with it (see build.py)
    }


def judge_example(rng: random.Random, lang: str, topic: int, prompts: PromptBook) -> dict:
    long = rng.random() < 0.5
    prompt = prompts.render("judge_long", lang, instruction=instruction(rng, lang, topic, long=long))
    return {"task": "judge_long", "messages": chat(prompt, YES[lang] if long else NO[lang])}


def sample_example(rng: random.Random, prompts: PromptBook, task: str | None = None) -> dict:
    task = task or rng.choices(list(TASK_WEIGHTS), weights=list(TASK_WEIGHTS.values()))[0]
    lang, topic = rng.choice(LANGS), rng.randrange(len(TOPICS))
    if task == "answer":
        return answer_example(rng, lang, topic)
    if task == "extend":
        return extend_example(rng, lang, topic, prompts, rng.randint(1, MAX_EXTEND_UNITS),
                              first_half=rng.random() < 0.4)
    if task == "self_instruct":
        return self_instruct_example(rng, lang, prompts)
    return judge_example(rng, lang, topic, prompts)


def sample_examples(seed: int, n: int, prompts: PromptBook, task: str | None = None) -> list[dict]:
    rng = random.Random(f"tiny-corpus:{seed}:{task}")
    return [sample_example(rng, prompts, task) for _ in range(n)]
