"""One round of data synthesis: the round's instruction shards go through the shard fan-out
(actors/shards.py), each `ShardWorker` running whole shards against the served Generator and
Extender (longform/round.py is the method itself).

Per shard of round k (cluster/layout.py has the whole layout):
    round-k/instructions/shard-N.jsonl     the input, written before the round starts
    round-k/{drafts,extensions,sft-generator,sft-extender,alpaca-*}/shard-N.jsonl
    round-k/stats/shard-N.json             the commit marker, written last
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

from actors.client import LLMClient
from actors.shards import Markers, ShardActor, ShardPool, run_shards, write_shards
from cluster.layout import RunLayout
from cluster.settings import Settings
from cluster.storage import Storage
from longform.prompts import load_prompts
from longform.round import RoundSpec, run_shard
from longform.sampling import seeded_rng
from longform.sft import to_alpaca

OUTPUT_KINDS = {"drafts": "drafts", "extensions": "extensions",
                "sft-generator": "generator_sft", "sft-extender": "extender_sft"}


@dataclass(frozen=True)
class RoundPlan:
    round: int | str  # a round number, or FINAL for the final stage's drafts
    base_url: str
    model_ids: dict[str, str]  # role -> model id to request
    versions: dict[str, str]  # role -> weights being served (for provenance)


def select_instructions(settings: Settings, records: list[dict], round: int) -> list[dict]:
    wanted = settings.synthesis.instructions_per_round
    if wanted is None or wanted >= len(records):
        return list(records)
    rng = seeded_rng(settings.run.seed, round, "instructions")
    return sorted(rng.sample(records, wanted), key=lambda r: r["id"])


def write_instruction_shards(layout: RunLayout, round: int | str, records: list[dict], size: int) -> list[str]:
    """Shard files of this round's instructions; kept as they are if already written (resume)."""
    return write_shards(layout.store, f"{layout.round_dir(round)}/instructions", records, size)


def round_markers(layout: RunLayout, round: int | str) -> Markers:
    """The round's commit markers: `layout.stats_file(round, shard)` for each shard."""
    return Markers(layout.store, f"{layout.round_dir(round)}/stats")


def sft_files(layout: RunLayout, round: int | str, shards: list[str], role: str) -> list[str]:
    return [layout.store.uri(layout.shard_file(round, f"sft-{role}", s)) for s in shards]


def schedules_by_priority(settings: Settings, role: str) -> bool:
    """Whether the engine serving `role` schedules by priority: `scheduling_policy: priority` in
    its engine_kwargs (the shared ones, overridden by the role's; in lora mode both roles are one
    engine, built with the generator's), as actors/serving.py builds them."""
    serving = settings.serving
    engine = serving.generator if serving.mode == "lora" else getattr(serving, role)
    return {**serving.engine_kwargs, **engine.engine_kwargs}.get("scheduling_policy") == "priority"


def priority_models(settings: Settings, plan: RoundPlan) -> set[str]:
    """The model ids of the plan whose engines schedule by priority: only requests to these
    carry a `priority` field (vLLM documents an error for one sent to an engine that does not)."""
    return {plan.model_ids[role] for role in ("generator", "extender") if schedules_by_priority(settings, role)}


def client_options(settings: Settings, plan: RoundPlan) -> dict:
    """How a shard's client calls the roles (timeouts, retries, width, priorities, key): one
    place, so a client built elsewhere (a benchmark's recording one) sends the same requests."""
    serving = settings.serving
    return {"timeout_s": serving.request_timeout_s, "max_retries": serving.max_retries,
            "max_concurrency": serving.max_concurrency, "priority_models": priority_models(settings, plan),
            "api_key_env": serving.api_key_env}


def served_client(settings: Settings, plan: RoundPlan) -> LLMClient:
    """The default engine of a shard: the served roles, through Serve handles or over HTTP."""
    return LLMClient(plan.base_url, **client_options(settings, plan))


# (settings, plan) -> an object with `.role(model_id)` (a ChatModel), `.calls` and `aclose()`;
# benchmarks pass their own (actors/engines.py, a recording client)
ClientFactory = Callable[[Settings, RoundPlan], LLMClient]


class ShardWorker(ShardActor):
    """A Ray Data actor: runs whole shards of a round and writes their outputs."""

    def __init__(self, settings: Settings, run_root: str, plan: RoundPlan, client_factory: ClientFactory = served_client):
        self.settings, self.plan, self.client_factory = settings, plan, client_factory
        self.layout = RunLayout(Storage.open(run_root, settings.storage))
        self.markers = round_markers(self.layout, plan.round)
        self.spec = RoundSpec(
            round=plan.round, seed=settings.run.seed, params=settings.synthesis.method,
            decoding=settings.synthesis.decoding, prompts=load_prompts(settings.synthesis.prompt_dir),
            versions=plan.versions,
        )

    async def work(self, shard: str) -> dict:
        k, store = self.plan.round, self.layout.store
        instructions = list(store.read_jsonl(self.layout.shard_file(k, "instructions", shard)))
        client = self.client_factory(self.settings, self.plan)
        try:
            result = await run_shard(
                shard, instructions, client.role(self.plan.model_ids["generator"]),
                client.role(self.plan.model_ids["extender"]), self.spec,
            )
        finally:
            await client.aclose()
        for kind, attr in OUTPUT_KINDS.items():
            store.write_jsonl(self.layout.shard_file(k, kind, shard), getattr(result, attr))
        for role in ("generator", "extender"):  # the same SFT sets for LLaMA-Factory users
            store.write_jsonl(self.layout.shard_file(k, f"alpaca-{role}", shard),
                              [to_alpaca(e) for e in getattr(result, f"{role}_sft")])
        return {"tally": dict(result.tally), "calls": dict(client.calls)}


def sft_so_far(tally: Counter) -> str:
    return f"{tally['sft.generator']} SFT examples so far"


def run_synthesis(settings: Settings, layout: RunLayout, plan: RoundPlan, shards: list[str], log=print,
                  client_factory: ClientFactory = served_client) -> dict:
    """Run every shard not yet complete; returns the merged tally, calls and timings.
    `calls_this_run` counts only the engine calls of the shards this call ran."""
    syn, label = settings.synthesis, RunLayout.label(plan.round)
    run = run_shards(
        ShardWorker, {"settings": settings, "run_root": layout.store.uri(), "plan": plan,
                      "client_factory": client_factory},
        shards, round_markers(layout, plan.round), ShardPool(syn.workers, syn.shards_per_worker),
        log=lambda line: log(f"[{label}] {line}"), describe=sft_so_far,
    )
    return {"tally": dict(sorted(run.total("tally").items())), "calls": dict(sorted(run.total("calls").items())),
            "calls_this_run": dict(sorted(run.total("calls", only_ran=True).items())),
            "shards": len(shards), "resumed_shards": run.resumed, "seconds": round(run.seconds, 2)}
