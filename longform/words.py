"""Counting words in English, Chinese and mixed text, and telling the languages apart.

Two rules exist in the literature and they differ, so both are here:

* `count_words` is Self-Lengthen's rule. Every character that a supported language counts one
  word each (Chinese: the CJK ideograph block, the CJK punctuation block U+3000-303F and the
  full-width forms U+FF00-FFEF; see longform/languages.py) is one word; what remains is split
  on whitespace and every piece counts as one word. So "state-of-the-art" is 1 word, "3.5" is
  1 word and "，" is 1 word.
* `count_words_lbw` is LongBench-Write's rule: CJK ideographs (U+4E00-9FFF) plus runs of ASCII
  letters between word boundaries. So "state-of-the-art" is 4 words, "3.5" is 0 words and
  Chinese punctuation is not counted. It is that benchmark's fixed rule, not the table's.

A text's language is the language of its dominant script (`guess_script`): the scripts are
those of the supported languages plus a few more that are recognised only so that a message can
name them (longform/languages.py, KNOWN_SCRIPTS), and "other" for letters of any other script.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from longform import languages
from longform.languages import HAN, KANA, KNOWN_SCRIPTS, LangCode, Script

# kept for modules that import these names from here (the evaluation package); new code reads
# longform.languages (`LangCode`, `codes()`), which also sees entries added later
Language = LangCode
LANGUAGES: tuple[str, ...] = languages.codes()

_LBW_CJK = re.compile(r"[\u4e00-\u9fff]")
_LBW_WORD = re.compile(r"\b[a-zA-Z]+\b")

# Japanese writes kana among its kanji (usually a third or more of the characters); Chinese never
# does, so kana above this share of the CJK characters makes the text Japanese.
JAPANESE_KANA_SHARE = 0.1
# a `lang` label is accepted if its script makes at least this share of the text's words
LABEL_MIN_SHARE = 0.25
OTHER = "other"  # the script code of letters no known script claims
OTHER_NAME = "a script other than Latin or Chinese"


@dataclass(frozen=True)
class Recogniser:
    """What the table in longform/languages.py makes of words and scripts, compiled once."""

    self_lengthen_word: re.Pattern
    scripts: tuple[Script, ...]  # in the order that breaks ties
    patterns: tuple[re.Pattern, ...]  # one per script: a letter (counted by characters) or a run
    other_word: re.Pattern  # a run of letters of no known script
    script_of: dict[str, LangCode]  # script code -> the supported language written in it
    labels: dict[str, LangCode]  # a lower-case `lang` label or alias -> its language
    script_names: dict[str, str]
    counted_char: re.Pattern  # one character that `self_lengthen_word` counts one word
    # character -> the script codes whose letters it is (OTHER: a letter no known script
    # claims; empty: not a letter), filled as characters are met
    char_scripts: dict[str, tuple[str, ...]]

    def scripts_in(self, text: str) -> set[str]:
        """The script codes of the letters in the text, from its distinct characters."""
        present: set[str] = set()
        for char in set(text):
            codes = self.char_scripts.get(char)
            if codes is None:
                codes = tuple(s.code for s, p in zip(self.scripts, self.patterns) if p.match(char))
                codes += (OTHER,) if self.other_word.match(char) else ()
                self.char_scripts[char] = codes
            present.update(codes)
        return present


@functools.lru_cache(maxsize=4)
def _build(table: tuple[languages.Language, ...]) -> Recogniser:
    chars = "".join(lang.one_word_chars for lang in table)
    word = re.compile(f"[{chars}]|[^\\s{chars}]+" if chars else r"\S+")  # a counted character, or a run
    script_of: dict[str, LangCode] = {}
    for lang in table:
        if lang.script.code in script_of:
            raise ValueError(f"languages {script_of[lang.script.code]!r} and {lang.code!r} share the script "
                             f"{lang.script.name}: a text's language is told by its script alone")
        script_of[lang.script.code] = lang.code
    known = {s.code: s for s in (*(lang.script for lang in table), *KNOWN_SCRIPTS)}
    # a tie goes to a supported language before any other script, then to a script counted by
    # characters (between Latin and Chinese: Chinese), then by the order above
    scripts = tuple(sorted(known.values(), key=lambda s: (s.code not in script_of, -s.chars_per_word)))
    patterns = tuple(re.compile(f"[{s.letters}]" if s.chars_per_word else f"[{s.letters}]+") for s in scripts)
    other = re.compile(f"(?:(?![{''.join(s.letters for s in scripts)}])[^\\W\\d_])+")
    labels = {alias: lang.code for lang in table for alias in (lang.code, *lang.aliases)}
    names = {**{s.code: s.name for s in scripts}, OTHER: OTHER_NAME}
    counted = re.compile(f"[{chars}]" if chars else "(?!)")
    return Recogniser(word, scripts, patterns, other, script_of, labels, names, counted, {})


def recogniser() -> Recogniser:
    return _build(languages.supported())


def count_words(text: str) -> int:
    """Self-Lengthen's word count (used for every length decision of the method): one per
    counted character, plus one per whitespace-separated run of anything else (one regex pass;
    a text with no counted character is split on whitespace, which counts the same)."""
    r = recogniser()
    if not r.counted_char.search(text):
        return len(text.split())
    return len(r.self_lengthen_word.findall(text))


def count_words_lbw(text: str) -> int:
    """LongBench-Write's word count (used only to score that benchmark)."""
    return len(_LBW_CJK.findall(text)) + len(_LBW_WORD.findall(text))


