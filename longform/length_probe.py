"""Does a model write the length it is asked for? The probe instructions, each with a length
constraint appended (about / range / above / below, drawn in the collection's proportions; a
target length drawn evenly from [lo, hi] and made round as the collection makes it), scored
with LonGen's length score.

    rows = constrained_probes(probes, (2000, 8000), seed)   # LonGen rows: query, type, constraint
    summary = summarize(rows, answers)                      # score, in-window share, correlation

Besides LonGen's score (1 inside the window, falling linearly to 0 at half the lower bound and
at 1.5x the upper one) the summary gives the share of answers inside their window, the mean
words, their unique-sentence ratio (does a longer answer repeat itself?), and the rank correlation between the length asked for and the length written: a model
that only writes longer raises the score on long targets, one that reads the number raises
the correlation too.

    fixed_length_ceiling(rows)   # the best a writer that ignores the number could score here

A model that does not read the number can still score well if its one length suits the set:
`fixed_length_ceiling` is the score of the best such writer (one length per language, chosen
knowing the rows), the bound on what moving a model's length alone can reach.
"""

from __future__ import annotations

import math
import statistics

from longform.constraints import appended_query, constraint_for, pick_kind
from longform.metrics import unique_sentence_ratio
from longform.sampling import seeded_rng
from longform.scores import longen_language, longen_length_score, longen_row_score, longen_summary, longen_window


def constrained_probes(probes: list[dict], words: tuple[int, int], seed: int) -> list[dict]:
    lo, hi = words
    rows = []
    for p in probes:
        rng = seeded_rng(seed, "length-probe", p["id"])
        kind = pick_kind(rng)
        c = constraint_for(kind, rng.randint(lo, hi))
        rows.append({"id": p["id"], "query": appended_query(p["instruction"], c, p["lang"]), "type": kind,
                     "constraint": c.label(p["lang"]), "language": p["lang"], "range": f"{lo}-{hi}"})
    return rows


def rank_correlation(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None when either side is constant."""
    def ranks(values):
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return round(statistics.correlation(ranks(xs), ranks(ys)), 4)


def summarize(rows: list[dict], answers: dict[str, str | None]) -> dict:
    """`answers`: row id -> the model's text (None: the call failed, counted, left out)."""
    scored = [longen_row_score({**row, "response": answers[row["id"]]})
              for row in rows if answers.get(row["id"]) is not None]
    summary = longen_summary(scored)
    summary.update(
        n=len(scored), failed=len(rows) - len(scored),
        in_window=round(sum(s["length_score"] == 1.0 for s in scored) / len(scored), 4) if scored else None,
        mean_words=round(statistics.fmean(s["produced"] for s in scored), 1) if scored else None,
        unique_sentence_ratio=round(statistics.fmean(
            unique_sentence_ratio(answers[row["id"]]) for row in rows if answers.get(row["id"]) is not None), 4)
        if scored else None,
        asked_vs_written=rank_correlation([s["required"] for s in scored], [s["produced"] for s in scored]),
    )
    return summary


def fixed_length_ceiling(rows: list[dict]) -> dict:
    """The length score of a writer that answers every row of a language with one length (in
    that language's words), that length chosen to score best on `rows`: {"length_score": the
    mean over all rows, "by_language": {lang: {"words": the best length (the shortest of equals),
    "length_score": ...}}}. A row's score is linear between its window's corners (half the lower
    bound, the bounds, 1.5x the upper one), so the best whole length is next to one of them."""
    windows: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        windows.setdefault(str(longen_language(row)), []).append(longen_window(row["type"], row["constraint"]))
    by_language = {}
    for lang, ws in windows.items():
        corners = {n for lo, hi in ws for x in (lo / 2, lo, hi, 1.5 * hi) for n in (math.floor(x), math.ceil(x)) if n >= 1}
        best = max(sorted(corners), key=lambda n: (sum(longen_length_score(n, w) for w in ws), -n))
        by_language[lang] = {"words": best, "length_score": round(
            statistics.fmean(longen_length_score(best, w) for w in ws), 4)}
    total = sum(v["length_score"] * len(windows[lang]) for lang, v in by_language.items()) / max(1, len(rows))
    return {"length_score": round(total, 4), "by_language": by_language}
