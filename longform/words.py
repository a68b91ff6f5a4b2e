"""Counting words in English, Chinese and mixed text, and telling the two languages apart.

Two rules exist in the literature and they differ, so both are here:

* `count_words` is Self-Lengthen's rule. Every character in the CJK ideograph block, the CJK
  punctuation block (U+3000-303F) and the full-width forms (U+FF00-FFEF) counts as one word;
  what remains is split on whitespace and every piece counts as one word. So "state-of-the-art"
  is 1 word, "3.5" is 1 word and "，" is 1 word.
* `count_words_lbw` is LongBench-Write's rule: CJK ideographs (U+4E00-9FFF) plus runs of ASCII
  letters between word boundaries. So "state-of-the-art" is 4 words, "3.5" is 0 words and
  Chinese punctuation is not counted.
"""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["en", "zh"]
LANGUAGES: tuple[str, ...] = ("en", "zh")

_SL_CJK_CLASS = "\u4e00-\u9fff\u3000-\u303f\uff00-\uffef"
_SL_CJK = re.compile(f"[{_SL_CJK_CLASS}]")
_SL_WORD = re.compile(f"[{_SL_CJK_CLASS}]|[^\\s{_SL_CJK_CLASS}]+")  # a CJK character, or a run of neither CJK nor space
_LBW_CJK = re.compile(r"[\u4e00-\u9fff]")
_LBW_WORD = re.compile(r"\b[a-zA-Z]+\b")
_IDEOGRAPH = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]+")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]+")
_CYRILLIC_WORD = re.compile(r"[\u0400-\u052f]+")
_KNOWN = ("A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0400-\u052f\u1100-\u11ff\u3040-\u30ff\u3130-\u318f"
          "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f")
_OTHER_WORD = re.compile(f"(?:(?![{_KNOWN}])[^\\W\\d_])+")  # runs of letters of any other script

# A Chinese (or Japanese) word is about two characters, so ideographs and kana weigh half a word
# each when scripts are compared: "Write an essay on 北京烤鸭的历史" is 4 English words against
# 3.5 Chinese ones (English), "请用 Python 写一个程序" 1 against 3 (Chinese).
CJK_CHARS_PER_WORD = 2
# Japanese writes kana among its kanji (usually a third or more of the characters); Chinese never
# does, so kana above this share of the CJK characters makes the text Japanese.
JAPANESE_KANA_SHARE = 0.1
# a `lang` label is accepted if its script makes at least this share of the text's words
LABEL_MIN_SHARE = 0.25

SCRIPT_NAMES = {"en": "English (Latin script)", "zh": "Chinese", "ja": "Japanese", "ko": "Korean",
                "ru": "Cyrillic script", "other": "a script other than Latin or Chinese"}
_LABEL_ALIASES = {"en": "en", "english": "en", "zh": "zh", "chinese": "zh"}


def count_words(text: str) -> int:
    """Self-Lengthen's word count (used for every length decision of the method): one per
    CJK character, plus one per whitespace-separated run of anything else (one regex pass)."""
    return len(_SL_WORD.findall(text))


def count_words_lbw(text: str) -> int:
    """LongBench-Write's word count (used only to score that benchmark)."""
    return len(_LBW_CJK.findall(text)) + len(_LBW_WORD.findall(text))


def script_words(text: str) -> dict[str, float]:
    """How many words of each script the text holds (see CJK_CHARS_PER_WORD): en (Latin letters),
    zh (ideographs), ja (kana), ko (Hangul), ru (Cyrillic), other (any other letters)."""
    han = len(_IDEOGRAPH.findall(text))
    kana = len(_KANA.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    hangul = len(_HANGUL.findall(text))
    cyrillic = len(_CYRILLIC_WORD.findall(text))
    other = len(_OTHER_WORD.findall(text))
    return {"en": float(latin), "zh": han / CJK_CHARS_PER_WORD, "ja": kana / CJK_CHARS_PER_WORD,
            "ko": float(hangul), "ru": float(cyrillic), "other": float(other)}


def guess_script(text: str) -> str | None:
    """The dominant script's language ('en', 'zh', 'ja', 'ko', 'ru' or 'other'), None when the
    text has no letters. Kana make Chinese characters Japanese (JAPANESE_KANA_SHARE); ties
    between Latin and Chinese go to Chinese."""
    words = script_words(text)
    cjk = words["zh"] + words["ja"]
    if cjk and words["ja"] / cjk >= JAPANESE_KANA_SHARE:
        words["ja"], words["zh"] = cjk, 0.0
    else:
        words["zh"], words["ja"] = cjk, 0.0
    best = max(words.values())
    if best == 0:
        return None
    for name in ("zh", "en", "ja", "ko", "ru", "other"):  # the order breaks ties
        if words[name] == best:
            return name
    return None


def detect_language(text: str) -> Language | None:
    """'en' or 'zh' by the dominant script (`guess_script`), None when the text has no letters
    or its dominant script is one the method does not support (Japanese, Cyrillic, ...)."""
    guess = guess_script(text)
    return guess if guess in LANGUAGES else None  # type: ignore[return-value]


def normalize_language_label(label: str) -> Language | None:
    """A `lang` label as written by people ("ZH", "zh-CN", "zh_Hans", "en-US") -> 'zh' / 'en';
    None for a language the method does not support."""
    key = label.strip().lower().replace("_", "-")  # region and script subtags: zh-CN, zh-Hans, en-US
    return _LABEL_ALIASES.get(key) or _LABEL_ALIASES.get(key.split("-", 1)[0])  # type: ignore[return-value]


def label_contradiction(text: str, label: Language) -> str | None:
    """Why the text cannot be in `label`'s language, or None: the label's script must make at
    least LABEL_MIN_SHARE of the text's words (so a mixed instruction keeps the label it was given)."""
    words = script_words(text)
    words["zh"] += words.pop("ja")
    total = sum(words.values())
    if total == 0 or words[label] / total >= LABEL_MIN_SHARE:
        return None
    guess = guess_script(text)
    return (f"lang {label!r} contradicts the text: {words[label] / total:.0%} of its words are "
            f"{SCRIPT_NAMES[label]}, it reads as {SCRIPT_NAMES.get(guess or '', guess)}")
