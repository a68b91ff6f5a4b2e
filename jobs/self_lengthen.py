"""The Self-Lengthen loop, end to end:

    python -m jobs.self_lengthen --config configs/tiny.yaml [--set run.rounds=1 ...]

    serve the base model as Generator and Extender; answer the probe set
    for each round k:
        synthesize   instruction shards -> drafts -> two-stage extensions -> SFT shards
        train        the Generator and the Extender on them (Ray Train + DeepSpeed ZeRO-3)
        hand off     serve the new weights; answer the probe set again
    final stage (final.enabled, jobs/final_stage.py): the last Generator's further answers and
        every round's extended texts -> length-constrained data -> the base model fine-tuned
        on it -> base and final model scored on following a requested length

Every finished stage is recorded under <run>/round-<k>/stages/, so the same command with the
same run name resumes after the last finished stage (and inside synthesis, after the last
finished shard). The summary is printed and written to <run>/summary.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from actors.client import LLMClient
from cluster.cli import add_settings_args, settings_from_args
from cluster.layout import FINAL, RunLayout
from cluster.settings import Settings
from cluster.storage import Storage, filesystem_for
from jobs import bad_input, probe, self_instruct
from jobs.preflight import check_loop_inputs, instruction_file
from jobs.summary import print_summary
from longform.instructions import InstructionFile


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_instruction_file(uri: str, settings: Settings) -> InstructionFile:
    """Read through the storage retries and checked as before connecting (jobs/preflight.py)."""
    return instruction_file(uri, settings)


class LoopRun:
    log = staticmethod(log)

    def __init__(self, settings: Settings):
        self.settings = settings
        from actors.serving import Serving  # vLLM and Ray Serve load here, not at --help

        self.layout = RunLayout.create(Storage.open(settings.storage.root, settings.storage), settings.run.name)
        self.serving = Serving(settings, run_store=self.layout.store)
        self.self_instruct_tally: dict[int, dict] = {}
        self.summary: dict = {"run": settings.run.name, "storage": self.layout.store.uri(), "rounds": []}
        self.started = time.time()

    # -- inputs -------------------------------------------------------------------------
    def load_inputs(self) -> None:
        fs, path = filesystem_for(self.settings.model.base, self.settings.storage)
        if not fs.exists(f"{path}/config.json"):
            bad_input(f"model.base: no model at {self.settings.model.base} (config.json not found)")
        seeds = read_instruction_file(self.settings.synthesis.seeds, self.settings)
        probes = read_instruction_file(self.settings.probe.file, self.settings)
        self.seeds, self.probes = seeds.records, probes.records
        rejected = seeds.rejected + probes.rejected
        if rejected:
            self.layout.store.write_jsonl("rejected/inputs.jsonl", rejected)
            for r in rejected:
                log(f"set aside {r['file']} line {r['line']}: {r['reason']}")
        self.summary["inputs"] = {"seeds": len(self.seeds), "probes": len(self.probes),
                                  "set_aside": len(rejected), "set_aside_file": "rejected/inputs.jsonl" if rejected else None}
        if not self.seeds:
            bad_input(f"no usable seed instruction in {self.settings.synthesis.seeds}")
        log(f"inputs: {len(self.seeds)} seeds, {len(self.probes)} probes, {len(rejected)} lines set aside")

    # -- serving and probing ------------------------------------------------------------
    def serve(self, sources: dict[str, str]) -> float:
        log("serving " + " ".join(f"{role}={weights}" for role, weights in sources.items()))
        seconds = self.serving.deploy(sources)
        log(f"models answering after {seconds:.1f}s")
        return seconds

    def probe(self, label: str) -> dict:
        client = LLMClient(self.serving.base_url, timeout_s=self.settings.serving.request_timeout_s,
                           max_retries=self.settings.serving.max_retries)
        answers = asyncio.run(probe.answer(client, self.serving.model_id("generator"), self.probes,
                                           self.settings.probe.decoding))
        self.layout.store.write_jsonl(f"probes/{label}.jsonl", answers)
        summary = probe.summarize(answers)
        log(f"probe {label}: mean words {summary['mean_words']}, unique-sentence ratio "
            f"{summary['unique_sentence_ratio']}")
        return summary

    def length_probe(self, label: str) -> dict:
        """The served Generator on the length-constrained probe set (the final stage's measure)."""
        from jobs.final_stage import answer_length_probe

        summary = answer_length_probe(self.settings, self.serving, self.probes, self.layout.store, label)
        log(f"length probe {label}: LonGen length score {summary['length_score']}, inside the window "
            f"{summary['in_window']}, mean words {summary['mean_words']}")
        return summary

    # -- one round ----------------------------------------------------------------------
    def stage(self, k: int | str, name: str, fn):
        """Run a stage once: its result is stored, and a resumed job reads it back."""
        done = self.layout.stage_done(k, name)
        if done is not None:
            log(f"{self.layout.label(k)}: {name} already finished, skipping")
            return done
        result = fn()
        self.layout.mark_done(k, name, result)
        return result

    def instruction_pool(self, k: int) -> list[dict]:
        """The seeds and what self-instruct added up to round k (this round's stage included)."""
        if self.settings.synthesis.self_instruct.new_per_round:
            pool = self.seeds + self_instruct.earlier_instructions(self.layout, k)
            grown = self.stage(k, "self-instruct", lambda: self_instruct.run_self_instruct(
                self.settings, self.layout, self.serving, pool, k, log=log))
            self.self_instruct_tally[k] = grown["tally"]
        return self.seeds + self_instruct.earlier_instructions(self.layout, k + 1)

    def synthesize(self, k: int, sources: dict[str, str]) -> dict:
        from jobs import synthesize  # Ray Data loads here, not at --help

        instructions = synthesize.select_instructions(self.settings, self.instruction_pool(k), k)
        shards = synthesize.write_instruction_shards(self.layout, k, instructions, self.settings.synthesis.shard_size)
        plan = synthesize.RoundPlan(
            round=k, base_url=self.serving.base_url,
            model_ids={r: self.serving.model_id(r) for r in ("generator", "extender")},
            versions=dict(sources),
        )
        log(f"round {k}: synthesizing from {len(instructions)} instructions in {len(shards)} shards")
        result = synthesize.run_synthesis(self.settings, self.layout, plan, shards, log=log)
        result["shard_names"] = shards
        return result

    def train(self, k: int, role: str, sources: dict[str, str], shards: list[str]) -> dict:
        from jobs import synthesize

        files = synthesize.sft_files(self.layout, k, shards, role)
        t, base = self.settings.training, self.settings.model.base
        previous = sources[role] if t.continue_from_previous and sources[role] != base else None
        # full: start from last round's weights; lora: last round's adapter on the original base
        init_model, init_adapter = (base, previous) if t.method == "lora" else (previous or base, None)
        log(f"round {k}: training {role} from {init_adapter or init_model} on {len(files)} shard files")
        from training.trainer import train_role

        result = train_role(self.settings, self.layout, k, role, init_model, files, init_adapter)
        log(f"round {k}: {role} trained, loss {result.metrics.get('train_loss')}, exported to {result.export_uri}")
        return {"export_uri": result.export_uri, "metrics": result.metrics, "loss_history": result.loss_history}

    def run_round(self, k: int, sources: dict[str, str], before: dict) -> dict[str, str]:
        t0 = time.time()
        synth = self.stage(k, "synthesis", lambda: self.synthesize(k, sources))
        if self.settings.serving.release_during_training and self.serving.sources is not None:
            self.serving.release()
        roles = ["generator"] if self.settings.synthesis.method.control else ["generator", "extender"]
        empty = [r for r in roles if not synth["tally"].get(f"sft.{r}")]
        for role in empty:
            log(f"round {k}: WARNING no SFT examples for the {role}; it keeps its current weights")
        roles = [r for r in roles if r not in empty]
        trained = {role: self.stage(k, f"train-{role}", lambda r=role: self.train(k, r, sources, synth["shard_names"]))
                   for role in roles}
        new_sources = {**sources, **{role: trained[role]["export_uri"] for role in roles}}
        handoff = self.serve(new_sources) if self.serving.sources != new_sources else 0.0
        evaluation = self.evaluate(k)
        after = self.stage(k, "probe", lambda: self.probe(f"round-{k}"))
        self.summary["rounds"].append({
            "round": k, "synthesis": {key: synth.get(key) for key in ("tally", "calls", "calls_this_run", "shards",
                                                                  "resumed_shards", "seconds")},
            "self_instruct": self.self_instruct_tally.get(k) or (self.layout.stage_done(k, "self-instruct") or {}).get("tally"),
            "training": {role: {"metrics": trained[role]["metrics"], "loss_history": trained[role]["loss_history"]}
                         for role in roles},
            "not_trained": empty,
            "handoff_seconds": round(handoff, 1), "probe_before": before, "probe_after": after,
            "evaluation": evaluation, "seconds": round(time.time() - t0, 1),
        })
        self.write_summary()
        return new_sources

    # -- benchmarks after each round (evaluation.after_each_round) ---------------------------
    def evaluate(self, k: int | str) -> dict | None:
        """The served Generator on evaluation.benchmarks (k = 0: the base model), once per round
        with `after_each_round`; the base and the final model whenever the final stage runs
        and benchmarks are named."""
        ev, final = self.settings.evaluation, self.settings.final.enabled
        if not ev.benchmarks or not (ev.after_each_round or (final and k in (0, FINAL))):
            return None
        from jobs import evaluate

        done = self.stage(k, "evaluation", lambda: {
            "benchmarks": evaluate.after_round(self.settings, self.layout.store, self.serving, k, log=log)})
        return done["benchmarks"]

    # -- the whole loop -----------------------------------------------------------------
    def resume_point(self) -> tuple[int, dict[str, str], dict | None]:
        """First round still to run, the weights to serve, and the last probe result."""
        base = self.settings.model.base
        sources = {"generator": base, "extender": base}
        probe_before = self.layout.stage_done(0, "probe")
        for k in range(1, self.settings.run.rounds + 1):
            finished = self.layout.stage_done(k, "probe")
            if finished is None:
                return k, sources, probe_before
            for role in ("generator", "extender"):
                trained = self.layout.stage_done(k, f"train-{role}")
                if trained:
                    sources[role] = trained["export_uri"]
            probe_before = finished
        return self.settings.run.rounds + 1, sources, probe_before

    def run(self) -> dict:
        self.layout.store.write_json("settings.json", self.settings.public_dict())
        self.load_inputs()
        first, sources, before = self.resume_point()
        if first > 1:
            where = f"round {first}" if first <= self.settings.run.rounds else "the final stage"
            log(f"resuming run {self.settings.run.name!r} at {where}")
            if self.layout.store.exists("summary.json"):
                earlier = self.layout.store.read_json("summary.json").get("rounds", [])
                self.summary["rounds"] = [r for r in earlier if r["round"] < first]
        if first <= self.settings.run.rounds:
            self.serve(sources)
            if before is None:
                before = self.stage(0, "probe", lambda: self.probe("base"))
            if first == 1:  # the base model is being served only before round 1
                self.evaluate(0)
                if self.settings.final.enabled:
                    self.stage(0, "length-probe", lambda: self.length_probe("base"))
        self.summary["probe_base"] = self.layout.stage_done(0, "probe")
        self.summary["evaluation_base"] = (self.layout.stage_done(0, "evaluation") or {}).get("benchmarks")
        for k in range(first, self.settings.run.rounds + 1):
            before_k = before
            sources = self.run_round(k, sources, before_k)
            before = self.summary["rounds"][-1]["probe_after"]
        if self.settings.final.enabled:
            from jobs.final_stage import FinalStage

            self.summary["final"] = FinalStage(self).run(sources)
        self.summary["seconds"] = round(time.time() - self.started, 1)
        self.write_summary()
        return self.summary

    def write_summary(self) -> None:
        self.layout.store.write_json("summary.json", self.summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.self_lengthen", description=__doc__.split("\n\n")[0])
    add_settings_args(parser)
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    check_loop_inputs(settings)  # exit 2 on a missing or empty input before Ray starts
    from cluster.capacity import connect_checked
    from jobs.report import write_report

    connect_checked(settings, "loop", log)
    run = LoopRun(settings)
    summary = run.run()
    print_summary(summary, out=sys.stdout)
    log(f"summary: {run.layout.store.uri('summary.json')}")
    log(f"report:  {write_report(run.layout, summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
