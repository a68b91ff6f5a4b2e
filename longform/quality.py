"""Quality rules a response must pass before the method keeps it.

Each rule is a function that returns None when the text passes and a short detail string when
it does not; `check_quality` runs them in order and returns the first `Rejection`. The rules
follow the language of the RESPONSE (detected), not the run, so an English answer in a
bilingual run is judged by the English rules. What a rule needs of a language is a field of its
entry in longform/languages.py:

* repeated n-gram (`ngram`, `ngram_tokens`): English: any 10 consecutive whitespace-separated
  words occurring twice. Chinese: any 13 consecutive tokens occurring twice, where a token is
  one non-ASCII character or one maximal run of ASCII characters (so "GPU 4090 " is a single
  token).
* sentence-final punctuation (`final_marks`): the text (right-stripped) must end with a mark
  that can close a sentence in its language (closing quotes and brackets included). A text that
  stops on a comma, a colon or mid-word was cut off.
* meta-talk (`meta_talk_words`; English only): the first 2 or the last 3 lines of the stripped
  text must not talk about the answer itself ("revised", "revision", "response", "version",
  "paragraph"), which is what a model writes when it narrates its edit instead of writing the text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from longform import languages
from longform.languages import LangCode
from longform.words import detect_language, guess_script, script_name


@dataclass(frozen=True)
class Rejection:
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


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


def repeated_ngram(text: str, lang: LangCode) -> str | None:
    rules = languages.get(lang)
    gram = first_repeated_ngram(rules.ngram_tokens(text), rules.ngram)
    return None if gram is None else rules.ngram_joiner.join(gram)


def missing_final_punctuation(text: str, lang: LangCode) -> str | None:
    stripped = text.rstrip()
    if stripped.endswith(tuple(languages.get(lang).final_marks)):
        return None
    return f"ends with {stripped[-12:]!r}"


def meta_talk(text: str, lang: LangCode) -> str | None:
    words = languages.get(lang).meta_talk_words
    if not words:
        return None
    lines = text.strip().split("\n")  # stripped first: trailing blank lines are not "the last lines"
    edges = "\n".join(lines[:2] + lines[-3:]).lower()
    for word in words:
        if word in edges:
            return f"mentions {word!r} in its first 2 or last 3 lines"
    return None


RULES: dict[str, Callable[[str, LangCode], str | None]] = {
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
        return Rejection("empty", f"no {languages.names('or')} text" + (f" (written in {script_name(script)})"
                                                                        if script else ""))
    for name, rule in RULES.items():
        detail = rule(text, lang)
        if detail is not None:
            return Rejection(name, detail)
    return None
