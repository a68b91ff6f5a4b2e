"""Measures of a model's long-form output, used on the fixed probe set every round."""

from __future__ import annotations

from statistics import mean

from longform.extension import split_sentences
from longform.words import count_words


def unique_sentence_ratio(text: str) -> float:
    """Distinct sentences / sentences (1.0 for an empty text). A model that "grows" by looping
    the same sentences scores low here even when its word count rises."""
    sentences = [s for line in text.split("\n") for s in split_sentences(line)]
    if not sentences:
        return 1.0
    return len(set(sentences)) / len(sentences)


def probe_summary(texts: list[str]) -> dict:
    """Mean words and mean unique-sentence ratio of a list of answers."""
    if not texts:
        return {"n": 0, "mean_words": 0.0, "unique_sentence_ratio": 1.0}
    return {
        "n": len(texts),
        "mean_words": round(mean(count_words(t) for t in texts), 2),
        "unique_sentence_ratio": round(mean(unique_sentence_ratio(t) for t in texts), 4),
    }
