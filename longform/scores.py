"""Scores of the public long-output benchmarks, as plain functions.

* LongBench-Write (LongWriter): required length x, words y (`count_words_lbw`):
      S_l = 100 * max(0, 1 - (y/x - 1)/3)   if y > x
      S_l = 100 * max(0, 1 - (x/y - 1)/2)   if y <= x;   y = 0 scores 0 (the reference crashed)
  mean over all answered prompts and per bucket of x: [0,500), [500,2k), [2k,4k), [4k,20k].
  S_q: a judge rates 6 dimensions from 1 to 5; each dimension's mean m over the judged
  responses maps to (m - 1) * 25; S_q is the mean of the six; S = (S_l + S_q) / 2.
* LongWrite-Ruler: the same prompts at required lengths 1k-30k; reported per required length
  as the words produced (mean, median, mean / required) and S_l.
* LonGen (Self-Lengthen): a window [a, b] from the constraint text (about N -> [0.8N, 1.2N];
  range lo-hi -> [lo, hi]; above N -> [N, 1.5N]; below N -> [0.5N, N]); for words L
  (`count_words`, the rule the reference's evaluator uses) the score is 1 inside, 2L/a - 1
  below and 3 - 2L/b above, floored at 0; mean per type, per range, per language and overall.
  Quality: a judge rates 7 dimensions from 1 to 10; reported as the mean per dimension and
  their mean. A constraint whose window ends at 0 words ("about 0 words", "below 0 words",
  "0-0 words") asks for nothing that can be scored: its line is set aside with that reason.

Benchmark files: a line that does not parse or lacks a field is set aside with its line number
and reason, never guessed; `length` may be written as an integral float (300.0), not 300.5.

A verdict the judge writes that cannot be read (no JSON object, a dimension missing, a score
out of range) is asked for again up to `attempts` times; after that it is counted and listed as
unparseable, never guessed (the reference filled missing dimensions with 3). A response whose
generation failed (`response` null) is counted and listed, and left out of the means.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass

from longform.model import ChatModel, ModelCallError, user
from longform.params import Decoding, portable_fields  # noqa: F401 (re-exported for now)
from longform.prompts import PromptBook
from longform.words import LANGUAGES, Language, count_words, count_words_lbw, detect_language

BENCHMARKS = ("longbench-write", "longwrite-ruler", "longen")

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


# -- benchmark files ----------------------------------------------------------------------------
@dataclass
class BenchmarkFile:
    rows: list[dict]
    rejected: list[dict]


def check_row(benchmark: str, row: dict, with_response: bool) -> dict:
    """The row with its numbers normalised (`length` 300.0 -> 300); raise ValueError saying
    what is wrong with it."""
    row = dict(row)

    def need(field: str, kind: type) -> None:
        if field not in row:
            raise ValueError(f"missing field {field!r}")
        value = row[field]
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"field {field!r} must be a whole number, got {value!r}")
            row[field] = value = int(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"field {field!r} must be {kind.__name__}, got {type(value).__name__}")

    if benchmark == "longen":
        need("query", str)
        need("type", str)
        need("constraint", str)
        longen_window(row["type"], row["constraint"])
        if row.get("language") not in (None, *LANGUAGES):
            raise ValueError(f"unknown language {row['language']!r}")
    else:
        need("prompt", str)
        need("length", int)
        if row["length"] <= 0:
            raise ValueError(f"field 'length' must be positive, got {row['length']}")
    if with_response:
        if "response" not in row:
            raise ValueError("missing field 'response'")
        if row["response"] is not None and not isinstance(row["response"], str):
            raise ValueError(f"field 'response' must be a string or null, got {type(row['response']).__name__}")
    return row


def parse_benchmark(data: bytes, benchmark: str, source: str, stem: str, with_response: bool = False) -> BenchmarkFile:
    """Rows of a benchmark (or responses) JSONL; a bad line is set aside with its line number
    and reason. Each row keeps its fields and gets an `id` ("<stem>-<line>" unless it has one)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r} (expected one of {', '.join(BENCHMARKS)})")
    out = BenchmarkFile([], [])
    seen: set[str] = set()
    data = data.removeprefix(codecs.BOM_UTF8)  # written by some editors; not part of line 1
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"not a JSON line: {err}") from None
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            row = check_row(benchmark, row, with_response)
            row_id = str(row.get("id", f"{stem}-{line_no}"))
            if row_id in seen:
                raise ValueError(f"duplicate id {row_id!r}")
        except ValueError as err:
            out.rejected.append({"file": source, "line": line_no, "reason": str(err),
                                 "text": raw[:200].decode("utf-8", "replace")})
            continue
        seen.add(row_id)
        out.rows.append({**row, "id": row_id})
    return out


