"""The stages of one round of the loop (jobs/self_lengthen.py tells the order):

    synthesis   this round's instructions, in shards, through the served Generator and Extender
                (drafts, two-stage extensions, SFT sets; Ray Data, resumable per shard)
    train-<role>  the role fine-tuned on its SFT shards (training/: Ray Train + DeepSpeed), starting
                from last round's weights (full) or adapter (LoRA) when training.continue_from_previous;
                the roles in turn in one Ray Train run (<round>/train-generator-extender/)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluster.layout import ROLES

if TYPE_CHECKING:
    from runtime.context import RunContext


def resume_point(ctx: RunContext) -> tuple[int, dict[str, str], dict | None]:
    """First round still to run, the weights to serve, and the last probe result."""
    base = ctx.settings.model.base
    sources = {role: base for role in ROLES}
    probe_before = ctx.layout.stage_done(0, "probe")
    for k in range(1, ctx.settings.run.rounds + 1):
        finished = ctx.layout.round_finished(k)
        if finished is None:
            return k, sources, probe_before
        for role in ROLES:
            trained = ctx.layout.stage_done(k, f"train-{role}")
            if trained:
                sources[role] = trained["export_uri"]
        probe_before = finished
    return ctx.settings.run.rounds + 1, sources, probe_before


def synthesize(ctx: RunContext, k: int, pool: list[dict], sources: dict[str, str]) -> dict:
    from actors import synthesis  # Ray Data loads here, not at --help

    instructions = synthesis.select_instructions(ctx.settings, pool, k)
    shards = synthesis.write_instruction_shards(ctx.layout, k, instructions, ctx.settings.synthesis.shard_size)
    plan = synthesis.RoundPlan(round=k, base_url=ctx.serving.endpoint,
                               model_ids={r: ctx.serving.model_id(r) for r in ROLES}, versions=dict(sources))
    ctx.log(f"round {k}: synthesizing from {len(instructions)} instructions in {len(shards)} shards")
    result = synthesis.run_synthesis(ctx.settings, ctx.layout, plan, shards, log=ctx.log)
    return {**result, "shard_names": shards}


def train_roles(ctx: RunContext, k: int, roles: list[str], sources: dict[str, str], shards: list[str]) -> dict[str, dict]:
    """`roles` fine-tuned on their SFT shards one after the other, in one Ray Train run (its
    workers start once a round); each has its own checkpoints, export and metrics."""
    from actors import synthesis
    from training.trainer import FineTune, role_target, train_in_turn

    t, base = ctx.settings.training, ctx.settings.model.base
    jobs = []
    for role in roles:
        previous = sources[role] if t.continue_from_previous and sources[role] != base else None
        # full: start from last round's weights; lora: last round's adapter on the original base
        init_model, init_adapter = (base, previous) if t.method == "lora" else (previous or base, None)
        files = synthesis.sft_files(ctx.layout, k, shards, role)
        jobs.append(FineTune(role_target(ctx.layout, k, role), init_model, files, init_adapter))
    results = train_in_turn(ctx.settings, ctx.layout, ctx.layout.round_dir(k), "-".join(["train", *roles]), jobs)
    trained = {}
    for role, job, result in zip(roles, jobs, results):
        # one line each when done: while it trains, its step lines ("[train generator r1] ...") show progress
        ctx.log(f"round {k}: {role} trained from {job.init_adapter or job.init_model} on {len(job.data_files)} "
                f"shard files, {loss_text(result.metrics)}, exported to {result.export_uri}")
        trained[role] = {"export_uri": result.export_uri, "metrics": result.metrics, "loss_history": result.loss_history}
    return trained


def loss_text(metrics: dict) -> str:
    """The training loss of a fine-tune's metrics, as a done line shows it."""
    loss = metrics.get("train_loss")
    return f"loss {loss:.4f}" if isinstance(loss, (int, float)) else f"loss {loss}"


def round_summary(ctx: RunContext, k: int, synth: dict, trained: dict[str, dict], empty: list[str], handoff: float,
                  before: dict, after: dict, evaluation: dict | None, seconds: float) -> dict:
    """What summary.json records of round k."""
    return {
        "round": k,
        "synthesis": {key: synth.get(key) for key in ("tally", "calls", "calls_this_run", "shards", "resumed_shards",
                                                     "seconds")},
        "self_instruct": (ctx.layout.stage_done(k, "self-instruct") or {}).get("tally"),
        "training": {role: {"metrics": t["metrics"], "loss_history": t["loss_history"]} for role, t in trained.items()},
        "not_trained": empty,
        "handoff_seconds": round(handoff, 1), "probe_before": before, "probe_after": after,
        "evaluation": evaluation, "seconds": round(seconds, 1),
    }
