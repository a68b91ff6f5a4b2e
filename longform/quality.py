"""Quality rules a response must pass before the method keeps it.

Each rule is a function that returns None when the text passes and a short detail string when
it does not; `check_quality` runs them in order and returns the first `Rejection`. The rules
follow the language of the RESPONSE (detected), not the run, so an English answer in a
bilingual run is judged by the English rules.

* repeated n-gram: English: any 10 consecutive whitespace-separated words occurring twice.
  Chinese: any 13 consecutive tokens occurring twice, where a token is one non-ASCII character
  or one maximal run of ASCII characters (so "GPU 4090 " is a single token).
* sentence-final punctuation: the text (right-stripped) must end with a mark that can close a
  sentence in its language (closing quotes and brackets included). A text that stops on a
  comma, a colon or mid-word was cut off.
* meta-talk (English only): the first 2 or the last 3 lines of the stripped text must not talk about the answer
  itself ("revised", "revision", "response", "version", "paragraph"), which is what a model
  writes when it narrates its edit instead of writing the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from longform.words import SCRIPT_NAMES, Language, detect_language, guess_script

NGRAM_EN = 10
NGRAM_ZH = 13
META_TALK_WORDS = ("revised", "revision", "response", "version", "paragraph")
_FINAL_EN = tuple(".!?…\"'”’)]}>`*")
_FINAL_ZH = tuple("。！？…”’）】」』》)]}>`*.!?")


@dataclass(frozen=True)
class Rejection:
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


_ZH_TOKEN = re.compile(r"[\x00-\x7f]+|[^\x00-\x7f]")


def zh_tokens(text: str) -> list[str]:
    """Chinese n-gram tokens: one token per non-ASCII character, one per run of ASCII."""
    return _ZH_TOKEN.findall(text)


def first_repeated_ngram(tokens: list[str], n: int) -> tuple[str, ...] | None:
    """The first n-gram (in text order) that occurs earlier too, or None. Every text the
    method keeps goes through here, so the common case (no repeat) is one set build in C."""
    grams = list(zip(*(tokens[i:] for i in range(n))))
    if len(set(grams)) == len(grams):
        return None
    seen: set[tuple[str, ...]] = set()
    for gram in grams:
        if gram in seen:
            return gram
        seen.add(gram)
    return None


def repeated_ngram(text: str, lang: Language) -> str | None:
    if lang == "zh":
        gram = first_repeated_ngram(zh_tokens(text), NGRAM_ZH)
        return None if gram is None else "".join(gram)
    gram = first_repeated_ngram(text.split(), NGRAM_EN)
    return None if gram is None else " ".join(gram)


def missing_final_punctuation(text: str, lang: Language) -> str | None:
    stripped = text.rstrip()
    finals = _FINAL_ZH if lang == "zh" else _FINAL_EN
    if stripped.endswith(finals):
        return None
    return f"ends with {stripped[-12:]!r}"


def meta_talk(text: str, lang: Language) -> str | None:
    if lang != "en":
        return None
    lines = text.strip().split("\n")  # stripped first: trailing blank lines are not "the last lines"
    edges = "\n".join(lines[:2] + lines[-3:]).lower()
    for word in META_TALK_WORDS:
        if word in edges:
            return f"mentions {word!r} in its first 2 or last 3 lines"
    return None


RULES: dict[str, Callable[[str, Language], str | None]] = {
    "repeated_ngram": repeated_ngram,
    "no_final_punctuation": missing_final_punctuation,
    "meta_talk": meta_talk,
}
RULE_NAMES: tuple[str, ...] = ("empty", *RULES)


def check_quality(text: str) -> Rejection | None:
    """The first rule the text breaks, or None when it passes all of them."""
    lang = detect_language(text)
    if not text.strip() or lang is None:
        script = guess_script(text)
        return Rejection("empty", "no English or Chinese text" + (f" (written in {SCRIPT_NAMES[script]})"
                                                                   if script else ""))
    for name, rule in RULES.items():
        detail = rule(text, lang)
        if detail is not None:
            return Rejection(name, detail)
    return None
