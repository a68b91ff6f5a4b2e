"""After the last round: from the loop's long answers to a final model that writes the length
it is asked for (Self-Lengthen's final stage), as resumable stages of the loop's job.

    self-instruct  the last Generator adds instructions to the pool once more
    generate       it answers `final.generate_count` instructions: drafts only, no extension
    collect        every round's extended texts and these answers in the `collect` window,
                   each query given a length constraint it satisfies (stages/collect.py)
    closed-cuts    with `final.closed_cuts`: the collected answers cut after each paragraph and
                   closed by one the last Generator writes (longform/closed_cuts.py)
    train          the *base* model fine-tuned on them (+ `final.mix_with`), as `training` says
    score          base and final model on the length-constrained probe set (LonGen's score)
    preference     with `final.preference: dpo`: DPO on pairs built from the run's own answers,
                   scored the same way (stages/preference.py)

Each stage is recorded under <run>/final/stages/, so a stopped job resumes after the last one
that finished (and inside generate, after its last finished shard; inside train, from its
last checkpoint). The final weights are exported under <run>/final/model/.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

from cluster.layout import FINAL
from actors import synthesis
from stages import collect
from longform import closed_cuts
from longform.sampling import seeded_rng
from stages import self_instruct
from stages.preference import PreferenceStage
from stages.round import loss_text
from training.sources import DataSpec, load_mixture, weighted
from training.trainer import Target, train

MODEL = f"{FINAL}/model"


class FinalStage:
    def __init__(self, loop):  # jobs.self_lengthen.Loop: its ctx, seeds, length_probe(), evaluate()
        self.loop, self.ctx = loop, loop.ctx
        self.settings, self.layout, self.log = loop.ctx.settings, loop.ctx.layout, loop.ctx.log

    def run(self, sources: dict[str, str]) -> dict:
        """`sources`: the last round's weights per role."""
        s, ctx, stage = self.settings, self.ctx, self.ctx.stage
        served_stages = ("generate", "collect") + (("closed-cuts",) if s.final.closed_cuts else ())
        if any(self.layout.stage_done(FINAL, name) is None for name in served_stages):
            if ctx.served.get("generator") != sources["generator"]:
                ctx.serve({"generator": sources["generator"]})
        grown = None
        if s.synthesis.self_instruct.new_per_round:
            grown = stage(FINAL, "self-instruct", lambda: self_instruct.run_self_instruct(ctx, self.pool(), FINAL))
        generated = stage(FINAL, "generate", self.generate)
        collected = stage(FINAL, "collect", self.collect)
        closed = stage(FINAL, "closed-cuts", lambda: self.closed_cuts(collected)) if s.final.closed_cuts else None
        trained = stage(FINAL, "train", lambda: self.train(collected, closed))
        base = self.layout.stage_done(0, "length-probe")
        if base is None:  # a run begun before the final stage existed: measure the base now
            ctx.serve({"generator": s.model.base})
            base = stage(0, "length-probe", lambda: self.loop.length_probe("base"))
        todo = ["score"] + (["evaluation"] if s.evaluation.benchmarks else [])
        if any(self.layout.stage_done(FINAL, name) is None for name in todo):
            if ctx.served.get("generator") != trained["export_uri"]:
                ctx.serve({"generator": trained["export_uri"]})
        final = stage(FINAL, "score", lambda: self.loop.length_probe("final"))
        benchmarks = self.loop.evaluate(FINAL)  # evaluation.benchmarks, on the final model
        # no line comparing base and final here: "length probe final: ..." has just said the
        # final model's score, and the summary's table shows both models side by side
        preference = None
        if s.final.preference == "dpo":
            preference = PreferenceStage(self.loop).run(collected, trained, final)
        return {"self_instruct": (grown or {}).get("tally"), "generate": {k: generated.get(k) for k in (
                    "tally", "calls", "shards", "resumed_shards", "seconds")},
                "collect": collected, "closed_cuts": closed, "training": trained, "model": trained["export_uri"],
                "length_probe": {"base": base, "final": final, "words": list(s.final.probe_words)},
                "evaluation": benchmarks, "preference": preference}

    # -- generate --------------------------------------------------------------------------
    def pool(self) -> list[dict]:
        return self.loop.seeds + self_instruct.earlier_instructions(self.layout, self.settings.run.rounds + 1)

    def instructions(self) -> list[dict]:
        """`generate_count` instructions: this stage's new ones first, then a seeded draw from the
        pool (again from the start when the count is larger than the pool)."""
        rel = f"{FINAL}/{self_instruct.FOLDER}/new.jsonl"
        new = list(self.layout.store.read_jsonl(rel)) if self.layout.store.exists(rel) else []
        pool = self.pool()
        seeded_rng(self.settings.run.seed, FINAL, "instructions").shuffle(pool)
        chosen = (new + pool * math.ceil(self.settings.final.generate_count / max(1, len(pool))))
        chosen = chosen[: self.settings.final.generate_count]
        # the same instruction twice gets its own id each time: records and shards stay unique
        return [{**r, "id": f"{r['id']}#{i}"} for i, r in enumerate(chosen)]

    def generate(self) -> dict:
        s = self.settings
        drafts_only = s.model_copy(update={"synthesis": s.synthesis.model_copy(update={
            "method": s.synthesis.method.model_copy(update={"control": True})})})
        shards = synthesis.write_instruction_shards(self.layout, FINAL, self.instructions(), s.synthesis.shard_size)
        serving = self.ctx.serving
        plan = synthesis.RoundPlan(
            round=FINAL, base_url=serving.endpoint,
            model_ids={r: serving.model_id(r) for r in ("generator", "extender")},
            versions={"generator": self.ctx.served["generator"]})
        self.log(f"final: the last Generator answers {s.final.generate_count} instructions in {len(shards)} shards")
        return synthesis.run_synthesis(drafts_only, self.layout, plan, shards, log=self.log)

    # -- collect ---------------------------------------------------------------------------
    def collect(self) -> dict:
        s = self.settings
        model = self.ctx.model("generator", self.ctx.client(concurrency=False)) if s.collect.rewrite else None
        # no line of its own: the training's done line says how many were collected, and the
        # summary's "final data" line gives them by constraint
        return collect.collect(s, self.layout, model)

    # -- closed cuts ---------------------------------------------------------------------------
    def closed_cuts(self, collected: dict) -> dict:
        s, store = self.settings, self.layout.store
        started = time.time()
        queries = list(store.read_jsonl(f"{collect.ROOT}/data.jsonl"))
        todo = closed_cuts.beginnings(queries)
        model = self.ctx.model("generator", self.ctx.client(concurrency=False))
        self.log(f"final: the last Generator closes {len(todo)} cuts of {collected['collected']} collected answers")
        closings = asyncio.run(closed_cuts.close(model, todo, s.synthesis.decoding, s.collect.concurrency))
        kept, aside = closed_cuts.examples(todo, closings, s.collect.min_words, s.collect.max_words, s.run.seed)
        store.write_jsonl(f"{FINAL}/closed-cuts/data.jsonl", kept)
        store.write_jsonl(f"{FINAL}/closed-cuts/rejected.jsonl", aside)
        reasons = Counter(r["rule"] for r in aside)
        counts = ", ".join(f"{n} {rule.replace('_', ' ')}" for rule, n in reasons.most_common())
        self.log(f"final: {len(kept)} closed cuts kept, {len(aside)} set aside" + (f" ({counts})" if aside else ""))
        return {"beginnings": len(todo), "examples": len(kept), "set_aside": len(aside),
                "reasons": dict(reasons), "file": store.uri(f"{FINAL}/closed-cuts/data.jsonl"),
                "seconds": round(time.time() - started, 1)}

    # -- train -----------------------------------------------------------------------------
    def train(self, collected: dict, closed: dict | None = None) -> dict:
        s, store = self.settings, self.layout.store
        if not collected["collected"]:
            raise SystemExit(f"error: the final stage collected nothing in the window "
                             f"{collected['window'][0]}-{collected['window'][1]} words (collect.min_words / "
                             f"collect.max_words): see {collected['files']['rejected']}")
        files = [collected["files"]["data"]] + ([closed["file"]] if closed and closed["examples"] else [])
        cuts = closed["examples"] if closed else 0
        mixed = 0
        if s.final.mix_with and s.final.mix_fraction:
            general, rejected, _ = load_mixture([DataSpec(s.final.mix_with)], s.storage, s.run.seed)
            # a share of all the final SFT data: the collected examples and the closed cuts beside them
            want = round(s.final.mix_fraction / (1 - s.final.mix_fraction) * (collected["collected"] + cuts))
            rows = weighted(general, want / max(1, len(general)), seeded_rng(s.run.seed, FINAL, "mix"))
            store.write_jsonl(f"{FINAL}/mix.jsonl", rows)
            files.append(store.uri(f"{FINAL}/mix.jsonl"))
            mixed = len(rows)
            self.log(f"final: mixing {mixed} records of {s.final.mix_with} ({len(rejected)} set aside)")
        self.ctx.release()
        if s.final.epochs:
            s = s.model_copy(update={"training": s.training.model_copy(update={"epochs": s.final.epochs})})
        result = train(s, self.layout, Target(FINAL, "train-sft", MODEL, "final"), s.model.base, files)
        self.log(f"final: base model trained on {collected['collected']} collected + "
                 + (f"{cuts} closed cuts + " if closed else "") + f"{mixed} mixed examples, "
                 f"{loss_text(result.metrics)}, exported to {result.export_uri}")
        return {"export_uri": result.export_uri, "metrics": result.metrics, "loss_history": result.loss_history,
                "examples": collected["collected"], "closed_cuts": cuts, "mixed": mixed}

