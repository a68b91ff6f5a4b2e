"""Length-biased sampling: thin out the short tail of a set of texts.

Sort the texts by length; a text at sorted position i of n has rank r = 1 - i/n (the shortest
has r = 1, the longest r close to 0; ties take their first position). Keep it when a uniform
draw exceeds 2 r^3. The shortest fifth or so is almost always dropped and about 60% of the whole
set survives, so every round's training data leans longer than the model's own output.

Length is the Self-Lengthen word count, not characters as in the reference code, so that in
a bilingual run Chinese texts (few characters per word counted) are not dropped ahead of
English ones of the same length.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def length_biased_sample(
    items: Sequence[T], length_of: Callable[[T], int], rng: random.Random
) -> tuple[list[T], list[T]]:
    """Split `items` into (kept, dropped). Deterministic for a given rng state and item order."""
    lengths = sorted(length_of(item) for item in items)
    n = len(lengths)
    kept: list[T] = []
    dropped: list[T] = []
    for item in items:
        rank = 1.0 - bisect.bisect_left(lengths, length_of(item)) / n
        (kept if rng.random() > 2.0 * rank**3 else dropped).append(item)
    return kept, dropped


def seeded_rng(*parts: object) -> random.Random:
    """A generator seeded from a readable key such as (seed, round, shard, stage).
    String seeds are hashed with SHA-512 by `random`, so this does not depend on PYTHONHASHSEED."""
    return random.Random(":".join(str(p) for p in parts))
