"""The self-instruct stage of a round: the served Generator writes new instructions from pairs of
the pool, the judge keeps those that need a long answer (longform/self_instruct.py).

Under <run>/round-<k>/self-instruct/ on storage:
    new.jsonl        the instructions accepted this round (they join every later round's pool)
    rejected.jsonl   every candidate turned down, with its reason
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from actors.client import LLMClient
from actors.judge import judge_model
from cluster.layout import RunLayout
from cluster.settings import Settings
from longform.prompts import load_prompts
from longform.sampling import seeded_rng
from longform.self_instruct import grow_pool

if TYPE_CHECKING:  # vLLM loads with it: only when something is served
    from actors.serving import Serving

FOLDER = "self-instruct"


def earlier_instructions(layout: RunLayout, k: int) -> list[dict]:
    """What self-instruct added in rounds 1 .. k-1."""
    out = []
    for j in range(1, k):
        rel = f"{layout.round_dir(j)}/{FOLDER}/new.jsonl"
        if layout.store.exists(rel):
            out += list(layout.store.read_jsonl(rel))
    return out


def run_self_instruct(settings: Settings, layout: RunLayout, serving: Serving, pool: list[dict], k: int,
                      log: Callable[[str], None] = print) -> dict:
    si = settings.synthesis.self_instruct
    s = settings.serving
    client = LLMClient(serving.base_url, timeout_s=s.request_timeout_s, max_retries=s.max_retries,
                       max_concurrency=s.max_concurrency)
    result = asyncio.run(grow_pool(
        pool, si.new_per_round, client.role(serving.model_id("generator")), judge_model(settings, serving),
        load_prompts(settings.synthesis.prompt_dir), si.decoding, si.judge_decoding,
        seeded_rng(settings.run.seed, k, "self-instruct"), f"r{k}-si", si.batch_size, si.max_candidates))
    folder = f"{layout.round_dir(k)}/{FOLDER}"
    layout.store.write_jsonl(f"{folder}/rejected.jsonl", result.rejected)
    layout.store.write_jsonl(f"{folder}/new.jsonl", result.new)
    log(f"{layout.label(k)}: self-instruct added {len(result.new)} instructions from "
        f"{result.tally['self_instruct.candidates']} candidates (pool {len(pool)} -> {len(pool) + len(result.new)})")
    return {"new": len(result.new), "tally": dict(result.tally)}
