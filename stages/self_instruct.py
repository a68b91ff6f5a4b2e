"""The self-instruct stage of a round: the served Generator writes new instructions from pairs of
the pool, the judge keeps those that need a long answer (longform/self_instruct.py).

Under <run>/round-<k>/self-instruct/ on storage:
    new.jsonl        the instructions accepted this round (they join every later round's pool)
    rejected.jsonl   every candidate turned down, with its reason
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cluster.layout import RunLayout
from longform.prompts import load_prompts
from longform.sampling import seeded_rng
from longform.self_instruct import grow_pool

if TYPE_CHECKING:
    from runtime.context import RunContext

FOLDER = "self-instruct"


def earlier_instructions(layout: RunLayout, k: int) -> list[dict]:
    """What self-instruct added in rounds 1 .. k-1."""
    out = []
    for j in range(1, k):
        rel = f"{layout.round_dir(j)}/{FOLDER}/new.jsonl"
        if layout.store.exists(rel):
            out += list(layout.store.read_jsonl(rel))
    return out


def run_self_instruct(ctx: RunContext, pool: list[dict], k: int | str) -> dict:
    settings, layout = ctx.settings, ctx.layout
    si = settings.synthesis.self_instruct
    result = asyncio.run(grow_pool(
        pool, si.new_per_round, ctx.model("generator"), ctx.judge(),
        load_prompts(settings.synthesis.prompt_dir), si.decoding, si.judge_decoding,
        seeded_rng(settings.run.seed, k, "self-instruct"), f"r{k}-si", si.batch_size, si.max_candidates))
    folder = f"{layout.round_dir(k)}/{FOLDER}"
    layout.store.write_jsonl(f"{folder}/rejected.jsonl", result.rejected)
    layout.store.write_jsonl(f"{folder}/new.jsonl", result.new)
    ctx.log(f"{layout.label(k)}: self-instruct added {len(result.new)} instructions from "
            f"{result.tally['self_instruct.candidates']} candidates (pool {len(pool)} -> {len(pool) + len(result.new)})")
    return {"new": len(result.new), "tally": dict(result.tally)}
