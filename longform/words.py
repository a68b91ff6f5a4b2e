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
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def count_words(text: str) -> int:
    """Self-Lengthen's word count (used for every length decision of the method): one per
    CJK character, plus one per whitespace-separated run of anything else (one regex pass)."""
    return len(_SL_WORD.findall(text))


def count_words_lbw(text: str) -> int:
    """LongBench-Write's word count (used only to score that benchmark)."""
    return len(_LBW_CJK.findall(text)) + len(_LBW_WORD.findall(text))


def detect_language(text: str) -> Language | None:
    """'zh' when Chinese ideographs outnumber Latin words, 'en' when Latin words dominate,
    None when the text has neither (empty, digits only, another script)."""
    ideographs = len(_IDEOGRAPH.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    if ideographs == 0 and latin == 0:
        return None
    return "zh" if ideographs >= latin else "en"
