"""The Self-Lengthen loop, end to end:

    python -m jobs.self_lengthen --config configs/tiny.yaml [--set run.rounds=1 ...]

    serve the base model as Generator and Extender; answer the probe set
    for each round k:
        synthesize   instruction shards -> drafts -> two-stage extensions -> SFT shards
        train        the Generator and the Extender on them (Ray Train + DeepSpeed ZeRO-3)
        hand off     serve the new weights; answer the probe set again
    final stage (final.enabled, stages/final.py): the last Generator's further answers and
        every round's extended texts -> length-constrained data -> the base model fine-tuned
        on it -> base and final model scored on following a requested length

Every finished stage is recorded under <run>/round-<k>/stages/, so the same command with the
same run name resumes after the last finished stage (and inside synthesis, after the last
finished shard). The summary is printed and written to <run>/summary.json.
"""

from __future__ import annotations

import argparse
import sys
import time

from cluster.cli import add_settings_args, settings_from_args
from cluster.layout import FINAL
from jobs import bad_input, run_job
from runtime.preflight import check_loop_inputs
from runtime.context import RunContext
from reports.summary import print_summary
from stages import probe, self_instruct
from stages.round import resume_point, round_summary, synthesize, train_roles


class Loop:
    def __init__(self, ctx: RunContext, inputs: dict):
        self.ctx, self.settings = ctx, ctx.settings
        self.seeds, self.probes = inputs["seeds"].records, inputs["probes"].records
        rejected = inputs["seeds"].rejected + inputs["probes"].rejected
        if rejected:
            ctx.store.write_jsonl("rejected/inputs.jsonl", rejected)
            for r in rejected:
                ctx.log(f"set aside {r['file']} line {r['line']}: {r['reason']}")
        if not self.seeds:
            bad_input(f"no usable seed instruction in {self.settings.synthesis.seeds}")
        ctx.log(f"inputs: {len(self.seeds)} seeds, {len(self.probes)} probes, {len(rejected)} lines set aside")
        self.summary: dict = {"run": self.settings.run.name, "storage": ctx.store.uri(), "rounds": [],
                              "inputs": {"seeds": len(self.seeds), "probes": len(self.probes), "set_aside": len(rejected),
                                         "set_aside_file": "rejected/inputs.jsonl" if rejected else None}}
        self.started = time.time()

    def probe(self, label: str) -> dict:
        return probe.fixed_probe(self.ctx, self.probes, label)

    def length_probe(self, label: str) -> dict:
        return probe.length_probe(self.ctx, self.probes, label)

    def instruction_pool(self, k: int) -> list[dict]:
        """The seeds and what self-instruct added up to round k (this round's stage included)."""
        if self.settings.synthesis.self_instruct.new_per_round:
            pool = self.seeds + self_instruct.earlier_instructions(self.ctx.layout, k)
            self.ctx.stage(k, "self-instruct", lambda: self_instruct.run_self_instruct(self.ctx, pool, k))
        return self.seeds + self_instruct.earlier_instructions(self.ctx.layout, k + 1)

    def run_round(self, k: int, sources: dict[str, str], before: dict) -> dict[str, str]:
        ctx, t0 = self.ctx, time.time()
        synth = ctx.stage(k, "synthesis", lambda: synthesize(ctx, k, self.instruction_pool(k), sources))
        ctx.release()
        roles = ["generator"] if self.settings.synthesis.method.control else ["generator", "extender"]
        empty = [r for r in roles if not synth["tally"].get(f"sft.{r}")]
        for role in empty:
            ctx.log(f"round {k}: WARNING no SFT examples for the {role}; it keeps its current weights")
        pending = [r for r in roles if r not in empty and ctx.layout.stage_done(k, f"train-{r}") is None]
        fresh = train_roles(ctx, k, pending, sources, synth["shard_names"]) if pending else {}
        trained = {role: ctx.stage(k, f"train-{role}", lambda r=role: fresh[r]) for role in roles if role not in empty}
        new_sources = {**sources, **{role: t["export_uri"] for role, t in trained.items()}}
        handoff = ctx.serve(new_sources)
        evaluation = self.evaluate(k)
        after = ctx.stage(k, "probe", lambda: self.probe(f"round-{k}"))
        self.summary["rounds"].append(round_summary(ctx, k, synth, trained, empty, handoff, before, after,
                                                    evaluation, time.time() - t0))
        self.write_summary()
        return new_sources

    def evaluate(self, k: int | str) -> dict | None:
        """The served Generator on evaluation.benchmarks (k = 0: the base model), once per round
        with `after_each_round`; the base and the final model whenever the final stage runs
        and benchmarks are named."""
        ev, final = self.settings.evaluation, self.settings.final.enabled
        if not ev.benchmarks or not (ev.after_each_round or (final and k in (0, FINAL))):
            return None
        from stages.benchmarks import after_round

        done = self.ctx.stage(k, "evaluation", lambda: {
            "benchmarks": after_round(self.settings, self.ctx.store, self.ctx.serving, k, log=self.ctx.log)})
        return done["benchmarks"]

    def run(self) -> dict:
        ctx, rounds = self.ctx, self.settings.run.rounds
        ctx.store.write_json("settings.json", self.settings.public_dict())
        first, sources, before = resume_point(ctx)
        if first > 1:
            ctx.log(f"resuming run {self.settings.run.name!r} at {f'round {first}' if first <= rounds else 'the final stage'}")
            if ctx.store.exists("summary.json"):
                earlier = ctx.store.read_json("summary.json").get("rounds", [])
                self.summary["rounds"] = [r for r in earlier if r["round"] < first]
        if first <= rounds:
            ctx.serve(sources)
            before = before or ctx.stage(0, "probe", lambda: self.probe("base"))
            if first == 1:  # the base model is being served only before round 1
                self.evaluate(0)
                if self.settings.final.enabled:
                    ctx.stage(0, "length-probe", lambda: self.length_probe("base"))
        self.summary["probe_base"] = ctx.layout.stage_done(0, "probe")
        self.summary["evaluation_base"] = (ctx.layout.stage_done(0, "evaluation") or {}).get("benchmarks")
        for k in range(first, rounds + 1):
            sources = self.run_round(k, sources, before)
            before = self.summary["rounds"][-1]["probe_after"]
        if self.settings.final.enabled:
            from stages.final import FinalStage

            self.summary["final"] = FinalStage(self).run(sources)
        self.summary["seconds"] = round(time.time() - self.started, 1)
        self.write_summary()
        return self.summary

    def write_summary(self) -> None:
        self.ctx.store.write_json("summary.json", self.summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.self_lengthen", description=__doc__.split("\n\n")[0])
    add_settings_args(parser)
    settings = settings_from_args(parser.parse_args(argv))
    inputs = check_loop_inputs(settings)  # exit 2 on a missing or empty input before Ray starts
    ctx = RunContext.open(settings, "loop")
    summary = Loop(ctx, inputs).run()
    print_summary(summary, out=sys.stdout)
    from reports.run import write_report

    ctx.log(f"summary: {ctx.store.uri('summary.json')}, report: {write_report(ctx.layout.store, summary)}")
    return 0


if __name__ == "__main__":
    run_job(main)