def script_name(code: str) -> str:
    """How messages name a script code of `guess_script`: "Chinese", "Cyrillic script", ..."""
    return recogniser().script_names[code]


def script_words(text: str) -> dict[str, float]:
    """How many words of each script the text holds, by script code (see CJK_CHARS_PER_WORD in
    longform/languages.py): en (Latin letters), zh (ideographs), ja (kana), ko (Hangul), ru
    (Cyrillic), the scripts of any added language, other (any other letters)."""
    r = recogniser()
    present = r.scripts_in(text)  # only the scripts present are scanned for (most texts: one)
    words = {s.code: float(len(p.findall(text))) / (s.chars_per_word or 1) if s.code in present else 0.0
             for s, p in zip(r.scripts, r.patterns)}
    words[OTHER] = float(len(r.other_word.findall(text))) if OTHER in present else 0.0
    return words


def guess_script(text: str) -> str | None:
    """The dominant script's code ('en', 'zh', 'ja', 'ko', 'ru', an added language's, or
    'other'), None when the text has no letters. Kana make Chinese characters Japanese
    (JAPANESE_KANA_SHARE); ties go as `Recogniser.scripts` orders them."""
    words = script_words(text)
    cjk = words[HAN.code] + words[KANA.code]
    if cjk and words[KANA.code] / cjk >= JAPANESE_KANA_SHARE:
        words[KANA.code], words[HAN.code] = cjk, 0.0
    else:
        words[HAN.code], words[KANA.code] = cjk, 0.0
    best = max(words.values())
    if best == 0:
        return None
    for name, count in words.items():  # in tie-breaking order
        if count == best:
            return name
    return None


def language_of_script(script: str | None) -> LangCode | None:
    """The supported language written in a script of `guess_script`, None if there is none."""
    return recogniser().script_of.get(script or "")


def detect_language(text: str) -> LangCode | None:
    """A supported language's code ('en', 'zh', ...) by the dominant script (`guess_script`),
    None when the text has no letters or its dominant script is one the method does not
    support (Japanese, Cyrillic, ...)."""
    return language_of_script(guess_script(text))


def normalize_language_label(label: str) -> LangCode | None:
    """A `lang` label as written by people ("ZH", "zh-CN", "zh_Hans", "en-US", "Chinese") -> 'zh'
    / 'en'; None for a language the method does not support."""
    labels = recogniser().labels
    key = label.strip().lower().replace("_", "-")  # region and script subtags: zh-CN, zh-Hans, en-US
    return labels.get(key) or labels.get(key.split("-", 1)[0])


def label_contradiction(text: str, label: LangCode) -> str | None:
    """Why the text cannot be in `label`'s language, or None: the label's script must make at
    least LABEL_MIN_SHARE of the text's words (so a mixed instruction keeps the label it was
    given). Kana count for Chinese here: kanji with kana are Chinese characters too."""
    words = script_words(text)
    total = sum(words.values())
    script = languages.get(label).script.code
    share = words[script] + (words[KANA.code] if script == HAN.code else 0.0)
    if total == 0 or share / total >= LABEL_MIN_SHARE:
        return None
    guess = guess_script(text)
    return (f"lang {label!r} contradicts the text: {share / total:.0%} of its words are "
            f"{script_name(script)}, it reads as {script_name(guess) if guess else guess}")
