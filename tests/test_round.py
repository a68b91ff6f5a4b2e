"""One round over one shard with scripted models: every record is accounted for, the SFT
examples carry their provenance, control mode trains on drafts, and reruns repeat exactly."""

import asyncio
import random

from longform.drafts import write_draft
from longform.extension import split_units
from longform.params import Decoding, MethodParams
from longform.prompts import load_prompts
from longform.round import RoundSpec, run_shard
from longform.sft import drop_lines, to_alpaca
from tests.round_data import INSTRUCTIONS, models
from tests.scripted import ScriptedModel

PROMPTS = load_prompts()


def spec(**method):
    return RoundSpec(round=1, seed=5, params=MethodParams(extension_attempts=3, **method),
                     decoding=Decoding(seed=5), prompts=PROMPTS, versions={"generator": "base", "extender": "base"})


def shard(**method):
    gen, ext = models()
    return asyncio.run(run_shard("shard-00000", INSTRUCTIONS, gen, ext, spec(**method))), gen, ext


def test_every_draft_and_extension_is_accounted_for():
    result, gen, ext = shard()
    t = result.tally
    assert t["instructions"] == 13
    assert t["drafts.requested"] == 26 == len(result.drafts)
    statuses = [d["status"] for d in result.drafts]
    assert statuses.count("kept") + statuses.count("dropped_short") + statuses.count("rejected") == 26
    assert statuses.count("dropped_short") == t["drafts.sampled_out"]
    assert t["extensions.requested"] == 2 * statuses.count("kept") == len(result.extensions)
    assert {e["draft_id"] for e in result.extensions} == {d["id"] for d in result.drafts if d["status"] == "kept"}
    kept = [e for e in result.extensions if e["status"] == "kept"]
    assert len(kept) == t["sft.generator"] == t["sft.extender"] == len(result.generator_sft)
    assert all(e["words"] > 1.2 * e["draft_words"] for e in kept)


def test_sft_examples_carry_provenance():
    result, _, _ = shard()
    example = result.generator_sft[0]
    assert example["messages"][0]["role"] == "user" and example["messages"][1]["role"] == "assistant"
    meta = example["meta"]
    assert meta["round"] == 1 and meta["role"] == "generator" and meta["seed"] == 5
    assert meta["model_versions"] == {"generator": "base", "extender": "base"}
    assert meta["decoding"]["temperature"] == 0.7 and meta["words"] > meta["draft_words"]
    instruction_id, draft_id, extension_id = meta["source_ids"]
    assert draft_id.startswith(instruction_id) and extension_id.startswith(draft_id)
    ext = result.extender_sft[0]
    assert ext["meta"]["role"] == "extender"
    assert ext["messages"][0]["content"].startswith(PROMPTS.texts[ext["meta"]["lang"]]["extend"][:20])
    assert ext["messages"][1]["content"] == example["messages"][1]["content"]


def test_same_seed_same_records():
    first, _, _ = shard()
    second, _, _ = shard()
    assert first.generator_sft == second.generator_sft
    assert first.extender_sft == second.extender_sft


def test_control_trains_on_drafts_without_calling_the_extender():
    result, gen, ext = shard(control=True)
    assert ext.calls == [] and result.extensions == []
    kept = {d["id"]: d for d in result.drafts if d["status"] == "kept"}
    assert len(result.generator_sft) == len(kept)
    for example in result.generator_sft:
        assert example["messages"][1]["content"] == kept[example["meta"]["source_ids"][-1]]["text"]


def test_drafts_retry_on_rule_failures_and_record_them():
    answers = iter(["No final punctuation", "Still cut off,", "Now it ends."])
    model = ScriptedModel(chat=lambda p, s: next(answers))
    draft = asyncio.run(write_draft("Write.", model, Decoding(), attempts=5, key="k"))
    assert draft.text == "Now it ends." and draft.attempts == 3
    assert draft.rejections == ["no_final_punctuation", "no_final_punctuation"]
    exhausted = asyncio.run(write_draft("Write.", ScriptedModel(chat=lambda p, s: "cut"), Decoding(), 2, "k"))
    assert exhausted.text is None and exhausted.reason == "attempts_exhausted" and exhausted.attempts == 2


def test_drop_lines_keeps_about_80_percent_and_never_nothing():
    text = "\n\n".join(f"Line {i}." for i in range(1000))
    kept = split_units(drop_lines(text, 0.8, random.Random(0)))
    assert 760 < len(kept) < 840
    assert drop_lines("Only line.", 0.0001, random.Random(0)) == "Only line."


def test_drop_lines_drops_lines_inside_a_block_and_keeps_the_paragraph_breaks():
    """A heading with its list is one paragraph of several lines: lines go one by one."""
    blocks = [f"## Part {b}\n" + "\n".join(f"- item {b}.{i}" for i in range(4)) for b in range(200)]
    text = "Intro.\n\n" + "\n\n".join(blocks)
    out = drop_lines(text, 0.8, random.Random(0))
    kept = [line for line in out.split("\n") if line.strip()]
    assert 0.75 < len(kept) / 1001 < 0.85
    parts = out.split("\n\n")
    assert all(p.strip() for p in parts) and "\n\n\n" not in out  # no gap where a paragraph went
    partial = [p for p in parts if 1 < len(p.split("\n")) < 5]
    assert len(partial) > 50  # blocks that lost some of their lines and kept the others
    assert all(line in text.split("\n") for line in kept)  # lines are kept whole, in order
    assert kept == [line for line in text.split("\n") if line in set(kept)]


def test_alpaca_export():
    result, _, _ = shard()
    row = to_alpaca(result.extender_sft[0])
    assert set(row) == {"instruction", "input", "output"} and row["input"] == ""
