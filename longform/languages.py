"""Everything the method needs to know about a language, in one table.

The method supports English ("en") and Chinese ("zh"). Whatever differs between them is a field
of a `Language` entry below, and every module that behaves differently per language reads that
field instead of testing for "en" or "zh" itself:

    longform/words.py          which characters count one word each; which script the language is
                               written in (a text's language is told by its script); its labels
    longform/quality.py        the repeated n-gram rule, the marks a finished text may end with,
                               the words that betray meta-talk
    longform/constraints.py    how a length constraint is worded, and the sentence that appends it
                               to a query when no rewrite states it (jobs/collect.py)
    longform/extension.py      where one sentence ends and the next begins
    longform/self_instruct.py  how the judge says yes; the "Instruction 3:" label a model repeats
    longform/agentwrite.py     the plan-step line, the markers a plan is read by, the paragraph
                               label cut from a section, the openings of a refusal
    longform/prompts.py, longform/instructions.py   which template folders are loaded, which
                               `lang` labels are accepted, how messages name the languages

Adding a language is therefore two things: an entry in `TABLE` (its script may be one of the
scripts below or a new `Script`), and its prompt templates in longform/prompts/<code>/, one file
per template name in longform/prompts.py's TEMPLATES. Nothing else changes;
tests/test_languages.py proves it with a made-up entry.

Languages are told apart by their script only, so two supported languages may not share one
(longform/words.py refuses such a table).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

LangCode = str  # a language's code: the `lang` of every record, and the name of its prompt folder

# A Chinese (or Japanese) word is about two characters, so ideographs and kana weigh half a word
# each when scripts are compared: "Write an essay on 北京烤鸭的历史" is 4 English words against
# 3.5 Chinese ones (English), "请用 Python 写一个程序" 1 against 3 (Chinese).
CJK_CHARS_PER_WORD = 2


@dataclass(frozen=True, eq=False)
class Script:
    """A writing system as longform/words.py recognises it."""

    code: str  # what words.guess_script answers for a text written mostly in it
    name: str  # how a message names it
    letters: str  # its letters, as the inside of a regex character class
    chars_per_word: int = 0  # 0: a run of letters is one word; n: n letters weigh one word


LATIN = Script("en", "English (Latin script)", "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f")
HAN = Script("zh", "Chinese", "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff", CJK_CHARS_PER_WORD)
KANA = Script("ja", "Japanese", "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f", CJK_CHARS_PER_WORD)
HANGUL = Script("ko", "Korean", "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af")
CYRILLIC = Script("ru", "Cyrillic script", "\u0400-\u052f")
# every script recognised even when no supported language is written in it, so that a message
# can say what an unusable text is written in; a new language's own script is added to these
KNOWN_SCRIPTS: tuple[Script, ...] = (LATIN, HAN, KANA, HANGUL, CYRILLIC)


@dataclass(frozen=True, eq=False, kw_only=True)
class Language:
    """What one language needs. The regex fields are alternatives that the modules join with
    those of the other languages (a plan or a reply is read whatever its language)."""

    code: LangCode
    name: str  # how a message names it: "English"
    script: Script
    aliases: tuple[str, ...] = ()  # other `lang` labels people write for it, lower case

    # words.py: characters that count one word each in Self-Lengthen's count (any other run of
    # non-space characters counts one word)
    one_word_chars: str = ""

    # quality.py: the same `ngram` tokens twice reject a text (shown joined by `ngram_joiner`);
    # a finished text ends with one of `final_marks`; `meta_talk_words` near its edges reject it
    ngram: int
    ngram_tokens: Callable[[str], list[str]] = str.split
    ngram_joiner: str = " "
    final_marks: str
    meta_talk_words: tuple[str, ...] = ()

    # extension.py: a regex that matches the space between two sentences
    sentence_break: str

    # self_instruct.py: the judge's yes (its first word, case-folded); the label a model may
    # repeat before the instruction it writes (a regex)
    yes: str
    instruction_label: str

    # constraints.py: the wording of each constraint type ({n}, or {lo} and {hi} for a range), and
    # the sentence that appends one to a query ({instruction}, {requirement})
    constraint_labels: Mapping[str, str]
    appended_constraint: str

    # agentwrite.py: the step line the writer is shown ({number}, {point}, {words}); regexes for
    # the main-point and word-count markers of a plan line, the "Paragraph 3" label a section
    # may start with, and the opening words of a refusal
    plan_step: str
    plan_point_marker: str
    plan_count_marker: str
    section_label: str
    refusal: str


_ASCII_RUN_OR_CHAR = re.compile(r"[\x00-\x7f]+|[^\x00-\x7f]")


def zh_tokens(text: str) -> list[str]:
    """Chinese n-gram tokens: one token per non-ASCII character, one per run of ASCII."""
    return _ASCII_RUN_OR_CHAR.findall(text)


ENGLISH = Language(
    code="en", name="English", script=LATIN, aliases=("english",),
    ngram=10, final_marks=".!?…\"'”’)]}>`*",
    meta_talk_words=("revised", "revision", "response", "version", "paragraph"),
    sentence_break=r"(?<=[.!?…])\s+",  # . ! ? followed by whitespace
    yes="yes", instruction_label=r"instruction\s*\d+\s*[:：]",
    constraint_labels={"about": "about {n} words", "range": "between {lo} and {hi} words",
                       "above": "more than {n} words", "below": "fewer than {n} words"},
    appended_constraint="{instruction} The answer should be {requirement}.",
    plan_step="Paragraph {number} - Main Point: {point} - Word Count: {words} words",
    plan_point_marker=r"main\s*points?", plan_count_marker=r"word\s*count", section_label=r"paragraph\s*\d+",
    refusal=r"i'?m sorry|i am sorry|i can(?:no|')t|i won'?t|i'm unable|i am unable|as an ai",
)

CHINESE = Language(
    code="zh", name="Chinese", script=HAN, aliases=("chinese",),
    # ideographs, CJK punctuation (U+3000-303F) and full-width forms (U+FF00-FFEF): "，" is a word
    one_word_chars="\u4e00-\u9fff\u3000-\u303f\uff00-\uffef",
    ngram=13, ngram_tokens=zh_tokens, ngram_joiner="", final_marks="。！？…”’）】」』》)]}>`*.!?",
    sentence_break=r"(?<=[。！？])\s*",  # 。！？ with or without whitespace after
    yes="是", instruction_label=r"指令\s*\d+\s*[:：]",
    # above is 大于 (more than N) and below is 小于 (fewer than N), as the windows say; the
    # reference had these two swapped
    constraint_labels={"about": "约{n}字", "range": "{lo}到{hi}字之间", "above": "大于{n}字", "below": "小于{n}字"},
    appended_constraint="{instruction}字数要求：{requirement}。",
    plan_step="第{number}段 - 主要内容：{point} - 字数要求：{words}字",
    plan_point_marker=r"主要内容|要点", plan_count_marker=r"字数要求|字数",
    section_label=r"第\s*[\d一二三四五六七八九十百]+\s*段",
    refusal=r"抱歉|对不起|很抱歉|我无法|我不能",
)

# the supported languages, in the order messages and prompt folders list them
TABLE: dict[LangCode, Language] = {lang.code: lang for lang in (ENGLISH, CHINESE)}


def supported() -> tuple[Language, ...]:
    """The table as it is now (modules cache what they build from it per table)."""
    return tuple(TABLE.values())


def codes() -> tuple[LangCode, ...]:
    return tuple(TABLE)


def get(code: LangCode) -> Language:
    try:
        return TABLE[code]
    except KeyError:
        raise KeyError(f"unsupported language {code!r} (supported: {', '.join(TABLE)})") from None


def names(conjunction: str) -> str:
    """The supported languages by name: "English or Chinese"; "English, Chinese or Greek"."""
    listed = [lang.name for lang in supported()]
    return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} {conjunction} {listed[-1]}"
