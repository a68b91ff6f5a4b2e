"""One round of Self-Lengthen over one shard of instructions, as plain async Python.

    instructions
      -> drafts: `responses_per_instruction` per instruction, each retried until it passes the
         quality rules                                                        [Generator]
      -> length-biased sampling of the passing drafts
      -> extensions: `extensions_per_draft` per kept draft, two-stage, up to 3 micro-steps,
         kept only above 1.2x the draft                                        [Extender]
      -> length-biased sampling of the passing extensions
      -> SFT examples for the Generator and the Extender.

All records of a shard are requested concurrently, but a shard's extensions start only when
all its drafts are in: length-biased sampling ranks the whole shard's drafts first (and its
extensions after). Streaming happens across shards: `actors.synthesis` (on actors/shards.py) runs several shards at
once through Ray Data, so one shard's extensions run while another's drafts are written
(bench/streaming.py measures what that gains over a per-stage barrier).

Nothing is lost: every draft and extension is returned with a `status` ("kept",
"dropped_short", "rejected") and a `reason`, and `tally` counts every outcome per rule.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from longform.drafts import Draft, write_draft
from longform.extension import Extension, extend
from longform.model import ChatModel
from longform.params import Decoding, MethodParams
from longform.prompts import PromptBook
from longform.sampling import length_biased_sample, seeded_rng
from longform.sft import extender_example, generator_example
from longform.words import count_words


@dataclass(frozen=True)
class RoundSpec:
    round: int
    seed: int
    params: MethodParams
    decoding: Decoding
    prompts: PromptBook
    versions: dict[str, str] = field(default_factory=dict)  # role -> weights served this round


@dataclass
class ShardResult:
    drafts: list[dict] = field(default_factory=list)
    extensions: list[dict] = field(default_factory=list)
    generator_sft: list[dict] = field(default_factory=list)
    extender_sft: list[dict] = field(default_factory=list)
    tally: Counter = field(default_factory=Counter)


def category(reason: str) -> str:
    return reason.split(":", 1)[0]


def draft_record(spec: RoundSpec, inst: dict, index: int, draft: Draft) -> dict:
    return {
        "id": f"{inst['id']}/d{index}",
        "round": spec.round,
        "instruction_id": inst["id"],
        "instruction": inst["instruction"],
        "lang": inst["lang"],
        "text": draft.text,
        "words": draft.words,
        "attempts": draft.attempts,
        "rejections": draft.rejections,
        "status": "kept" if draft.text is not None else "rejected",
        "reason": draft.reason,
        **failed_field(draft.failed),
    }


def extension_record(spec: RoundSpec, draft: dict, index: int, ext: Extension) -> dict:
    return {
        "id": f"{draft['id']}/x{index}",
        "round": spec.round,
        "instruction_id": draft["instruction_id"],
        "draft_id": draft["id"],
        "instruction": draft["instruction"],
        "lang": draft["lang"],
        "draft": draft["text"],
        "draft_words": ext.draft_words,
        "text": ext.text,
        "words": ext.words,
        "attempts": ext.attempts,
        "steps": [s.as_dict() for s in ext.steps],
        "status": "kept" if ext.text is not None else "rejected",
        "reason": ext.reason,
        **failed_field(ext.failed),
    }


def failed_field(failed: tuple[str, str] | None) -> dict:
    """The last text a quality rule turned down on the way to this record, kept for the
    preference stage (a rejected answer it need not generate); nothing when there was none."""
    if failed is None:
        return {}
    text, rule = failed
    return {"failed": {"text": text, "words": count_words(text), "rule": rule}}


def sample_in_place(records: list[dict], spec: RoundSpec, shard: str, stage: str, tally: Counter):
    """Length-biased sampling over the records that are still kept; marks the dropped ones."""
    alive = [r for r in records if r["status"] == "kept"]
    if not spec.params.length_biased_sampling or not alive:
        return
    _, dropped = length_biased_sample(
        alive, lambda r: r["words"], seeded_rng(spec.seed, spec.round, shard, stage)
    )
    for record in dropped:
        record["status"], record["reason"] = "dropped_short", "length_biased_sampling"
    tally[f"{stage}.sampled_out"] += len(dropped)


async def make_drafts(instructions: list[dict], generator: ChatModel, spec: RoundSpec, tally: Counter):
    wanted = [(inst, j) for inst in instructions for j in range(spec.params.responses_per_instruction)]
    drafts = await asyncio.gather(*(
        write_draft(inst["instruction"], generator, spec.decoding, spec.params.draft_attempts,
                    key=f"r{spec.round}/{inst['id']}/d{j}")
        for inst, j in wanted
    ))
    records = [draft_record(spec, inst, j, d) for (inst, j), d in zip(wanted, drafts)]
    for record in records:
        tally["drafts.requested"] += 1
        tally["drafts.attempts"] += record["attempts"]
        for rule in record["rejections"]:
            tally[f"drafts.rejected_attempt.{rule}"] += 1
        if record["status"] == "kept":
            tally["drafts.passed"] += 1
        else:
            tally[f"drafts.failed.{category(record['reason'])}"] += 1
    return records


async def make_extensions(drafts: list[dict], extender: ChatModel, spec: RoundSpec, tally: Counter):
    wanted = [(d, k) for d in drafts if d["status"] == "kept" for k in range(spec.params.extensions_per_draft)]
    extensions = await asyncio.gather(*(
        extend(d["instruction"], d["text"], d["lang"], extender, spec.prompts, spec.params,
               spec.decoding, key=f"r{spec.round}/{d['id']}/x{k}")
        for d, k in wanted
    ))
    records = [extension_record(spec, d, k, e) for (d, k), e in zip(wanted, extensions)]
    for record in records:
        tally["extensions.requested"] += 1
        for step in record["steps"]:
            tally[f"extensions.step.{step['reason']}"] += 1
        if record["status"] == "kept":
            tally["extensions.passed"] += 1
        else:
            tally[f"extensions.failed.{category(record['reason'])}"] += 1
    return records


def build_sft(spec: RoundSpec, pairs: list[tuple[dict, str, str, int, list[str]]], result: ShardResult):
    """pairs: (instruction record fields, draft text, target text, target words, source ids)."""
    meta_base = {
        "round": spec.round,
        "model_versions": spec.versions,
        "decoding": spec.decoding.model_dump(),
        "seed": spec.seed,
    }
    for src, draft, target, words, source_ids in pairs:
        example_id = source_ids[-1]
        meta = {
            **meta_base,
            "lang": src["lang"],
            "source_ids": source_ids,
            "draft_words": src["draft_words"],
            "words": words,
        }
        result.generator_sft.append(
            generator_example(f"{example_id}/gen", src["instruction"], target, meta)
        )
        rng = seeded_rng(spec.seed, spec.round, example_id, "drop_lines")
        result.extender_sft.append(extender_example(
            f"{example_id}/ext", src["instruction"], draft, target, src["lang"], spec.prompts,
            spec.params.extender_line_keep, rng, meta,
        ))
    result.tally["sft.generator"] += len(result.generator_sft)
    result.tally["sft.extender"] += len(result.extender_sft)


async def run_shard(
    shard: str, instructions: list[dict], generator: ChatModel, extender: ChatModel,
    spec: RoundSpec,
) -> ShardResult:
    result = ShardResult()
    result.tally["instructions"] += len(instructions)
    result.drafts = await make_drafts(instructions, generator, spec, result.tally)
    sample_in_place(result.drafts, spec, shard, "drafts", result.tally)

    if spec.params.control:
        kept = [d for d in result.drafts if d["status"] == "kept"]
        pairs = [({**d, "draft_words": d["words"]}, d["text"], d["text"], d["words"],
                  [d["instruction_id"], d["id"]]) for d in kept]
    else:
        result.extensions = await make_extensions(result.drafts, extender, spec, result.tally)
        sample_in_place(result.extensions, spec, shard, "extensions", result.tally)
        kept = [e for e in result.extensions if e["status"] == "kept"]
        pairs = [(e, e["draft"], e["text"], e["words"], [e["instruction_id"], e["draft_id"], e["id"]])
                 for e in kept]
    build_sft(spec, pairs, result)
    return result
