"""Method against control on the tiny model, in one process: does extension make it write longer?

The loop's Self-Lengthen round (longform.round.run_shard, the settings of configs/tiny.yaml)
runs twice on the same instructions: once as the method (drafts -> two-stage extension ->
Generator SFT on the extended texts) and once as the control (`synthesis.method.control`: SFT on
the unextended drafts). Each SFT set fine-tunes a copy of the base model, and the fixed probe
set is answered greedily before and after.

What differs from `jobs.self_lengthen`, and why: the roles are one in-process vLLM engine
(AsyncLLM) instead of Ray Serve, and the fine-tune is the tiny builder's plain AdamW loop
instead of Ray Train + DeepSpeed. Both keep the comparison to a couple of minutes on two cores,
so a test can run it; the method's logic, prompts, decoding and rules are the loop's own.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.engine_process import one_process
from cluster.settings import Settings
from longform.metrics import probe_summary
from longform.prompts import load_prompts
from longform.round import RoundSpec, run_shard
from longform.instructions import parse_instructions
from toyworld.build import greedy_replies, pad_batch, tokenize_chat, train


class EngineChat:
    """`longform.model.ChatModel` over an in-process vLLM engine, chat template applied here the
    way the OpenAI server applies it (pre-filled assistant turn left open for continue_chat)."""

    def __init__(self, engine, tokenizer, max_model_len: int):
        self.engine, self.tokenizer, self.max_model_len = engine, tokenizer, max_model_len

    async def chat(self, messages, **sampling) -> str:
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return await self.generate(prompt, sampling)

    async def continue_chat(self, messages, prefix, **sampling) -> str:
        turn = [*messages, {"role": "assistant", "content": prefix}]
        prompt = self.tokenizer.apply_chat_template(turn, tokenize=False, continue_final_message=True)
        return await self.generate(prompt, sampling)

    async def generate(self, prompt: str, sampling: dict) -> str:
        from vllm import SamplingParams

        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        if sampling.get("max_tokens") is None:  # as the server does: up to the context (vLLM's own default is 16)
            sampling = {**sampling, "max_tokens": self.max_model_len - len(ids)}
        final = None
        async for final in self.engine.generate({"prompt_token_ids": ids}, SamplingParams(**sampling),
                                                request_id=uuid.uuid4().hex):
            pass
        return final.outputs[0].text


def with_seed(settings: Settings, seed: int) -> Settings:
    """The settings of one seed: the method's randomness and every request's sampling seed."""
    return settings.model_copy(update={
        "run": settings.run.model_copy(update={"seed": seed}),
        "synthesis": settings.synthesis.model_copy(update={
            "decoding": settings.synthesis.decoding.model_copy(update={"seed": seed})})})


async def synthesize(settings: Settings, instructions: list[dict], seeds: list[int]) -> list[tuple[dict, dict]]:
    """Per seed, the Generator SFT examples of one round for the method and for the control, and
    their tallies. One engine serves every seed: each request carries its own seed."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    kwargs = dict(settings.serving.engine_kwargs)
    max_len = kwargs.get("max_model_len", 2048)
    # Whole prefills only: vLLM-CPU 0.29 crashes ("CPU Generator does not use offset") when a
    # seeded request's prefill is split across steps.
    kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(max_len, kwargs.get("max_num_batched_tokens", 0)))
    config = AsyncEngineArgs(model=settings.model.base, seed=settings.run.seed, **kwargs).create_engine_config()
    one_process(config)  # as the served roles run: no worker process under the engine core
    engine = AsyncLLM.from_vllm_config(config)
    model = EngineChat(engine, AutoTokenizer.from_pretrained(settings.model.base),
                       engine.model_config.max_model_len)
    size = settings.synthesis.shard_size
    shards = [instructions[i: i + size] for i in range(0, len(instructions), size)]
    per_seed = []
    try:
        for seed in seeds:
            seeded, out, tallies = with_seed(settings, seed), {}, {}
            for mode in ("method", "control"):
                params = seeded.synthesis.method.model_copy(update={"control": mode == "control"})
                spec = RoundSpec(round=1, seed=seed, params=params,
                                 decoding=seeded.synthesis.decoding, prompts=load_prompts())
                results = await asyncio.gather(*(run_shard(f"shard-{i:05d}", shard, model, model, spec)
                                                 for i, shard in enumerate(shards)))
                out[mode] = [e for r in results for e in r.generator_sft]
                tallies[mode] = sum((r.tally for r in results), Counter())
            per_seed.append((out, tallies))
    finally:
        engine.shutdown()
    return per_seed


