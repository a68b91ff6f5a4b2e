"""Length scores of the public long-output benchmarks, as plain formulas.

* LongBench-Write (LongWriter): required length x, words y (`count_words_lbw`):
      S_l = 100 * max(0, 1 - (y/x - 1)/3)   if y > x
      S_l = 100 * max(0, 1 - (x/y - 1)/2)   if y <= x;   y = 0 scores 0 (the reference crashed)
  mean over all answered prompts and per bucket of x: [0,500), [500,2k), [2k,4k), [4k,20k].
  LongWrite-Ruler uses the same S_l at required lengths 1k-30k.
* LonGen (Self-Lengthen): a window [a, b] from the constraint text (about N -> [0.8N, 1.2N];
  range lo-hi -> [lo, hi]; above N -> [N, 1.5N]; below N -> [0.5N, N]); for words L
  (`count_words`, the rule the reference's evaluator uses) the score is 1 inside, 2L/a - 1
  below and 3 - 2L/b above, floored at 0; mean per type, per range, per language and overall.
  A constraint whose window ends at 0 words ("about 0 words", "below 0 words", "0-0 words")
  asks for nothing that can be scored: reading it raises ValueError with that reason.

These live with the method, not with the benchmarks (evaluation/), because the method measures
itself with LonGen's score too: the final stage's length probe (longform/length_probe.py). The
benchmarks themselves (files, requests, judges, tables) are in evaluation/.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict

from longform.languages import ENGLISH
from longform.words import Language, count_words, detect_language

# -- LongBench-Write and LongWrite-Ruler: S_l ----------------------------------------------
LBW_BUCKETS = (("[0,500)", 0, 500), ("[500,2k)", 500, 2000), ("[2k,4k)", 2000, 4000), ("[4k,20k]", 4000, math.inf))


def lbw_length_score(required: float, words: int) -> float:
    if words <= 0:
        return 0.0
    if words > required:
        return 100 * max(0.0, 1 - (words / required - 1) / 3)
    return 100 * max(0.0, 1 - (required / words - 1) / 2)


def lbw_bucket(required: float) -> str:
    return next(label for label, low, high in LBW_BUCKETS if low <= required < high)


# -- LonGen: the window and the length score --------------------------------------------------
LONGEN_TYPES = ("about", "range", "above", "below")
_NUMBER = re.compile(r"\d[\d,]*")


def longen_window(kind: str, constraint: str) -> tuple[float, float]:
    numbers = [int(n.replace(",", "")) for n in _NUMBER.findall(constraint)]
    if kind not in LONGEN_TYPES:
        raise ValueError(f"unknown type {kind!r} (expected one of {', '.join(LONGEN_TYPES)})")
    if not numbers or (kind == "range" and len(numbers) < 2):
        raise ValueError(f"no {'two numbers' if kind == 'range' else 'number'} in the constraint {constraint!r}")
    n = numbers[0]
    if kind == "about":
        window = 0.8 * n, 1.2 * n
    elif kind == "range":
        low, high = sorted(numbers[:2])
        window = float(low), float(high)
    elif kind == "above":
        window = float(n), 1.5 * n
    else:
        window = 0.5 * n, float(n)
    if window[1] <= 0:  # the length score divides by the window's ends
        raise ValueError(f"the constraint {constraint!r} asks for 0 words")
    return window


def longen_length_score(words: int, window: tuple[float, float]) -> float:
    low, high = window
    if words < low:
        return max(0.0, 2 * words / low - 1)
    if words > high:
        return max(0.0, 3 - 2 * words / high)
    return 1.0


def longen_language(row: dict) -> Language:
    """The row's `language`, or the one its query is written in."""
    return row.get("language") or detect_language(row["query"]) or ENGLISH.code


def longen_row_score(row: dict) -> dict:
    """One answered LonGen row (query, type, constraint, response): required words (the middle
    of the window), words produced and the length score."""
    words = count_words(row["response"])
    window = longen_window(row["type"], row["constraint"])
    return {"id": row["id"], "lang": longen_language(row), "required": (window[0] + window[1]) / 2,
            "produced": words, "window": list(window), "type": row["type"], "range": row.get("range"),
            "length_score": longen_length_score(words, window)}


# -- means -------------------------------------------------------------------------------------
def mean_of(values: list[float], digits: int) -> float | None:
    return round(statistics.fmean(values), digits) if values else None


def grouped(scored: list[dict], key: str, digits: int) -> dict[str, dict]:
    """{value of `key`: {n, mean length score}}."""
    groups: dict[str, list[float]] = defaultdict(list)
    for s in scored:
        groups[str(s[key])].append(s["length_score"])
    return {k: {"n": len(v), "score": mean_of(v, digits)} for k, v in groups.items()}


def longen_summary(scored: list[dict]) -> dict:
    """LonGen's length score overall, per constraint type, per range and per language."""
    return {
        "length_score": mean_of([s["length_score"] for s in scored], 4),
        "by_type": {t: g for t in LONGEN_TYPES if (g := grouped(scored, "type", 4).get(t))},
        "by_range": dict(sorted(grouped(scored, "range", 4).items())),
        "by_language": dict(sorted(grouped(scored, "lang", 4).items())),
    }
