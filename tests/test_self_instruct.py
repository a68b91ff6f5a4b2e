"""Self-instruct rules: candidate cleaning, bounds, language, near-duplicates, the judge, and a
pool that grows across batches (scripted models: the rules, not a model, are under test)."""

from __future__ import annotations

import asyncio
import random

import pytest

from longform.model import ModelCallError
from longform.params import Decoding
from longform.prompts import load_prompts
from longform.self_instruct import (
    DuplicateIndex, check_candidate, clean_candidate, grow_pool, normalize, says_yes,
)

POOL = [
    {"id": "en-1", "lang": "en", "instruction": "Write a detailed essay about the history of tea in Asia."},
    {"id": "en-2", "lang": "en", "instruction": "Write a long report on how rivers shaped early cities."},
    {"id": "zh-1", "lang": "zh", "instruction": "请写一篇关于茶在中国历史上的作用的长文章。"},
    {"id": "zh-2", "lang": "zh", "instruction": "请详细介绍丝绸之路对古代贸易的影响。"},
]


def test_normalize_drops_case_width_punctuation_and_spaces():
    assert normalize("Write, an ESSAY!  about tea.") == "writeanessayabouttea"
    assert normalize("请写：关于茶的文章。") == normalize("请写:关于茶的文章")  # full-width colon


@pytest.mark.parametrize("text, duplicate", [
    ("write a detailed essay about the history of tea in asia", True),  # case and punctuation
    ("Write a detailed essay about the history of tea in Asia!!", True),
    ("Write a detailed essay about the history of tea in Africa.", True),  # one word changed
    ("Write a short poem about snow on mountains.", False),
    ("请写一篇关于茶在中国历史上的作用的长文章", True),
    ("请写一篇关于火车如何改变城市生活的报告。", False),
])
def test_near_duplicates_by_character_trigram_jaccard(text, duplicate):
    assert DuplicateIndex([r["instruction"] for r in POOL]).is_duplicate(text) is duplicate


@pytest.mark.parametrize("reply, expected", [
    ("Write a guide to bread.\nInstruction 4: more", "Write a guide to bread."),
    ("\n\nInstruction 3: Write a guide to bread.", "Write a guide to bread."),
    ("指令3：请写一篇关于面包的指南。", "请写一篇关于面包的指南。"),
    ("   \n", ""),
])
def test_the_candidate_is_the_first_line_without_a_repeated_label(reply, expected):
    assert clean_candidate(reply) == expected


@pytest.mark.parametrize("text, lang, reason", [
    ("Write more.", "en", "length"),  # 2 words
    ("Write about tea.", "en", "length"),  # 3 words: the bound is exclusive
    ("Write a report on tea.", "en", None),  # 5 words
    ("word " * 499 + "end.", "en", "length"),  # 500 words
    ("请写茶", "zh", "length"),  # 3 characters count 3 words: the bound is exclusive
    ("请写一篇关于面包的指南。", "zh", None),
    ("Write a report on the history of bread.", "zh", "language"),
    ("请把你知道的关于\ufffd史和意义写成长文。", "zh", "garbled"),  # a split multi-byte token
    ("Write a detailed essay about the history of tea in Asia.", "en", "duplicate"),
])
def test_candidate_rules(text, lang, reason):
    got = check_candidate(text, lang, DuplicateIndex([r["instruction"] for r in POOL]))
    if reason is None:
        assert got is None
    else:
        assert got.startswith(reason), got


@pytest.mark.parametrize("reply, lang, yes", [
    ("yes", "en", True), ("Yes.", "en", True), (" YES, it does", "en", True),
    ("no", "en", False), ("yesterday", "en", False), ("", "en", False),
    ("是", "zh", True), ("是。", "zh", True), ("否", "zh", False), ("不是", "zh", False),
])
def test_the_judge_says_yes_only_with_its_first_word(reply, lang, yes):
    assert says_yes(reply, lang) is yes


class Scripted:
    """Replies from a script, recording what it was asked."""

    def __init__(self, replies, fail_on=()):
        self.replies, self.fail_on, self.calls = list(replies), set(fail_on), []

    async def chat(self, messages, **sampling):
        return await self.next(messages[-1]["content"], sampling)

    async def continue_chat(self, messages, prefix, **sampling):
        return await self.next(prefix, sampling)

    async def next(self, prompt, sampling):
        self.calls.append((prompt, sampling))
        index = len(self.calls) - 1
        if index in self.fail_on:
            raise ModelCallError("HTTP 503 after retries")
        return self.replies[index % len(self.replies)]