def batches(rows: list, settings: Settings, rng: random.Random) -> list[list]:
    """One epoch's optimizer steps, sized like the loop's: with packing a step holds up to
    workers x grad_accum x micro_batch rows of cutoff_len tokens, else that many samples."""
    t = settings.training
    rows = rows[:]
    rng.shuffle(rows)
    per_step = t.micro_batch_size * t.grad_accum * t.num_workers
    if not t.packing:
        return [rows[i: i + per_step] for i in range(0, len(rows), per_step)]
    budget, steps, current, used = per_step * t.cutoff_len, [], [], 0
    for row in rows:
        if current and used + len(row[0]) > budget:
            steps.append(current)
            current, used = [], 0
        current.append(row)
        used += len(row[0])
    return steps + [current] if current else steps


def fine_tune(base: str, examples: list[dict], settings: Settings):
    """Full fine-tune with the loop's learning rate, epochs, warmup and step size. Each step's
    loss is the mean over its trained tokens, as the loop's packed, token-averaged loss is."""
    t = settings.training
    torch.manual_seed(settings.run.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows = [tokenize_chat(tokenizer, e) for e in examples]
    rows = [(ids[: t.cutoff_len], labels[: t.cutoff_len]) for ids, labels in rows]
    rng = random.Random(settings.run.seed)
    epochs = [[pad_batch(b, tokenizer.pad_token_id) for b in batches(rows, settings, rng)]
              for _ in range(math.ceil(t.epochs))]
    steps = max(1, round(t.epochs * len(epochs[0])))
    train(model, itertools.chain.from_iterable(epochs), steps, t.lr, max(1, math.ceil(t.warmup_ratio * steps)))
    return model, tokenizer


def probe(model, tokenizer, probes: list[dict]) -> dict:
    replies = greedy_replies(model, tokenizer, [p["instruction"] for p in probes], max_new_tokens=1024)
    return probe_summary(replies)


@dataclass
class Comparison:
    seed: int
    base: dict
    method: dict
    control: dict
    sft: dict[str, int]
    tallies: dict[str, dict]

    @property
    def growth(self) -> dict[str, float]:
        before = self.base["mean_words"]
        return {m: round(getattr(self, m)["mean_words"] / before, 3) for m in ("method", "control")}


def compare(settings: Settings, instructions: list[dict], probes: list[dict],
            seeds: list[int] | None = None) -> list[Comparison]:
    """One Comparison per seed (default: settings.run.seed), on one engine and one base probe."""
    seeds = [settings.run.seed] if seeds is None else seeds
    synthesized = asyncio.run(synthesize(settings, instructions, seeds))
    base = settings.model.base
    tokenizer = AutoTokenizer.from_pretrained(base)
    before = probe(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), tokenizer, probes)
    comparisons = []
    for seed, (sft, tallies) in zip(seeds, synthesized):
        after = {}
        for mode, examples in sft.items():
            if not examples:
                raise RuntimeError(f"the {mode} round of seed {seed} produced no SFT example")
            after[mode] = probe(*fine_tune(base, examples, with_seed(settings, seed)), probes)
        comparisons.append(Comparison(seed, before, after["method"], after["control"],
                                      {m: len(e) for m, e in sft.items()}, {m: dict(t) for m, t in tallies.items()}))
    return comparisons


def read_instructions(path: str) -> list[dict]:
    """A local instruction file, as the loop reads it (bad lines are the loop's business)."""
    return parse_instructions(Path(path).read_bytes(), path, Path(path).stem).records
