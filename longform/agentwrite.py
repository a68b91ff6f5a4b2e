"""AgentWrite (LongWriter, Bai et al. 2024): plan a long piece, then write it step by step.

    plan   one call: the "agentwrite_plan" prompt -> lines "Paragraph N - Main Point: ... -
           Word Count: N words" (Chinese: "第N段 - 主要内容：... - 字数要求：N字")
    write  one call per plan step, in order: the "agentwrite_write" prompt carries the
           instruction, the whole plan, all text written so far and the current step
    result the sections, plan markers stripped, joined by blank lines -> one SFT example in
           the format of longform/sft.py (`generator_example`), so training/ takes it unchanged

How a plan is read (`parse_plan`):
* a line that holds a main-point marker and a word-count marker (of any supported language,
  whatever the language of the prompt; markdown emphasis ignored) is a step; every other line
  (a title, chatter, a blank line) is ignored;
* a step whose main point is empty or whose word count holds no number is dropped and the
  line is recorded; the first number after the marker is the word count ("about 1,200 words"
  -> 1200), clamped into [200, 1000] words, the bounds the plan prompt asks for;
* steps are renumbered 1..n in the order written; the writer sees them in a canonical form;
* no step at all, or more than `max_steps` steps (the reference skips plans over 50 lines),
  fails the plan with a reason. A failed plan is asked for again, up to `plan_attempts` times.

How a written section is cleaned (`strip_plan_markers`): a line that is an echoed plan step,
or a bare "Main Point:" / "Word Count:" line, is removed; a leading "Paragraph 3 -" / "第3段："
label is cut off the line it starts.

The step line, the markers, the paragraph labels and the openings of a refusal are each
language's entry in longform/languages.py (`plan_step`, `plan_point_marker`, `plan_count_marker`,
`section_label`, `refusal`).

Failures never become text: a model call that fails (`ModelCallError`), a section that is
empty after cleaning, or one that opens with a refusal fails the whole sample with its reason.

Every finished step (each plan attempt's reply, each section's reply) is put into a
`StepCache` under "<sample key>/plan-a<k>" and "<sample key>/section-<nnn>" before the next
step starts, and read from it instead of calling the model when present, so a sample that was
interrupted resumes at its first unfinished step with the same plan and the same text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Protocol

from longform import languages
from longform.languages import LangCode
from longform.model import ChatModel, ModelCallError, user
from longform.params import Decoding, portable_fields
from longform.prompts import PromptBook
from longform.sft import generator_example
from longform.words import count_words

MIN_STEP_WORDS = 200
MAX_STEP_WORDS = 1000
MAX_STEPS = 50

_NUMBER = re.compile(r"\d[\d,，]*")
_EMPHASIS = re.compile(r"[*`#]+")


@dataclass(frozen=True)
class PlanPatterns:
    """The regexes plans and sections are read with, from every supported language's markers."""

    step_line: re.Pattern  # a main-point marker, the point, a word-count marker, the count
    label: re.Pattern  # a "Paragraph 3 -" / "第3段：" label at the start of a line
    bare_marker: re.Pattern  # a line that starts with a marker alone
    refusal: re.Pattern


@functools.lru_cache(maxsize=4)
def _patterns(table: tuple[languages.Language, ...]) -> PlanPatterns:
    point = "|".join(lang.plan_point_marker for lang in table)
    count = "|".join(lang.plan_count_marker for lang in table)
    label = "|".join(lang.section_label for lang in table)
    refusal = "|".join(lang.refusal for lang in table)
    return PlanPatterns(
        step_line=re.compile(rf"(?:{point})\s*[:：]\s*(?P<point>.*?)\s*[-–—|,，;；]*\s*(?:{count})\s*[:：]\s*"
                             r"(?P<count>.*)$", re.IGNORECASE),
        label=re.compile(rf"^[\s*#]*(?:{label})[\s*]*[-–—:：.、)]*[\s*]*", re.IGNORECASE),
        bare_marker=re.compile(rf"^\s*(?:(?:{point})|(?:{count}))\s*[:：]", re.IGNORECASE),
        refusal=re.compile(rf"^\s*(?:{refusal})", re.IGNORECASE),
    )