def run(pool, wanted, generator, judge, batch_size=4, max_candidates=None):
    return asyncio.run(grow_pool(pool, wanted, generator, judge, load_prompts(), Decoding(seed=1),
                                 Decoding(temperature=0.0, seed=1), random.Random(0), "r1/si",
                                 batch_size=batch_size, max_candidates=max_candidates))


def test_the_pool_grows_across_batches_and_new_instructions_keep_their_examples_language():
    en_pool = POOL[:2]
    texts = ["Write a long history of glassmaking in Venice.",
             "Describe in depth how paper money spread across the world.",
             "Compose a thorough guide to building stone bridges.",
             "Explain at length why mechanical clocks changed daily life.",
             "Tell the full story of mapping the Pacific islands.",
             "Give a detailed account of shipbuilding in old Norway.",
             "Chronicle the making of church bells across Europe.",
             "Survey every kind of kite flown in East Asia."]
    generator, judge = Scripted(texts), Scripted(["yes"])
    result = run(en_pool, 6, generator, judge, batch_size=2)
    assert [r["instruction"] for r in result.new] == texts[:6]
    assert all(r["lang"] == "en" and r["source"] == "self_instruct" for r in result.new)
    # the third batch samples its examples from a pool that holds the first two batches' output
    shown = " ".join(prompt for prompt, _ in generator.calls[4:])
    assert any(t in shown for t in texts[:4])
    assert all(len(r["source_ids"]) == 2 for r in result.new)
    # every call has its own seed: a rerun repeats every call
    seeds = [s["seed"] for _, s in generator.calls]
    assert len(set(seeds)) == len(seeds)


def test_rejections_keep_their_reason_and_are_counted():
    replies = ["Write a long guide to ships and sailors of the north.",  # accepted
               "Too short.",  # length
               "Write a long guide to ships and sailors of the north!",  # duplicate of the first
               "Write a long guide to baking bread for a whole village.",  # judge says no
               "请写一篇关于面包的指南。"]  # language (an English pool)
    generator = Scripted(replies)
    judge = Scripted(["yes", "no"])
    result = run(POOL[:2], 5, generator, judge, batch_size=5, max_candidates=5)
    assert [r["instruction"] for r in result.new] == [replies[0]]
    reasons = sorted(r["reason"].split(":")[0] for r in result.rejected)
    assert reasons == ["duplicate", "judge", "language", "length"]
    assert result.tally["self_instruct.candidates"] == 5
    assert result.tally["self_instruct.rejected.judge"] == 1


def test_a_candidate_the_judge_turned_down_does_not_block_a_later_one_like_it():
    text = "Write a long guide to ships and sailors of the north."
    generator = Scripted([text])
    judge = Scripted(["no", "yes"])
    result = run(POOL[:2], 1, generator, judge, batch_size=1, max_candidates=2)
    assert [r["reason"].split(":")[0] for r in result.rejected] == ["judge"]
    assert [r["instruction"] for r in result.new] == [text]  # judged again, not "a near-duplicate in the pool"


def test_a_failed_call_is_a_rejection_not_an_instruction():
    generator = Scripted(["Write a long guide to ships and sailors of the north."], fail_on={0})
    result = run(POOL[:2], 1, generator, Scripted(["yes"]), batch_size=1, max_candidates=2)
    assert result.rejected[0]["reason"].startswith("call_failed")
    assert len(result.new) == 1


def test_a_language_with_fewer_than_two_seeds_makes_no_candidates():
    result = run(POOL[:1] + POOL[2:3], 3, Scripted(["x"]), Scripted(["yes"]))
    assert result.new == [] and result.tally["self_instruct.candidates"] == 0


def test_the_judge_is_asked_greedily_and_without_a_repetition_penalty():
    """The stage's judge settings: a repetition penalty lowers whichever answer's tokens the
    prompt holds (the tiny model's "yes" shares its 'y' with "Reply with yes or no", its "no"
    nothing), so it would choose between yes and no by tokenization; the generation keeps the
    reference's 1.1."""
    from cluster.settings import SelfInstructSection

    section = SelfInstructSection()
    judge = Scripted(["yes"])
    asyncio.run(grow_pool(POOL[:2], 1, Scripted(["Write a long guide to ships and sailors of the north."]), judge,
                          load_prompts(), section.decoding, section.judge_decoding, random.Random(0), "r1/si",
                          batch_size=1, max_candidates=1))
    (_, fields), = judge.calls
    assert fields["temperature"] == 0.0 and fields["repetition_penalty"] == 1.0
    assert section.decoding.repetition_penalty == 1.1
