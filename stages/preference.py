"""After the final SFT (`final.preference: dpo`): DPO on pairs the run already holds, as
resumable stages of the loop's job (longform/preference.py says how a pair is made).

    pairs       for each constrained query of the final data (and with `dpo.extra_windows`, more
                queries an instruction, each around another of its answers): chosen = an
                in-window answer that passed the rules, rejected = an answer to the same
                instruction the constraint does not admit (shorter, longer, or rule-failing);
                written to final/preference/
    train-dpo   the final SFT model trained with DPO on them (`dpo.*`; LoRA: the SFT adapter
                continued, the reference its frozen copy), exported to final/dpo-model/
    score-dpo   the DPO model on the same length-constrained probe set as the base and SFT model

Under <run>/final/preference/: pairs.jsonl (prompt / chosen / rejected messages, with where each
side came from and why), unpaired.jsonl (queries without a pair, and why), summary.json, and with
`dpo.judge` verdicts.jsonl (the judge's verdict on each in-window answer it was asked to rate).
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter

from cluster.layout import FINAL, RunLayout
from stages import collect
from longform.model import ChatModel
from longform.preference import balanced, build_pairs, extra_windows, index_answers, judge_requests
from training.trainer import Target, train

FOLDER = f"{FINAL}/preference"
MODEL = f"{FINAL}/dpo-model"
RUBRIC = "longbench-write"  # the judge rates quality on its six dimensions, length aside


def run_answers(layout, rounds: int) -> list[dict]:
    """Every draft and extension record of rounds 1..rounds and of the final stage, its id
    prefixed with its round's folder: every round names its records after the same seeds
    ("en-001/d0/x0"), so only the prefix tells two rounds' answers apart (pairs and the judge's
    scores refer to answers by id)."""
    return [{**r, "id": f"{layout.round_dir(k)}/{r['id']}"} for k in [*range(1, rounds + 1), FINAL]
            for kind in ("drafts", "extensions") for r in layout.shard_records(k, kind)]


def with_round_prefix(layout: RunLayout, q: dict) -> dict:
    """A constrained query whose source id is prefixed with its round's folder, as the answers'
    ids are, so that a pair's id and `query_id` name one record of one round."""
    meta = q["meta"]
    if meta.get("round") is None:
        return q
    return {**q, "meta": {**meta, "source_id": f"{layout.round_dir(meta['round'])}/{meta['source_id']}"}}


def queries_and_answers(settings, layout) -> tuple[list[dict], dict, int]:
    """The constrained queries to pair (the final data's, then `dpo.extra_windows` more an
    instruction), the run's answers by instruction, and how many queries were added."""
    queries = [with_round_prefix(layout, q) for q in layout.store.read_jsonl(f"{collect.ROOT}/data.jsonl")]
    answers = index_answers(run_answers(layout, settings.run.rounds))
    extra = extra_windows(queries, answers, settings.dpo.extra_windows, settings.collect.min_words,
                          settings.collect.max_words, settings.run.seed)
    return queries + extra, answers, len(extra)


def pair_up(settings, queries: list[dict], answers: dict, scores: dict | None = None) -> tuple[list, list, Counter]:
    """build_pairs as `dpo.*` says, then `dpo.balance`: (pairs, unpaired, tally)."""
    pairs, unpaired, tally = build_pairs(queries, answers, settings.dpo.pairs_per_query, scores)
    if settings.dpo.balance:
        pairs, dropped = balanced(pairs, settings.run.seed)
        unpaired += dropped
        for p in dropped:  # the tally counts the pairs trained on
            tally[f"rejected.{p['meta']['rejected']['why']}"] -= 1
        tally["balance.dropped"], tally["pairs"] = len(dropped), len(pairs)
    return pairs, unpaired, tally


