"""After the final SFT (`final.preference: dpo`): DPO on pairs the run already holds, as
resumable stages of the loop's job (longform/preference.py says how a pair is made).

    pairs       for each constrained query of the final data: chosen = an in-window answer that
                passed the rules, rejected = an answer to the same instruction the constraint does
                not admit (shorter, longer, or rule-failing); written to final/preference/
    train-dpo   the final SFT model trained with DPO on them (`dpo.*`; LoRA: the SFT adapter
                continued, the reference its frozen copy), exported to final/dpo-model/
    score-dpo   the DPO model on the same length-constrained probe set as the base and SFT model

Under <run>/final/preference/: pairs.jsonl (prompt / chosen / rejected messages, with where each
side came from and why), unpaired.jsonl (queries without a pair, and why), summary.json.
"""

from __future__ import annotations

from cluster.layout import FINAL
from stages import collect
from longform.preference import balanced, build_pairs, index_answers
from training.trainer import Target, train

FOLDER = f"{FINAL}/preference"
MODEL = f"{FINAL}/dpo-model"


def run_answers(layout, rounds: int) -> list[dict]:
    """Every draft and extension record of rounds 1..rounds and of the final stage."""
    return [r for k in [*range(1, rounds + 1), FINAL] for kind in ("drafts", "extensions")
            for r in layout.shard_records(k, kind)]


class PreferenceStage:
    def __init__(self, loop):  # jobs.self_lengthen.Loop: its ctx and length_probe()
        self.loop, self.ctx = loop, loop.ctx
        self.settings, self.layout, self.log = loop.ctx.settings, loop.ctx.layout, loop.ctx.log

    def run(self, collected: dict, sft: dict, sft_probe: dict) -> dict:
        ctx, stage = self.ctx, self.ctx.stage
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

    def pairs(self, collected: dict) -> dict:
        s, store = self.settings, self.layout.store
        queries = list(store.read_jsonl(f"{collect.ROOT}/data.jsonl"))
        answers = index_answers(run_answers(self.layout, s.run.rounds))
        pairs, unpaired, tally = build_pairs(queries, answers, s.dpo.pairs_per_query)
        if s.dpo.balance:
            pairs, dropped = balanced(pairs, s.run.seed)
            unpaired += dropped
            tally["balance.dropped"] = len(dropped)
        store.write_jsonl(f"{FOLDER}/pairs.jsonl", pairs)
        store.write_jsonl(f"{FOLDER}/unpaired.jsonl", unpaired)
        summary = {"queries": len(queries), "pairs": len(pairs), "unpaired": len(unpaired), "tally": dict(tally),
                   "files": {n: store.uri(f"{FOLDER}/{n}.jsonl") for n in ("pairs", "unpaired")}}
        store.write_json(f"{FOLDER}/summary.json", summary)
        self.log(f"preference: {len(pairs)} pairs from {len(queries)} constrained queries (rejected: "
                 + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(tally.items()) if k.startswith("rejected."))
                 + f"; {len(unpaired)} queries without a pair)")
        return summary

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