def patterns() -> PlanPatterns:
    return _patterns(languages.supported())


class PlanError(ValueError):
    """A plan the writer cannot follow; the message says why."""


@dataclass(frozen=True)
class PlanStep:
    number: int
    point: str
    words: int  # after clamping into [MIN_STEP_WORDS, MAX_STEP_WORDS]

    def line(self, lang: LangCode) -> str:
        return languages.get(lang).plan_step.format(number=self.number, point=self.point, words=self.words)

    def as_dict(self) -> dict:
        return {"number": self.number, "point": self.point, "words": self.words}


@dataclass
class Plan:
    steps: list[PlanStep]
    dropped: list[str] = field(default_factory=list)  # step-like lines that were unusable, with why
    clamped: int = 0  # steps whose word count was moved into the bounds

    def text(self, lang: LangCode) -> str:
        return "\n".join(step.line(lang) for step in self.steps)

    @property
    def words(self) -> int:
        return sum(step.words for step in self.steps)


def parse_step(line: str) -> tuple[str, int] | None:
    """(main point, word count as written) for a step line, None for any other line; raises
    PlanError for a step line that cannot be used."""
    match = patterns().step_line.search(_EMPHASIS.sub("", line))
    if match is None:
        return None
    point = match.group("point").strip(" -–—:：")
    number = _NUMBER.search(match.group("count"))
    if not point:
        raise PlanError("empty main point")
    if number is None:
        raise PlanError("no number after the word count marker")
    return point, int(re.sub(r"[,，]", "", number.group()))


def clamp_words(words: int) -> int:
    return min(max(words, MIN_STEP_WORDS), MAX_STEP_WORDS)


def parse_plan(text: str, max_steps: int = MAX_STEPS) -> Plan:
    steps: list[PlanStep] = []
    dropped: list[str] = []
    clamped = 0
    for line in text.splitlines():
        try:
            parsed = parse_step(line)
        except PlanError as err:
            dropped.append(f"{err}: {line.strip()[:120]}")
            continue
        if parsed is None:
            continue
        point, words = parsed
        clamped += clamp_words(words) != words
        steps.append(PlanStep(len(steps) + 1, point, clamp_words(words)))
    if not steps:
        why = f"; {len(dropped)} step lines unusable ({dropped[0]})" if dropped else ""
        raise PlanError(f"no line with a main point and a word count{why}")
    if len(steps) > max_steps:
        raise PlanError(f"{len(steps)} steps, more than the {max_steps} allowed")
    return Plan(steps, dropped, clamped)


def is_step_line(line: str) -> bool:
    try:
        return parse_step(line) is not None
    except PlanError:
        return True


def strip_plan_markers(text: str) -> str:
    p = patterns()
    lines = []
    for line in text.strip().splitlines():
        if is_step_line(line) or p.bare_marker.match(_EMPHASIS.sub("", line)):
            continue
        lines.append(p.label.sub("", line, count=1))
    cleaned = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", cleaned).strip()


def is_refusal(text: str) -> bool:
    return bool(patterns().refusal.match(text))


