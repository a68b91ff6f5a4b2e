"""The judge: its prompt (built-in per language, or a file such as a benchmark's official one),
its verdicts and their means.

A verdict the judge writes that cannot be read (no JSON object, a dimension missing, a score
out of range) is asked for again up to `attempts` times; after that it is counted and listed as
unparseable, never guessed (the reference filled missing dimensions with 3). The rubric (which
dimensions, which range, how the means become a score) is the benchmark's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import statistics
from dataclasses import dataclass

from evaluation.benchmark import Benchmark, Rubric
from evaluation.generation import Progress, log
from evaluation.registry import get
from longform.model import ChatModel, ModelCallError, user
from longform.params import Decoding, portable_fields
from longform.prompts import PromptBook
from longform import languages


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


def judge_provenance(judge: ChatModel, prompts: PromptBook, benchmark: str | Benchmark, decoding: Decoding,
                     wording: JudgeWording | None) -> dict:
    """What a quality score depends on, recorded with it: judge model, sampling, prompt and its hash."""
    if wording is not None:
        prompt, digest = wording.source, wording.sha256
    else:
        template = get(benchmark).rubric.template
        prompt = f"built-in {template} (en, zh)"
        digest = hashlib.sha256("\n".join(prompts.texts[lang][template] for lang in languages.codes()).encode()).hexdigest()
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


async def judge_response(judge: ChatModel, prompts: PromptBook, benchmark: str | Benchmark, row: dict,
                         decoding: Decoding, attempts: int, wording: JudgeWording | None = None) -> dict:
    """One verdict record: status ok (with scores), unparseable (with the last reason and
    reply) or error (the judge could not be called). `wording` replaces the built-in prompt."""
    benchmark = get(benchmark)
    rubric = benchmark.rubric
    if wording is not None:
        prompt = wording.render(benchmark.prompt(row), row["response"])
    else:
        prompt = prompts.render(rubric.template, benchmark.language(row),
                                instruction=benchmark.prompt(row), response=row["response"])
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


def quality_summary(benchmark: str | Benchmark, verdicts: list[dict]) -> dict:
    """Counts of verdicts by status, the ones not scored, and the benchmark's quality scores
    from the means of the parsed ones."""
    benchmark = get(benchmark)
    ok = [v["scores"] for v in verdicts if v["status"] == "ok"]
    summary = {
        "judged": len(ok),
        "unparseable": sum(v["status"] == "unparseable" for v in verdicts),
        "judge_errors": sum(v["status"] == "error" for v in verdicts),
        "not_scored": [{"id": v["id"], "status": v["status"], "reason": v["reason"]}
                       for v in verdicts if v["status"] != "ok"],
    }
    means = {dim: statistics.fmean(s[dim] for s in ok) for dim in benchmark.rubric.dimensions} if ok else {}
    return {**summary, **benchmark.quality(means)}


async def judge_all(judge: ChatModel, benchmark: str | Benchmark, rows: list[dict], prompts: PromptBook,
                    decoding: Decoding, attempts: int, concurrency: int, wording: JudgeWording | None = None,
                    log=log) -> list[dict]:
    """A verdict for every answered row, `concurrency` at a time, with a progress line now and then."""
    answered = [r for r in rows if isinstance(r.get("response"), str)]
    limit = asyncio.Semaphore(concurrency)
    progress = Progress("verdicts", len(answered), log)

    async def one(row: dict) -> dict:
        async with limit:
            verdict = await judge_response(judge, prompts, benchmark, row, decoding, attempts, wording)
        progress.tick(verdict["status"] == "ok")
        return verdict

    return list(await asyncio.gather(*(one(r) for r in answered)))