MOST_SET_ASIDE = 0.5  # a file with a larger share of its lines set aside is not worth scoring


def unusable(parsed: BenchmarkFile, source: str, what: str = "rows") -> str | None:
    """Why a parsed file should stop the job (no usable line, or more than MOST_SET_ASIDE of its
    lines set aside, with the first reasons); None when it can be used."""
    lines = len(parsed.rows) + len(parsed.rejected)
    if parsed.rows and len(parsed.rejected) <= MOST_SET_ASIDE * lines:
        return None
    if not lines:
        return f"{source}: no usable line"
    first = "; ".join(f"line {r['line']}: {r['reason']}" for r in parsed.rejected[:3])
    return (f"{source}: {len(parsed.rejected)} of {lines} lines set aside as {what} ({len(parsed.rows)} usable); "
            f"first: {first}")


def evenly_spaced(rows: list[dict], limit: int | None) -> list[dict]:
    """`limit` rows spread over the file (a benchmark is ordered by length: the head alone
    would hold only its shortest prompts)."""
    if limit is None or limit >= len(rows):
        return list(rows)
    return [rows[i * len(rows) // limit] for i in range(limit)]


def prompt_of(benchmark: str, row: dict) -> str:
    return row["query"] if benchmark == "longen" else row["prompt"]


def language_of(benchmark: str, row: dict) -> Language:
    if benchmark == "longen" and row.get("language"):
        return row["language"]
    return detect_language(prompt_of(benchmark, row)) or "en"


def required_words(benchmark: str, row: dict) -> float:
    """What the prompt asks for, as one number (LonGen: the middle of its window)."""
    if benchmark == "longen":
        low, high = longen_window(row["type"], row["constraint"])
        return (low + high) / 2
    return float(row["length"])


def produced_words(benchmark: str, text: str) -> int:
    """Each benchmark counts with its reference evaluator's rule."""
    return count_words(text) if benchmark == "longen" else count_words_lbw(text)


# -- length scores -------------------------------------------------------------------------------
def score_row(benchmark: str, row: dict) -> dict:
    words = produced_words(benchmark, row["response"])
    scored = {"id": row["id"], "lang": language_of(benchmark, row),
              "required": required_words(benchmark, row), "produced": words}
    if benchmark == "longen":
        window = longen_window(row["type"], row["constraint"])
        scored.update(window=list(window), type=row["type"], range=row.get("range"),
                      length_score=longen_length_score(words, window))
    else:
        scored.update(length_score=lbw_length_score(row["length"], words), bucket=lbw_bucket(row["length"]))
    return scored


def mean_of(values: list[float], digits: int) -> float | None:
    return round(statistics.fmean(values), digits) if values else None


def grouped(scored: list[dict], key: str, digits: int) -> dict[str, dict]:
    groups: dict[str, list[float]] = defaultdict(list)
    for s in scored:
        groups[str(s[key])].append(s["length_score"])
    return {k: {"n": len(v), "score": mean_of(v, digits)} for k, v in groups.items()}


def length_summary(benchmark: str, scored: list[dict]) -> dict:
    if benchmark == "longbench-write":
        buckets = grouped(scored, "bucket", 2)
        ordered = {label: buckets.get(label, {"n": 0, "score": None}) for label, _, _ in LBW_BUCKETS}
        return {"S_l": mean_of([s["length_score"] for s in scored], 2), "S_l_buckets": ordered}
    if benchmark == "longwrite-ruler":
        per_length = {}
        for required in sorted({s["required"] for s in scored}):
            words = [s["produced"] for s in scored if s["required"] == required]
            per_length[str(int(required))] = {
                "n": len(words), "mean_words": mean_of(words, 1), "median_words": statistics.median(words),
                "ratio": round(statistics.fmean(words) / required, 3),
                "S_l": mean_of([s["length_score"] for s in scored if s["required"] == required], 2),
            }
        return {"S_l": mean_of([s["length_score"] for s in scored], 2), "per_length": per_length}
    return {
        "length_score": mean_of([s["length_score"] for s in scored], 4),
        "by_type": {t: g for t in LONGEN_TYPES if (g := grouped(scored, "type", 4).get(t))},
        "by_range": dict(sorted(grouped(scored, "range", 4).items())),
        "by_language": dict(sorted(grouped(scored, "lang", 4).items())),
    }


# -- judges -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rubric:
    template: str
    dimensions: tuple[str, ...]
    low: int
    high: int


RUBRICS = {
    "longbench-write": Rubric("judge_longbench_write", ("Relevance", "Accuracy", "Coherence", "Clarity",
                                                        "Breadth and Depth", "Reading Experience"), 1, 5),
    "longen": Rubric("judge_longen", ("Relevance", "Coherence", "Accuracy", "Consistency", "Clarity",
                                      "Creativity", "Engagement"), 1, 10),
}


@dataclass(frozen=True)
class JudgeWording:
    """A judge prompt from a file (`evaluation.judge_prompt`), e.g. a benchmark's official one,
    so that quality scores can be compared with published numbers. The request and the
    response go where the text says `$INST$` and `$RESPONSE$` (LongWriter's slots) or
    `{instruction}` and `{response}`; they are put in by plain replacement, since such prompts
    hold JSON braces of their own. The reply must still carry the rubric's dimensions."""

    text: str
    source: str

    SLOTS = {"instruction": ("$INST$", "{instruction}"), "response": ("$RESPONSE$", "{response}")}

    @classmethod
    def parse(cls, text: str, source: str) -> "JudgeWording":
        if not any(slot in text for slot in cls.SLOTS["response"]):
            raise ValueError(f"{source}: a judge prompt needs a place for the response "
                             f"($RESPONSE$ or {{response}}); none found")
        return cls(text, source)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def render(self, instruction: str, response: str) -> str:
        values = {"instruction": instruction, "response": response}
        # one pass over the text, so that a response holding "$INST$" is left as it is
        pattern = "|".join(re.escape(slot) for slots in self.SLOTS.values() for slot in slots)
        slot_of = {slot: name for name, slots in self.SLOTS.items() for slot in slots}
        return re.sub(pattern, lambda m: values[slot_of[m.group(0)]], self.text)


def judge_provenance(judge: ChatModel, prompts: PromptBook, benchmark: str, decoding: Decoding,
                     wording: JudgeWording | None) -> dict:
    """What a quality score depends on, recorded with it: judge model, sampling, prompt and its hash."""
    if wording is not None:
        prompt, digest = wording.source, wording.sha256
    else:
        template = RUBRICS[benchmark].template
        prompt = f"built-in {template} (en, zh)"
        digest = hashlib.sha256("\n".join(prompts.texts[lang][template] for lang in LANGUAGES).encode()).hexdigest()
    return {"model": getattr(judge, "model", None), "decoding": decoding.model_dump(), "prompt": prompt,
            "prompt_sha256": digest}


class VerdictError(ValueError):
    """A judge's reply that holds no usable scores; the message says why."""


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def json_object(text: str) -> dict:
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.DOTALL)
    candidate = fenced.group(1) if fenced else text[text.find("{"): text.rfind("}") + 1]
    if not candidate:
        raise VerdictError("no JSON object in the reply")
    for attempt in (candidate, candidate.replace("\n", " ")):
        try:
            obj = json.loads(attempt)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    raise VerdictError("the JSON object in the reply does not parse")


def parse_verdict(text: str, rubric: Rubric) -> dict[str, float]:
    """The judge's scores by dimension; raises VerdictError when any is missing or not a
    number in [low, high] (dimension names match ignoring case, spaces and punctuation)."""
    found = {_key(k): v for k, v in json_object(text).items()}
    scores = {}
    for dim in rubric.dimensions:
        value = found.get(_key(dim))
        if value is None:
            raise VerdictError(f"no score for {dim}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise VerdictError(f"{dim}: {value!r} is not a number") from None
        if isinstance(value, bool) or not rubric.low <= number <= rubric.high:
            raise VerdictError(f"{dim}: {value!r} is not between {rubric.low} and {rubric.high}")
        scores[dim] = number
    return scores


async def judge_response(judge: ChatModel, prompts: PromptBook, benchmark: str, row: dict,
                         decoding: Decoding, attempts: int, wording: JudgeWording | None = None) -> dict:
    """One verdict record: status ok (with scores), unparseable (with the last reason and
    reply) or error (the judge could not be called). `wording` replaces the built-in prompt."""
    rubric = RUBRICS[benchmark]
    if wording is not None:
        prompt = wording.render(prompt_of(benchmark, row), row["response"])
    else:
        prompt = prompts.render(rubric.template, language_of(benchmark, row),
                                instruction=prompt_of(benchmark, row), response=row["response"])
    verdict = {"id": row["id"], "status": "unparseable", "scores": None, "reason": None, "attempts": 0, "raw": None}
    for attempt in range(attempts):
        verdict["attempts"] = attempt + 1
        try:
            reply = await judge.chat(user(prompt), **portable_fields(decoding, f"judge/{row['id']}/a{attempt}"))
        except ModelCallError as err:
            verdict.update(status="error", reason=f"model_error: {err}")
            return verdict
        verdict["raw"] = reply[:2000]
        try:
            verdict.update(status="ok", scores=parse_verdict(reply, rubric), reason=None)
            return verdict
        except VerdictError as err:
            verdict["reason"] = str(err)
    return verdict


def quality_summary(benchmark: str, verdicts: list[dict]) -> dict:
    rubric = RUBRICS[benchmark]
    ok = [v["scores"] for v in verdicts if v["status"] == "ok"]
    summary = {
        "judged": len(ok),
        "unparseable": sum(v["status"] == "unparseable" for v in verdicts),
        "judge_errors": sum(v["status"] == "error" for v in verdicts),
        "not_scored": [{"id": v["id"], "status": v["status"], "reason": v["reason"]}
                       for v in verdicts if v["status"] != "ok"],
    }
    means = {dim: statistics.fmean(s[dim] for s in ok) for dim in rubric.dimensions} if ok else {}
    if benchmark == "longbench-write":
        dims = {dim: round((m - 1) * 25, 2) for dim, m in means.items()}
        summary.update(dimensions=dims, S_q=mean_of(list(dims.values()), 2))
    else:
        dims = {dim: round(m, 2) for dim, m in means.items()}
        summary.update(dimensions=dims, quality=mean_of(list(dims.values()), 2))
    return summary


# -- one benchmark, all together ----------------------------------------------------------------
def score_benchmark(benchmark: str, rows: list[dict], verdicts: list[dict] | None) -> tuple[dict, list[dict]]:
    """(scores, per-row length scores). `verdicts` None: no judge, quality scores are null."""
    answered = [r for r in rows if isinstance(r.get("response"), str)]
    failed = [{"id": r["id"], "error": r.get("error")} for r in rows if not isinstance(r.get("response"), str)]
    scored = [score_row(benchmark, r) for r in answered]
    scores = {"benchmark": benchmark, "prompts": len(rows), "answered": len(answered),
              "failed_responses": failed, **length_summary(benchmark, scored)}
    quality = quality_summary(benchmark, verdicts) if verdicts is not None and benchmark in RUBRICS else None
    if benchmark == "longbench-write":
        s_q = quality["S_q"] if quality else None
        s_l = scores["S_l"]
        scores.update(S_q=s_q, S=round((s_l + s_q) / 2, 2) if s_q is not None and s_l is not None else None)
    elif benchmark == "longen":
        scores["quality_score"] = quality["quality"] if quality else None
    scores["quality"] = quality
    return scores, scored
