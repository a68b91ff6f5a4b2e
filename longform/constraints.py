"""Length constraints for the final data (after the last round): each kept response gets a
constraint its length satisfies, written into its query.

Types, their share, and the window a response of L words must fall in:
    about N      40%   0.8 N <= L <= 1.2 N
    range lo-hi  25%   lo <= L <= hi
    above N      10%   N <= L <= 1.5 N
    below N      25%   0.5 N <= L <= N

Numbers are round: steps of 100 words under 1,000, of 500 under 2,000, of 1,000 from 2,000 on;
where the round number would put L outside its window, the next finer step is used (down to
10). How a constraint is worded, and the sentence that appends it to a query, are the
language's `constraint_labels` and `appended_constraint` (longform/languages.py); Chinese labels
say what the window says: above is 大于 (more than N), below is 小于 (fewer than N); the
reference had these two swapped.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from longform import languages
from longform.languages import LangCode

TYPES = {"about": 0.40, "range": 0.25, "above": 0.10, "below": 0.25}
STEPS = (1000, 500, 100, 10)


@dataclass(frozen=True)
class Constraint:
    kind: str
    lo: int  # the window a response must fall in, in words
    hi: int
    numbers: tuple[int, ...]  # what the query states

    def label(self, lang: LangCode) -> str:
        template = languages.get(lang).constraint_labels[self.kind]
        if self.kind == "range":
            return template.format(lo=self.numbers[0], hi=self.numbers[1])
        return template.format(n=self.numbers[0])

    def admits(self, words: int) -> bool:
        return self.lo <= words <= self.hi


def first_step(n: float) -> int:
    return 100 if n < 1000 else 500 if n < 2000 else 1000


def window(kind: str, numbers: tuple[int, ...]) -> tuple[int, int]:
    if kind == "range":
        return numbers[0], numbers[1]
    n = numbers[0]
    return {"about": (math.ceil(0.8 * n), math.floor(1.2 * n)), "above": (n, math.floor(1.5 * n)),
            "below": (math.ceil(0.5 * n), n)}[kind]


def candidates(kind: str, words: int, step: int) -> list[tuple[int, ...]]:
    """Round numbers near `words` for one type, best first."""
    down, up = (words // step) * step, -(-words // step) * step
    if kind == "about":
        return [(round(words / step) * step,), (down,), (up,)]
    if kind == "above":  # N a little under L
        return [(max(step, (int(words / 1.2) // step) * step),), (down,)]
    if kind == "below":  # N a little over L
        return [(-(-int(words * 1.2) // step) * step,), (up,)]
    width = max(step, -(-words * 4 // 10 // step) * step)  # about 40% of L wide
    lo = max(step, ((words - width // 2) // step) * step)
    return [(lo, lo + width), (down, down + width), (max(step, up - width), up)]


def constraint_for(kind: str, words: int) -> Constraint:
    """The roundest constraint of `kind` that a response of `words` words satisfies."""
    if kind not in TYPES:
        raise ValueError(f"unknown constraint type {kind!r}; one of {sorted(TYPES)}")
    start = STEPS.index(first_step(words))
    for step in STEPS[start:]:
        for numbers in candidates(kind, words, step):
            if min(numbers) <= 0:
                continue
            c = Constraint(kind, *window(kind, numbers), numbers)
            if c.admits(words):
                return c
    raise ValueError(f"no {kind} constraint fits {words} words")


def appended_query(instruction: str, constraint: Constraint, lang: LangCode) -> str:
    """The constraint as a sentence after the query, when no rewrite states it."""
    return languages.get(lang).appended_constraint.format(instruction=instruction.rstrip(),
                                                          requirement=constraint.label(lang))


def query_record(source_id: str, round_: int | str | None, lang: LangCode, instruction: str, query: str, text: str,
                 c: Constraint, words: int, **meta) -> dict:
    """A constrained query as the final data holds it: the query and the answer as chat
    messages, and where it came from, its constraint and window, the answer's length."""
    return {"messages": [{"role": "user", "content": query}, {"role": "assistant", "content": text}],
            "meta": {"source_id": source_id, "round": round_, "lang": lang, "instruction": instruction,
                     "constraint": {"type": c.kind, "numbers": list(c.numbers), "window": [c.lo, c.hi]},
                     "words": words, **meta}}


def pick_kind(rng: random.Random) -> str:
    return rng.choices(list(TYPES), weights=list(TYPES.values()))[0]


# every type has round numbers that admit a length from here up (below 20 words some have none)
MIN_CONSTRAINED_WORDS = 20


def fitting(words: int, first: str):
    """The roundest constraint of each type that admits `words`: `first`, then the others in
    TYPES' order; a type with no round numbers for so few words is passed over."""
    for kind in (first, *(k for k in TYPES if k != first)):
        try:
            yield constraint_for(kind, words)
        except ValueError:
            continue


def drawn_constraint(words: int, rng: random.Random) -> Constraint | None:
    """The constraint collect gives an answer of `words`: of a type drawn by TYPES' weights
    (the next that fits when that one has no round numbers for so few words); None when none
    does (under MIN_CONSTRAINED_WORDS)."""
    return next(fitting(words, pick_kind(rng)), None)


def separating_constraint(words: int, others, rng: random.Random) -> Constraint | None:
    """The roundest constraint that admits `words` and none of `others` (lengths): of a type
    drawn as collect draws it, else of the next type in TYPES' order that does; None when none
    does."""
    return next((c for c in fitting(words, pick_kind(rng)) if not any(c.admits(n) for n in others)), None)


def numbers_stated(text: str, constraint: Constraint) -> bool:
    """The query states every number of its constraint (digits, with or without separators)."""
    found = {int(m.replace(",", "")) for m in re.findall(r"\d[\d,]*", text)}
    return set(constraint.numbers) <= found
