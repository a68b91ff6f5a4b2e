"""Synthetic text that stands in for a model's answers in the stand-in engines
(actors/engines.py) and synthetic instructions for the benchmarks' inputs.

The answers pass the method's quality rules (longform/quality.py), so every stage of a round
really runs on them: each sentence carries a number that is unique in its process, which makes a
repeated 10-word (English) or 13-token (Chinese) window impossible; sentences end with a full
stop; no word of the meta-talk list appears. Nothing here is a language model.
"""

from __future__ import annotations

import itertools
import json
import random

from longform.words import detect_language

EN_NOUNS = ("river", "harbor", "garden", "market", "forest", "engine", "library", "bridge", "valley",
            "orchard", "lantern", "village", "meadow", "station", "workshop", "canal", "tower", "island")
ZH_NOUNS = ("河流", "港口", "花园", "市场", "森林", "机器", "书馆", "桥梁", "山谷", "果园", "灯笼",
            "村庄", "草地", "车站", "工坊", "运河", "高塔", "海岛")
EN_SENTENCE_WORDS = 10  # "Note N explains how A and B change every C."
ZH_SENTENCE_WORDS = 12  # "第N点说明A影响B。": 11 counted characters + the number

# Numbers unique within a process: no two sentences a process writes are the same, so no text
# made of them (a prefix from one call and a continuation from a later one included) repeats
# a 10-word or 13-token window.
_numbers = itertools.count(random.SystemRandom().randrange(10**6) * 1000)


def en_sentence(n: int) -> str:
    k = len(EN_NOUNS)
    return f"Note {n} explains how {EN_NOUNS[n % k]} and {EN_NOUNS[(n // k) % k]} change every {EN_NOUNS[(n // 7) % k]}."


def zh_sentence(n: int) -> str:
    k = len(ZH_NOUNS)
    return f"第{n}点说明{ZH_NOUNS[n % k]}影响{ZH_NOUNS[(n // k) % k]}。"


def synthetic_text(lang: str, words: int, per_paragraph: int = 3) -> str:
    """About `words` words (Self-Lengthen's count) in paragraphs of `per_paragraph` sentences."""
    zh = lang == "zh"
    sentence, size, glue = (zh_sentence, ZH_SENTENCE_WORDS, "") if zh else (en_sentence, EN_SENTENCE_WORDS, " ")
    count = max(1, round(words / size))
    sentences = [sentence(next(_numbers)) for _ in range(count)]
    return "\n\n".join(glue.join(sentences[i:i + per_paragraph]) for i in range(0, count, per_paragraph))


EXTEND_MARKERS = {"Draft:\n\n": "en", "草稿：\n\n": "zh"}  # where the text starts in longform/prompts/*/extend.txt


def extend_input(prompt: str) -> tuple[str | None, str]:
    """(the text an extend prompt carries, its language), or (None, language) for any other prompt."""
    for marker, lang in EXTEND_MARKERS.items():
        if marker in prompt:
            return prompt.split(marker, 1)[1], lang
    return None, detect_language(prompt) or "en"


def synthetic_instructions(n: int, zh_share: float = 0.5, seed: int = 0) -> bytes:
    """`n` instruction lines in the loader's format (longform/instructions.py), English and Chinese."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        a, b = rng.randrange(len(EN_NOUNS)), rng.randrange(len(EN_NOUNS))
        if rng.random() < zh_share:
            row = {"id": f"zh-{i:07d}", "instruction": f"写一篇关于{ZH_NOUNS[a]}和{ZH_NOUNS[b]}的详细长文，第{i}篇。", "lang": "zh"}
        else:
            row = {"id": f"en-{i:07d}", "instruction": f"Write a detailed essay about the {EN_NOUNS[a]} and the {EN_NOUNS[b]}, number {i}.", "lang": "en"}
        lines.append(json.dumps(row, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def rough_words(text: str, lang: str) -> int:
    """A cheap upper estimate of `count_words` for the synthetic text (the instant engine must not
    spend more than the pipeline it measures): whitespace pieces in English; for Chinese 0.6 per
    character (the synthetic sentences have 12 counted words in about 20 characters)."""
    return len(text.split()) if lang == "en" else int(len(text) * 0.6) + 1


def first_sentence(text: str) -> str:
    text = text.lstrip()
    ends = [i for i in (text.find("."), text.find("。")) if i >= 0]
    return text[: min(ends) + 1] if ends else text[:80]