# -- the step cache ----------------------------------------------------------------------
class StepCache(Protocol):
    """Finished steps of samples by key; jobs/agentwrite.py keeps them on the run's storage."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, text: str) -> None: ...


class MemoryStepCache:
    def __init__(self) -> None:
        self.steps: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.steps.get(key)

    async def put(self, key: str, text: str) -> None:
        self.steps[key] = text


# -- one sample ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AgentWriteSpec:
    prompts: PromptBook
    plan_decoding: Decoding
    write_decoding: Decoding
    plan_attempts: int = 3
    max_steps: int = MAX_STEPS


@dataclass
class Sample:
    key: str
    text: str | None = None
    plan: Plan | None = None
    sections: list[str] = field(default_factory=list)
    plan_attempts: int = 0
    called: int = 0  # model calls made for this sample
    cached: int = 0  # steps read from the cache instead
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.text is not None


async def run_step(sample: Sample, cache: StepCache, step: str, model: ChatModel, prompt: str,
                   decoding: Decoding) -> str:
    """The reply for one step: from the cache if it finished before, else from the model
    (and then cached). A failed call raises ModelCallError and caches nothing."""
    key = f"{sample.key}/{step}"
    reply = await cache.get(key)
    if reply is not None:
        sample.cached += 1
        return reply
    sample.called += 1
    reply = await model.chat(user(prompt), **portable_fields(decoding, key))
    await cache.put(key, reply)
    return reply


async def make_plan(sample: Sample, instruction: str, lang: LangCode, model: ChatModel,
                    cache: StepCache, spec: AgentWriteSpec) -> Plan:
    prompt = spec.prompts.render("agentwrite_plan", lang, instruction=instruction)
    errors = []
    for attempt in range(spec.plan_attempts):
        sample.plan_attempts = attempt + 1
        reply = await run_step(sample, cache, f"plan-a{attempt}", model, prompt, spec.plan_decoding)
        try:
            return parse_plan(reply, spec.max_steps)
        except PlanError as err:
            errors.append(str(err))
    raise PlanError(f"{spec.plan_attempts} attempts, last: {errors[-1]}")


async def write_sample(instruction: str, lang: LangCode, model: ChatModel, cache: StepCache,
                       spec: AgentWriteSpec, key: str) -> Sample:
    """Plan, then write every section in order. Never raises for a model's failure: the
    sample comes back with `reason` set and `text` None."""
    sample = Sample(key)
    try:
        sample.plan = await make_plan(sample, instruction, lang, model, cache, spec)
    except PlanError as err:
        sample.reason = f"plan_unparseable: {err}"
        return sample
    except ModelCallError as err:
        sample.reason = f"model_error: plan: {err}"
        return sample
    plan_text = sample.plan.text(lang)
    for step in sample.plan.steps:
        prompt = spec.prompts.render(
            "agentwrite_write", lang, instruction=instruction, plan=plan_text,
            text="\n\n".join(sample.sections), step=step.line(lang),
        )
        try:
            reply = await run_step(sample, cache, f"section-{step.number:03d}", model, prompt, spec.write_decoding)
        except ModelCallError as err:
            sample.reason = f"model_error: step {step.number}: {err}"
            return sample
        section = strip_plan_markers(reply)
        if not section:
            sample.reason = f"empty_section: step {step.number}"
            return sample
        if is_refusal(section):
            sample.reason = f"refused: step {step.number}: {section[:80]}"
            return sample
        sample.sections.append(section)
    sample.text = "\n\n".join(sample.sections)
    return sample


def reason_category(reason: str) -> str:
    return reason.split(":", 1)[0]


def sample_record(record: dict, sample: Sample) -> dict:
    """What the job keeps of every sample, done or failed (the text goes to the SFT file)."""
    plan = sample.plan
    return {
        "id": record["id"],
        "instruction": record["instruction"],
        "lang": record["lang"],
        "source": record.get("source"),
        "status": "done" if sample.done else "failed",
        "reason": sample.reason,
        "plan": [s.as_dict() for s in plan.steps] if plan else None,
        "plan_dropped_lines": plan.dropped if plan else [],
        "plan_attempts": sample.plan_attempts,
        "sections": len(sample.sections),
        "words": count_words(sample.text) if sample.text else 0,
        "called": sample.called,
        "cached": sample.cached,
    }


def sft_example(record: dict, sample: Sample, meta: dict) -> dict:
    """The finished sample as a Generator SFT example (the format of longform/sft.py)."""
    plan = sample.plan
    return generator_example(f"{record['id']}/agentwrite", record["instruction"], sample.text, {
        **meta,
        "method": "agentwrite",
        "lang": record["lang"],
        "source_ids": [record["id"]],
        "words": count_words(sample.text),
        "planned_words": plan.words,
        "plan": [s.as_dict() for s in plan.steps],
        "section_words": [count_words(s) for s in sample.sections],
    })
