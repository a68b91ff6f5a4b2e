"""Preference pairs from what a Self-Lengthen run already wrote, for DPO after the final SFT.

For one instruction a run holds answers of many lengths and fates: two drafts per round, the
extension candidates (kept, sampled away, or turned down by a rule), the final stage's answers.
The final data (collect/data.jsonl) gives the instruction a length constraint and a window
[lo, hi] that one of them satisfies. For that constrained query a pair is

    chosen    an answer inside the window that passed the quality rules: the collected one,
              or, where a judge scored two or more of them, the one it scored highest
    rejected  an answer to the same instruction the constraint does not admit: shorter than the
              window (an earlier draft), longer (a later round's extension), or inside it but
              turned down by a quality rule

Rejected answers are taken nearest the window first: "about 300 words" is told more by a
230-word answer than by a 40-word one, and a rule-failing answer inside the window (distance 0)
comes before both. Answers are matched by language and instruction text (ids change across
rounds), and the same text is used once. Every pair says which records it came from and why each
side was chosen; a query with no rejectable answer is counted, with the reason.

    answers = index_answers(records)                  # drafts, extensions, final answers
    queries += extra_windows(queries, answers, 1, 60, 600, seed)  # optional: more windows an instruction
    rows = judge_requests(queries, answers)           # optional: a judge rates these: scores by id
    pairs, unpaired, tally = build_pairs(queries, answers, per_query=1, judge=scores)
    pairs, dropped = balanced(pairs, seed)            # optional: as many too-short as too-long

A run's answers grow round by round, so most rejected answers are shorter than the window: DPO
on such pairs can lower the loss by preferring the longer answer, whatever was asked.
`balanced` keeps as many pairs rejecting a too-short answer as pairs rejecting a too-long one (a
seeded draw of the larger side; rule failures inside the window are all kept), so that length
alone no longer tells chosen from rejected.

Nor do such pairs make the model read the length it is asked for: each instruction has one
window, and its chosen answer is usually its longest. `extra_windows` gives an instruction more
constrained queries, each built around another of its answers as the final data's are built
(a constraint type drawn, the roundest numbers that admit the answer, appended to the
instruction). A text chosen under its own window is then rejected under another's: what tells
chosen from rejected is the number in the query.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from longform.constraints import (TYPES, appended_query, constraint_for, drawn_constraint, query_record,
                                  separating_constraint)
from longform.quality import check_quality
from longform.sampling import seeded_rng
from longform.words import count_words

PASSED = ("kept", "dropped_short")  # dropped_short: passed the rules, not drawn by length-biased sampling


@dataclass(frozen=True)
class Answer:
    id: str
    text: str
    words: int
    passed: bool  # passed the quality rules
    fate: str  # e.g. "kept", "dropped_short", "rejected: not_longer"


def instruction_key(lang: str, instruction: str) -> tuple[str, str]:
    return lang, " ".join(instruction.split())


def index_answers(records) -> dict[tuple[str, str], list[Answer]]:
    """Drafts and extension records (any round, the final stage's too) grouped by instruction."""
    out: dict[tuple[str, str], list[Answer]] = {}
    seen: set[str] = set()
    for r in records:
        text = (r.get("text") or "").strip()
        if not text or text in seen or not r.get("instruction") or not r.get("lang"):
            continue
        seen.add(text)
        status = r.get("status") or "unknown"
        fate = status if status in PASSED else f"{status}: {r.get('reason') or 'no reason recorded'}"
        answer = Answer(str(r["id"]), text, count_words(text), status in PASSED, fate)
        out.setdefault(instruction_key(r["lang"], r["instruction"]), []).append(answer)
    for r in records:  # texts a quality rule turned down on the way to a record (longform.round.failed_field)
        failed = r.get("failed") or {}
        text = (failed.get("text") or "").strip()
        if text and text not in seen and r.get("instruction") and r.get("lang"):
            seen.add(text)
            answer = Answer(f"{r['id']}/failed", text, count_words(text), False, f"failed: {failed.get('rule')}")
            out.setdefault(instruction_key(r["lang"], r["instruction"]), []).append(answer)
    return out


def distance(words: int, lo: int, hi: int) -> int:
    return lo - words if words < lo else words - hi if words > hi else 0


def why_rejected(a: Answer, lo: int, hi: int) -> str:
    if lo <= a.words <= hi:
        return "failed_rule"
    return "under_window" if a.words < lo else "over_window"


@dataclass(frozen=True)
class Candidates:
    """One constrained query's answers: the collected one, every answer inside its window that
    passed the rules (the collected one first), and those the constraint does not admit,
    nearest the window first."""

    lo: int
    hi: int
    answers: int  # to this instruction, all told
    collected: Answer
    inside: list[Answer]
    outside: list[Answer]


def candidates(q: dict, answers: dict[tuple[str, str], list[Answer]]) -> Candidates:
    meta = q["meta"]
    lo, hi = meta["constraint"]["window"]
    text = q["messages"][-1]["content"].strip()
    pool = answers.get(instruction_key(meta["lang"], meta["instruction"]), [])
    inside = [a for a in pool if a.passed and lo <= a.words <= hi]
    collected = next((a for a in inside if a.text == text), None) or Answer(
        meta["source_id"], text, count_words(text), True, "kept")
    outside = [a for a in pool if a.text != collected.text and (not a.passed or not lo <= a.words <= hi)]
    outside.sort(key=lambda a: (distance(a.words, lo, hi), a.id))
    return Candidates(lo, hi, len(pool), collected, [collected, *(a for a in inside if a is not collected)], outside)


def extra_windows(queries: list[dict], answers: dict[tuple[str, str], list[Answer]], per_instruction: int,
                  min_words: int, max_words: int, seed: int) -> list[dict]:
    """Up to `per_instruction` more constrained queries for each instruction of `queries`, in
    their form (constraints.query_record): each around an answer that passed the rules, is
    `min_words`-`max_words` long (the final data's bounds) and that no window of the
    instruction admits yet, shortest first. The constraint type is drawn as collect draws it; where
    its window would admit the answer of one of the instruction's windows, the next type in
    TYPES' order that admits none is taken, else the answer is passed over. Their ids are the
    answers' ids."""
    windows: dict[tuple[str, str], list[tuple[int, int]]] = {}
    held: dict[tuple[str, str], list[int]] = {}  # the lengths of the answers the windows were built around
    first: dict[tuple[str, str], dict] = {}
    for q in queries:
        key = instruction_key(q["meta"]["lang"], q["meta"]["instruction"])
        windows.setdefault(key, []).append(tuple(q["meta"]["constraint"]["window"]))
        held.setdefault(key, []).append(count_words(q["messages"][-1]["content"]))
        first.setdefault(key, q["meta"])
    out = []
    for key, meta in first.items():
        added = 0
        for a in sorted(answers.get(key, []), key=lambda a: (a.words, a.id)):
            if added == per_instruction:
                break
            if not a.passed or not min_words <= a.words <= max_words or any(lo <= a.words <= hi for lo, hi in windows[key]):
                continue
            c = separating_constraint(a.words, held[key], seeded_rng(seed, "preference", a.id))
            if c is None:
                continue
            windows[key].append((c.lo, c.hi))
            held[key].append(a.words)
            added += 1
            out.append(query_record(a.id, None, meta["lang"], meta["instruction"],
                                    appended_query(meta["instruction"], c, meta["lang"]), a.text, c, a.words,
                                    origin="extra window"))
    return out


def first_queries(queries: list[dict]) -> Iterator[tuple[dict, str]]:
    """(query, answer text) of each constrained query whose answer no earlier query had."""
    seen = set()
    for q in queries:
        text = q["messages"][-1]["content"].strip()
        if text not in seen:
            seen.add(text)
            yield q, text


def distinct_answers(queries: list[dict]) -> Iterator[tuple[dict, str]]:
    """(meta, answer text) of each constrained query whose answer no earlier query had."""
    return ((q["meta"], text) for q, text in first_queries(queries))


def paragraph_cuts(text: str) -> list[tuple[str, int]]:
    """The text cut after each of its paragraphs (blank-line separated), shortest first, the
    whole text last, each with its word count."""
    paragraphs = text.strip().split("\n\n")
    return [(p, count_words(p)) for p in ("\n\n".join(paragraphs[:i]).strip() for i in range(1, len(paragraphs) + 1))]


def number_only_pairs(queries: list[dict], min_words: int, seed: int, ratio: float = 1.5) -> list[dict]:
    """A diagnostic (bench/preference.py --pairs number-only), not the stage's pairs: can DPO
    teach a model to read the number at all? Two pairs for each distinct answer T of `queries`:
    T and S, its first paragraphs (at least `min_words` words, at most 1/`ratio` of T's, passing
    the quality rules), each under a constraint that admits it and not the other
    (`separating_constraint`). Under S's constraint S is chosen over T, under T's T over S. S is
    T's own beginning, so the two sides differ only in where the answer stops, and each ending is
    chosen once and rejected once: length alone ranks half of the pairs wrong, the number asked
    ranks them all right."""
    pairs = []
    for meta, text in distinct_answers(queries):
        words = count_words(text)
        prefixes = [(p, n) for p, n in paragraph_cuts(text)[:-1] if min_words <= n <= words / ratio and check_quality(p) is None]
        if not prefixes:
            continue
        rng = seeded_rng(seed, "number-only", meta["source_id"])
        short, short_words = rng.choice(prefixes)
        sides = [(separating_constraint(short_words, [words], rng), (short, short_words), (text, words)),
                 (separating_constraint(words, [short_words], rng), (text, words), (short, short_words))]
        if any(c is None for c, _, _ in sides):
            continue
        for i, (c, chosen, rejected) in enumerate(sides):
            pairs.append({"id": f"{meta['source_id']}/number-only-{i}",
                          "prompt": [{"role": "user", "content": appended_query(meta["instruction"], c, meta["lang"])}],
                          "chosen": [{"role": "assistant", "content": chosen[0]}],
                          "rejected": [{"role": "assistant", "content": rejected[0]}],
                          "meta": {"query_id": meta["source_id"], "lang": meta["lang"],
                                   "constraint": {"type": c.kind, "numbers": list(c.numbers), "window": [c.lo, c.hi]},
                                   "chosen": {"words": chosen[1]}, "rejected": {"words": rejected[1]}}})
    return pairs


def number_examples(queries: list[dict], min_words: int, kinds_per_cut: int, seed: int) -> list[dict]:
    """A diagnostic (bench/number_reading.py), not the stage's data: SFT examples in which only the
    number asked tells where an answer stops. Every distinct answer of `queries` is cut after each
    of its paragraphs (cuts of at least `min_words` words that pass the quality rules, the whole
    answer included), and each cut is the answer to its instruction under `kinds_per_cut` of the
    four constraint types (drawn without repeats, each with the roundest numbers that admit
    the cut, as collect builds its constraints). The same beginning thus ends at several lengths,
    each under a number that admits it."""
    out = []
    for meta, text in distinct_answers(queries):
        rng = seeded_rng(seed, "number-examples", meta["source_id"])
        for i, (cut, words) in enumerate(paragraph_cuts(text)):
            if words < min_words or check_quality(cut) is not None:
                continue
            for kind in rng.sample(sorted(TYPES), min(kinds_per_cut, len(TYPES))):
                try:
                    c = constraint_for(kind, words)
                except ValueError:  # a type with no round numbers for so few words
                    continue
                out.append(query_record(f"{meta['source_id']}/cut-{i}-{kind}", meta.get("round"), meta["lang"],
                                        meta["instruction"], appended_query(meta["instruction"], c, meta["lang"]),
                                        cut, c, words, origin="paragraph cut"))
    return out


def sampled_examples(queries: list[dict], samples: list[tuple[dict, str]], min_words: int, max_words: int,
                     seed: int) -> list[dict]:
    """A diagnostic (bench/number_reading.py --samples), not the stage's data: more whole answers
    an instruction, each under a number that admits it. `samples` are (meta of the collected
    query that was asked, answer text); each distinct answer that no collected query holds, that
    passes the quality rules and is `min_words`-`max_words` long becomes an example under one
    constraint type, drawn as collect draws it, with the roundest numbers that admit it."""
    seen = {text for _, text in distinct_answers(queries)}
    out = []
    for i, (meta, text) in enumerate(samples):
        text = text.strip()
        words = count_words(text)
        if text in seen or not min_words <= words <= max_words or check_quality(text) is not None:
            continue
        seen.add(text)
        source_id = f"{meta['source_id']}/sample-{i}"
        c = drawn_constraint(words, seeded_rng(seed, "sampled", source_id))
        if c is None:
            continue
        out.append(query_record(source_id, meta.get("round"), meta["lang"], meta["instruction"],
                                appended_query(meta["instruction"], c, meta["lang"]), text, c, words,
                                origin="sampled answer"))
    return out


def judge_requests(queries: list[dict], answers: dict[tuple[str, str], list[Answer]]) -> list[dict]:
    """What a judge is asked to rate before `build_pairs(..., judge=)`: the in-window answers of
    the queries where it has a choice (two or more of them, and an answer to reject), each once,
    as rows {id, prompt: the instruction without its constraint, response}."""
    rows, seen = [], set()
    for q in queries:
        c = candidates(q, answers)
        if len(c.inside) < 2 or not c.outside:
            continue
        for a in c.inside:
            if a.id not in seen:
                seen.add(a.id)
                rows.append({"id": a.id, "prompt": q["meta"]["instruction"], "response": a.text})
    return rows


def build_pairs(queries: list[dict], answers: dict[tuple[str, str], list[Answer]], per_query: int = 1,
                judge: dict[str, float] | None = None) -> tuple[list[dict], list[dict], Counter]:
    """`queries`: collect/data.jsonl records (`messages` plus `meta` with window and instruction).
    `judge`: answer id -> quality score, when a judge rated the in-window answers: where it
    scored two or more of a query's, the best-scored one is chosen (the collected one on a tie)."""
    pairs, unpaired, tally = [], [], Counter()
    for q in queries:
        meta, c = q["meta"], candidates(q, answers)
        lo, hi = c.lo, c.hi
        chosen, chosen_why = c.collected, "collected"
        if judge:
            rated = [a for a in c.inside if a.id in judge]
            if len(rated) >= 2:  # a choice between rated answers; one rated alone is no comparison
                best = max(rated, key=lambda a: (judge[a.id], a.id == chosen.id))
                chosen, chosen_why = best, f"judge {judge[best.id]:g}, highest in the window"
        if not c.outside:
            unpaired.append({"query_id": meta["source_id"], "window": [lo, hi], "answers": c.answers,
                             "reason": "no answer to this instruction outside the window or failing a rule"})
            tally["unpaired"] += 1
            continue
        for i, rejected in enumerate(c.outside[:per_query]):
            why = why_rejected(rejected, lo, hi)
            tally[f"rejected.{why}"] += 1
            pairs.append({
                "id": f"{meta['source_id']}/pair-{i}",
                "prompt": [{"role": "user", "content": q["messages"][0]["content"]}],
                "chosen": [{"role": "assistant", "content": chosen.text}],
                "rejected": [{"role": "assistant", "content": rejected.text}],
                "meta": {"query_id": meta["source_id"], "lang": meta["lang"], "constraint": meta["constraint"],
                         "chosen": {"id": chosen.id, "words": chosen.words, "why": chosen_why},
                         "rejected": {"id": rejected.id, "words": rejected.words, "why": why,
                                      "fate": rejected.fate}},
            })
        tally["chosen." + ("judge" if chosen_why != "collected" else "collected")] += 1
    tally["pairs"] = len(pairs)
    return pairs, unpaired, tally


DIRECTIONS = ("under_window", "over_window")


def balanced(pairs: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): the larger of the too-short / too-long sides cut to the size of the
    smaller by a seeded draw; pairs rejecting a rule failure are kept. Order is preserved."""
    sides = {d: [i for i, p in enumerate(pairs) if p["meta"]["rejected"]["why"] == d] for d in DIRECTIONS}
    size = min(len(ids) for ids in sides.values())
    rng = random.Random(f"balanced:{seed}")
    drop: set[int] = set()
    for ids in sides.values():
        drop |= set(ids) - set(rng.sample(ids, size))
    kept = [p for i, p in enumerate(pairs) if i not in drop]
    dropped = [{**p, "reason": "balance: more pairs in this length direction than in the other"}
               for i, p in enumerate(pairs) if i in drop]
    return kept, dropped


def shuffled_labels(pairs: list[dict], seed: int) -> list[dict]:
    """The control of the preference experiment: chosen and rejected swapped in a seeded half of
    the pairs, so the labels carry no signal about length or rules."""
    rng = random.Random(f"shuffled-labels:{seed}")
    out = []
    for p in pairs:
        if rng.random() < 0.5:
            p = {**p, "chosen": p["rejected"], "rejected": p["chosen"], "meta": {**p["meta"], "swapped": True}}
        out.append(p)
    return out