class PreferenceStage:
    def __init__(self, loop):  # jobs.self_lengthen.Loop: its ctx and length_probe()
        self.loop, self.ctx = loop, loop.ctx
        self.settings, self.layout, self.log = loop.ctx.settings, loop.ctx.layout, loop.ctx.log

    def run(self, collected: dict, sft: dict, sft_probe: dict) -> dict:
        ctx, stage = self.ctx, self.ctx.stage
        served_judge = self.settings.dpo.judge and self.settings.serving.judge.source != "endpoint"
        if served_judge and self.layout.stage_done(FINAL, "pairs") is None:
            # the judge is the Generator's deployment: the final SFT model, as the final stage
            # serves it (a resumed job has served nothing yet)
            if ctx.served.get("generator") != sft["export_uri"]:
                ctx.serve({"generator": sft["export_uri"]})
        pairs = stage(FINAL, "pairs", lambda: self.pairs(collected))
        trained = stage(FINAL, "train-dpo", lambda: self.train(pairs, sft))
        if self.layout.stage_done(FINAL, "score-dpo") is None:
            if ctx.served.get("generator") != trained["export_uri"]:
                ctx.serve({"generator": trained["export_uri"]})
        scored = stage(FINAL, "score-dpo", lambda: self.loop.length_probe("dpo"))
        self.log(f"preference: length score {sft_probe['length_score']} (SFT) -> {scored['length_score']} (DPO), "
                 f"inside the window {sft_probe['in_window']} -> {scored['in_window']}, unique-sentence ratio "
                 f"{sft_probe.get('unique_sentence_ratio')} -> {scored.get('unique_sentence_ratio')}")
        return {"pairs": pairs, "training": trained, "model": trained["export_uri"], "length_probe": scored}

    def pairs(self, collected: dict, judge: ChatModel | None = None) -> dict:
        """The pairs, written to FOLDER; with `dpo.judge` the judge's ratings choose among a
        query's in-window answers (`judge`: in place of serving.judge)."""
        s, store = self.settings, self.layout.store
        queries, answers, extra = queries_and_answers(s, self.layout)
        rated = self.rate(judge_requests(queries, answers), judge) if s.dpo.judge else None
        scores = rated.pop("scores") if rated else None  # by answer id; the summary keeps the counts
        pairs, unpaired, tally = pair_up(s, queries, answers, scores)
        store.write_jsonl(f"{FOLDER}/pairs.jsonl", pairs)
        store.write_jsonl(f"{FOLDER}/unpaired.jsonl", unpaired)
        summary = {"queries": len(queries), "extra_windows": extra, "pairs": len(pairs), "unpaired": len(unpaired), "tally": dict(tally),
                   "judge": rated,
                   "files": {n: store.uri(f"{FOLDER}/{n}.jsonl") for n in ("pairs", "unpaired")}}
        store.write_json(f"{FOLDER}/summary.json", summary)
        self.log(f"preference: {len(pairs)} pairs from {len(queries)} constrained queries"
                 + (f" ({extra} around answers outside the final data's windows)" if extra else "") + " (rejected: "
                 + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(tally.items()) if k.startswith("rejected."))
                 + f"; {len(unpaired)} queries without a pair"
                 + (f"; chosen by the judge {tally['chosen.judge']}" if rated else "") + ")")
        return summary

    def rate(self, rows: list[dict], judge: ChatModel | None) -> dict:
        """The judge's verdicts on `rows` (longform.preference.judge_requests), written to
        verdicts.jsonl, and each scored answer's mean over the rubric's dimensions. An answer
        the judge left unscored (unparseable, or the call failed) is not rated: where none of a
        query's answers is, the collected one stays chosen."""
        from evaluation.judging import judge_all, judge_provenance
        from longform.prompts import load_prompts
        from stages.benchmarks import judge_wording

        ev = self.settings.evaluation
        prompts, wording = load_prompts(self.settings.synthesis.prompt_dir), judge_wording(self.settings)
        model = judge or self.ctx.judge()

        async def all_verdicts() -> list[dict]:
            try:
                return await judge_all(model, RUBRIC, rows, prompts, ev.judge_decoding, ev.judge_attempts,
                                       ev.concurrency, wording, log=self.log)
            finally:
                if judge is None:  # the client opened here
                    await model.client.aclose()

        verdicts = asyncio.run(all_verdicts()) if rows else []
        self.layout.store.write_jsonl(f"{FOLDER}/verdicts.jsonl", verdicts)
        if verdicts and all(v["status"] == "error" for v in verdicts):
            # not a stage to record as done: a resumed job asks again
            raise SystemExit(f"error: the judge answered none of the preference stage's {len(verdicts)} calls "
                             f"(the first: {verdicts[0]['reason']}); see {self.layout.store.uri(FOLDER)}/verdicts.jsonl")
        scores = {v["id"]: round(statistics.fmean(v["scores"].values()), 3) for v in verdicts if v["status"] == "ok"}
        counts = {"asked": len(rows), "scored": len(scores),
                  "unparseable": sum(v["status"] == "unparseable" for v in verdicts),
                  "errors": sum(v["status"] == "error" for v in verdicts)}
        self.log(f"preference: the judge rated {counts['scored']} of {len(rows)} in-window answers "
                 f"({counts['unparseable']} unparseable, {counts['errors']} failed calls)")
        return {"scores": scores, **counts, "file": self.layout.store.uri(f"{FOLDER}/verdicts.jsonl"),
                "provenance": judge_provenance(model, prompts, RUBRIC, ev.judge_decoding, wording)}

    def train(self, pairs: dict, sft: dict) -> dict:
        s = self.settings
        if not pairs["pairs"]:
            raise SystemExit(f"error: the preference stage found no pair: see {pairs['files']['unpaired']}")
        self.ctx.release()
        # full: DPO starts from the SFT weights; LoRA: the SFT adapter on the base model, continued
        lora = s.training.method == "lora"
        init_model, init_adapter = (s.model.base, sft["export_uri"]) if lora else (sft["export_uri"], None)
        self.log(f"preference: DPO (beta {s.dpo.beta}, {s.dpo.loss_type}) on {pairs['pairs']} pairs "
                 f"from {init_adapter or init_model}")
        result = train(s, self.layout, Target(FINAL, "train-dpo", MODEL, "final dpo"), init_model,
                       [pairs["files"]["pairs"]], init_adapter, method="dpo")
        history = result.loss_history
        self.log(f"preference: trained, loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}, "
                 f"exported to {result.export_uri}")
        return {"export_uri": result.export_uri, "metrics": result.metrics, "loss_history": history}
