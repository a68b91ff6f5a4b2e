"""AgentWrite: reading plans, writing section by section with scripted models (failures,
refusals, the step cache, sequential sections in parallel samples), the SFT format, and the
job on the served tiny model, killed and run again."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from longform.agentwrite import (
    MAX_STEP_WORDS, MIN_STEP_WORDS, AgentWriteSpec, MemoryStepCache, PlanError, parse_plan, sample_record,
    sft_example, strip_plan_markers, write_sample,
)
from longform.model import ModelCallError
from longform.params import Decoding
from longform.prompts import load_prompts
from longform.sft import generator_example
from tests.scripted import ScriptedModel

pytest_plugins = ["tests.tiny_served"]

PROMPTS = load_prompts()
INSTRUCTION = "Write a long guide to keeping bees in a city."
PLAN = """Here is my plan.

**Paragraph 1 - Main Point:** Why city bees thrive - **Word Count:** 300 words
Paragraph 2 - Main Point: Choosing a hive and a roof - Word Count: 150 words
Paragraph 3 - Main Point: The first year, month by month - Word Count: about 1,500 words
"""
SPEC = AgentWriteSpec(PROMPTS, Decoding(seed=1), Decoding(seed=1), plan_attempts=2)


# -- reading a plan -------------------------------------------------------------------------
def test_plan_lines_become_steps_with_counts_clamped_into_200_to_1000():
    plan = parse_plan(PLAN)
    assert [(s.number, s.point, s.words) for s in plan.steps] == [
        (1, "Why city bees thrive", 300),
        (2, "Choosing a hive and a roof", MIN_STEP_WORDS),
        (3, "The first year, month by month", MAX_STEP_WORDS),
    ]
    assert plan.clamped == 2 and plan.dropped == [] and plan.words == 1500
    assert plan.text("en").splitlines()[1] == \
        "Paragraph 2 - Main Point: Choosing a hive and a roof - Word Count: 200 words"


def test_chinese_plans_parse_and_unusable_step_lines_are_dropped_with_a_reason():
    plan = parse_plan("第1段 - 主要内容：城市养蜂的好处 - 字数要求：400字\n"
                      "第2段 - 主要内容： - 字数要求：300字\n"
                      "第3段 - 主要内容：蜂箱的选择 - 字数要求：若干\n"
                      "第4段 - 主要内容：第一年的工作 - 字数要求：600字")
    assert [(s.number, s.point, s.words) for s in plan.steps] == [(1, "城市养蜂的好处", 400), (2, "第一年的工作", 600)]
    assert len(plan.dropped) == 2
    assert plan.dropped[0].startswith("empty main point") and plan.dropped[1].startswith("no number")
    assert plan.text("zh").splitlines()[1] == "第2段 - 主要内容：第一年的工作 - 字数要求：600字"


@pytest.mark.parametrize("text, reason", [
    ("Bees are wonderful.\n\nThey make honey.", "no line with a main point and a word count"),
    ("Paragraph 1 - Main Point: - Word Count: 300 words", "1 step lines unusable"),
    ("", "no line with a main point"),
])
def test_a_plan_without_a_usable_step_fails_with_a_reason(text, reason):
    with pytest.raises(PlanError, match=reason):
        parse_plan(text)


def test_a_plan_with_too_many_steps_fails():
    lines = "\n".join(f"Paragraph {i} - Main Point: part {i} - Word Count: 300 words" for i in range(1, 8))
    assert len(parse_plan(lines, max_steps=7).steps) == 7
    with pytest.raises(PlanError, match="7 steps, more than the 6 allowed"):
        parse_plan(lines, max_steps=6)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_format_the_plan_template_asks_for_is_the_format_the_parser_reads(lang):
    plan = parse_plan(PROMPTS.texts[lang]["agentwrite_plan"])
    assert [s.words for s in plan.steps] == [400, 700]


def test_plan_markers_are_stripped_from_written_text():
    written = ("Paragraph 2 - Main Point: Choosing a hive - Word Count: 200 words\n\n"
               "**Paragraph 2:** A hive needs sun.\nWord Count: 200 words\n\n\n\nIt needs shelter too.\n"
               "第3段：蜂箱要朝南。")
    assert strip_plan_markers(written) == "A hive needs sun.\n\nIt needs shelter too.\n蜂箱要朝南。"


# -- writing a sample ------------------------------------------------------------------------
def section_text(prompt: str) -> str:
    step = re.search(r"Current step:\n(.*)$", prompt, re.S).group(1)
    number = re.match(r"Paragraph (\d+)", step).group(1)
    return f"Paragraph {number} - Main Point: echoed - Word Count: 300 words\nSection {number} body."


def writer(plan: str = PLAN, fail_on: str | None = None, refuse_step: int | None = None) -> ScriptedModel:
    def chat(prompt, sampling):
        if "Current step:" not in prompt:
            return plan
        if refuse_step and f"Current step:\nParagraph {refuse_step} " in prompt:
            return "I'm sorry, but I can't help with that."
        return section_text(prompt)
    return ScriptedModel(chat=chat, fail_on=fail_on)


def run(model, cache=None, spec=SPEC, key="s1"):
    return asyncio.run(write_sample(INSTRUCTION, "en", model, cache or MemoryStepCache(), spec, key))


def test_one_write_call_per_step_carrying_instruction_plan_text_so_far_and_step():
    model = writer()
    sample = run(model)
    assert sample.done and sample.reason is None
    assert len(model.calls) == 1 + 3 and sample.called == 4 and sample.cached == 0
    plan_text = sample.plan.text("en")
    writes = [c["messages"][-1]["content"] for c in model.calls[1:]]
    for i, prompt in enumerate(writes):
        assert INSTRUCTION in prompt and plan_text in prompt
        assert prompt.endswith(sample.plan.steps[i].line("en"))
        so_far = "\n\n".join(f"Section {n} body." for n in range(1, i + 1))
        assert f"Text written so far:\n{so_far}\n\nCurrent step:" in prompt
    assert sample.text == "Section 1 body.\n\nSection 2 body.\n\nSection 3 body."
    assert "Word Count" not in sample.text and "Paragraph" not in sample.text


def test_each_step_gets_its_own_seed_so_a_rerun_repeats_every_call():
    first, second = writer(), writer()
    run(first)
    run(second)
    seeds = [c["sampling"]["seed"] for c in first.calls]
    assert len(set(seeds)) == 4 and seeds == [c["sampling"]["seed"] for c in second.calls]


def test_an_unparseable_plan_is_asked_again_then_fails_the_sample():
    model = writer(plan="Bees are great. I will write about them.")
    sample = run(model)
    assert not sample.done and sample.text is None and sample.sections == []
    assert sample.reason.startswith("plan_unparseable: 2 attempts")
    assert len(model.calls) == 2 == sample.plan_attempts


def test_a_failed_call_never_becomes_text_and_fails_the_sample():
    model = writer(fail_on="Current step:\nParagraph 2 ")
    sample = run(model)
    assert sample.text is None and sample.reason.startswith("model_error: step 2: HTTP 400")
    assert sample.sections == ["Section 1 body."]


def test_a_refused_section_fails_the_sample():
    sample = run(writer(refuse_step=3))
    assert sample.text is None and sample.reason.startswith("refused: step 3")


def test_an_empty_section_fails_the_sample():
    model = ScriptedModel(chat=lambda p, s: PLAN if "Current step:" not in p
                          else "Paragraph 1 - Main Point: x - Word Count: 300 words")
    sample = run(model)
    assert sample.text is None and sample.reason == "empty_section: step 1"


def test_cached_steps_are_not_asked_again_and_the_text_continues_from_them():
    cache = MemoryStepCache()
    broken = run(writer(fail_on="Current step:\nParagraph 3 "), cache)
    assert broken.reason.startswith("model_error: step 3")
    assert sorted(cache.steps) == ["s1/plan-a0", "s1/section-001", "s1/section-002"]

    model = writer()
    resumed = run(model, cache)
    assert resumed.done and resumed.cached == 3 and resumed.called == 1
    (call,) = model.calls
    assert "Text written so far:\nSection 1 body.\n\nSection 2 body.\n\nCurrent step:" in call["messages"][-1]["content"]
    assert resumed.text == run(writer()).text


def test_samples_run_in_parallel_while_the_sections_of_one_sample_run_in_order():
    in_flight: dict[str, int] = {}
    peaks = {"sample": 0, "all": 0}

    class SlowModel:
        async def chat(self, messages, **sampling):
            prompt = messages[-1]["content"]
            sample = re.search(r"topic (\d+)", prompt).group(1)
            in_flight[sample] = in_flight.get(sample, 0) + 1
            peaks["sample"] = max(peaks["sample"], in_flight[sample])
            peaks["all"] = max(peaks["all"], sum(in_flight.values()))
            await asyncio.sleep(0.01)
            in_flight[sample] -= 1
            return PLAN if "Current step:" not in prompt else section_text(prompt)

    async def many():
        model, cache = SlowModel(), MemoryStepCache()
        return await asyncio.gather(*(write_sample(f"Write at length on topic {i}.", "en", model, cache, SPEC,
                                                   key=f"k{i}") for i in range(5)))

    samples = asyncio.run(many())
    assert all(s.done for s in samples)
    assert peaks == {"sample": 1, "all": 5}


def test_the_sft_example_has_the_format_of_longform_sft(tiny_model):
    from transformers import AutoTokenizer

    from training.sft_data import encode

    record = {"id": "en-7", "instruction": INSTRUCTION, "lang": "en", "source": "prompts.jsonl:7"}
    sample = run(writer())
    example = sft_example(record, sample, {"model_versions": {"writer": "base"}})
    reference = generator_example("x", INSTRUCTION, sample.text, {})
    assert example.keys() == reference.keys() and [m["role"] for m in example["messages"]] == ["user", "assistant"]
    assert example["messages"] == [{"role": "user", "content": INSTRUCTION},
                                   {"role": "assistant", "content": sample.text}]
    meta = example["meta"]
    assert meta["role"] == "generator" and meta["method"] == "agentwrite" and meta["source_ids"] == ["en-7"]
    assert meta["planned_words"] == 1500 and len(meta["section_words"]) == 3 and meta["model_versions"]
    # training/ reads it as it is: the answer is the assistant's labels
    encoded = encode(example["messages"], AutoTokenizer.from_pretrained(tiny_model))
    assert sum(label != -100 for label in encoded.labels) > 0
    row = sample_record(record, sample)
    assert row["status"] == "done" and row["sections"] == 3 and row["called"] == 4


def test_the_summary_shows_no_credential_of_a_url(repo, tmp_path):
    from actors.agentwrite import Writer, summarize
    from cluster.settings import load_settings
    from cluster.storage import Storage

    settings = load_settings(repo / "configs/tiny.yaml")
    writer = Writer("https://user:hunter2@llm.example/v1", "m", "endpoint:m", "KEY_VAR")
    tally = {"samples": 0, "samples.done": 0, "words": 0, "sections": 0, "steps.called": 0, "steps.cached": 0}
    result = {"tally": tally, "this_run": {}, "calls": {}, "shards": 0, "resumed_shards": 0, "seconds": 0}
    summary = summarize(settings, Storage.open(str(tmp_path), settings.storage), "s3://AKIA:hunter2@host/b/p.jsonl",
                        writer, {}, result, [])
    assert "hunter2" not in json.dumps(summary)
    assert summary["writer"]["base_url"] == "https://***@llm.example/v1"
    assert summary["prompts"] == "s3://***@host/b/p.jsonl"


# -- the job on the served tiny model --------------------------------------------------------
BAD_PROMPT_LINE = '{"instruction": 42}'


def step_files(job_dir) -> dict[str, float]:
    steps = job_dir / "steps"
    return {str(p.relative_to(steps)): p.stat().st_mtime_ns
            for p in steps.rglob("*.txt") if not p.name.startswith(".tmp")} if steps.exists() else {}


def alive_writers() -> int:
    from ray.util.state import list_actors

    return sum("AgentWriteWorker" in (a.class_name or "") for a in list_actors(filters=[("state", "=", "ALIVE")]))


@pytest.mark.cluster
def test_the_job_killed_midway_and_run_again_finishes_without_redoing_finished_steps(repo, served_tiny, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = [json.dumps({"id": f"p{i}", "instruction": text, "lang": lang}, ensure_ascii=False) for i, (text, lang) in
             enumerate([("Write a detailed essay about rain.", "en"), ("写一篇关于茶的详细文章。", "zh"),
                        ("Write a long report on city gardens.", "en")])]
    prompts.write_text("\n".join([lines[0], BAD_PROMPT_LINE, *lines[1:]]) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "jobs.agentwrite", "--config", "configs/tiny.yaml", "--prompts", str(prompts),
               "--storage", str(tmp_path / "runs"), "--run-name", "aw", "--address", served_tiny.gcs_address,
               *served_tiny.set_args, "--set", f"agentwrite.endpoint.base_url={served_tiny.base_url}",
               "--set", f"agentwrite.endpoint.model={served_tiny.model}",
               "--set", f"agentwrite.endpoint.api_key_env={served_tiny.key_var}",  # the pair is keyed
               "--set", "agentwrite.plan_decoding.max_tokens=48", "--set", "agentwrite.write_decoding.max_tokens=48",
               # one sample at a time: many sequential calls, so the kill lands in the middle
               "--set", "agentwrite.workers=1", "--set", "agentwrite.samples_in_flight=1"]
    job_dir = tmp_path / "runs/aw/agentwrite"

    driver = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while not step_files(job_dir) and driver.poll() is None and time.time() < deadline:
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        first_output = driver.communicate()[0]
    assert driver.returncode == -signal.SIGKILL, first_output[-3000:]
    deadline = time.time() + 60
    while alive_writers() and time.time() < deadline:  # the killed job's actors go with it
        time.sleep(0.5)
    before = step_files(job_dir)
    assert before, first_output[-3000:]
    assert not (job_dir / "stats").exists(), "the first run finished before it was killed"

    second = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    after = step_files(job_dir)
    summary = json.loads((job_dir / "summary.json").read_text())

    # every step finished before the kill was read back, none was asked again or rewritten
    assert summary["this_run"]["steps_cached"] == len(before)
    assert summary["this_run"]["steps_called"] == len(after) - len(before) > 0
    assert {k: after[k] for k in before} == before
    assert summary["steps"] == {"called": len(after) - len(before), "cached": len(before)}

    # every sample is accounted for; a failure has its reason and never became an example
    samples = [json.loads(line) for line in (job_dir / "samples/shard-00000.jsonl").read_text().splitlines()]
    assert summary["samples"]["total"] == 3 == len(samples)
    assert summary["samples"]["done"] + summary["samples"]["failed"] == 3
    assert all(s["reason"] for s in samples if s["status"] == "failed")
    examples = (job_dir / "sft/shard-00000.jsonl").read_text().splitlines()
    assert len(examples) == summary["samples"]["done"]
    assert summary["inputs"]["set_aside"] == 1
    (rejected,) = [json.loads(line) for line in (job_dir / "rejected/prompts.jsonl").read_text().splitlines()]
    assert rejected["line"] == 2 and "must be a string" in rejected["reason"]

    # progress while it runs, and a report at the end
    assert "shard shard-00000 done (1/1 shards)" in second.stdout and "ETA" in second.stdout
    report = (job_dir / "report.md").read_text()
    assert "## Failures" in report and "## Lengths" in report and (job_dir / "report/words.png").stat().st_size > 0
