"""One shard's worth of round inputs for tests: thirteen instructions (English and Chinese) and
scripted Generator and Extender models (tests/scripted.py) whose drafts end cleanly and whose
extensions grow well past 1.2x, so every stage of a round runs. Seeded by each request's seed,
so a rerun answers the same."""

import random

from longform.extension import split_units
from tests.scripted import ScriptedModel, text_of


def generator_answer(prompt, sampling):
    rng = random.Random(sampling.get("seed"))
    return "\n\n".join(f"Fact {rng.randrange(10**6)} about the topic." for _ in range(rng.randint(2, 5)))


def enrich(prompt, sampling):
    rng = random.Random(sampling.get("seed"))
    return "\n\n".join(f"{u}\n\nDetail {rng.randrange(10**6)} added." for u in split_units(text_of(prompt)))


def continuation(prompt, prefix, sampling):
    rng = random.Random(sampling.get("seed"))
    return "".join(f"\n\nMore {rng.randrange(10**6)} words on it." for _ in range(rng.randint(1, 6)))


def models():
    """(Generator, Extender), fresh: each records its own calls."""
    return ScriptedModel(chat=generator_answer), ScriptedModel(chat=enrich, cont=continuation)


INSTRUCTIONS = [{"id": f"en-{i:03d}", "instruction": f"Write a long essay on topic {i}.", "lang": "en"}
                for i in range(12)] + [{"id": "zh-001", "instruction": "写一篇关于蜜蜂的长文。", "lang": "zh"}]
