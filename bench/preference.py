"""The preference stage on the tiny model: final SFT model against SFT + DPO, and against a control
whose chosen/rejected labels are shuffled, over several training seeds.

    .venv/bin/python bench/preference.py --run runs/demo [--seeds 0 1 2] [--set dpo.lr=5e-5] [--balance]
        [--set dpo.extra_windows=1] [--draws 5] [--no-control]

`--run` is a finished loop run with its final stage (`make demo`). The pairs are built from its
files as the loop builds them (stages/preference.py); each DPO run is `jobs.train --method dpo`
(Ray Train, DeepSpeed ZeRO-3, 2 workers) from the run's final SFT weights, under
<run>/bench-preference[-<override>...]/ (one folder per set of overrides). Every model answers
the run's length-constrained probe set as the loop's probe does, greedily with
`probe.decoding.repetition_penalty` (transformers, 1,536 new tokens at most), scored as the
final stage scores it (up to 2026-12-06 the bench decoded without the penalty, and its figures
then differed from the loop's). Prints one JSON line per model, then the means and the
smallest margin over the seeds. `--balance` trains on pairs balanced by length direction
(dpo.balance: as many rejecting a too-short answer as a too-long one), and its control on the
same pairs; `--set dpo.extra_windows=N` on pairs with up to N more windows an instruction.
`--draws K` scores every model on K constraints drawn for each probe instruction (the loop's
set is draw 0; 30 probes move ~0.07 between two trainings of one recipe, 150 less), and also
prints the loop set's score; each model's answers, words and scores go to answers-<model>.jsonl
in the folder. `--no-control` leaves the control out (for sweeps). Also printed: the probe set's
fixed-length ceiling (longform.length_probe.fixed_length_ceiling), the best score of a writer
that ignores the number asked, which is as far as DPO can lift a model that does not read it.

`--pairs number-only` asks whether DPO can teach the model to read the number at all: in place of
the run's pairs, pairs in which nothing but the number tells chosen from rejected
(longform.preference.number_only_pairs). Every DPO model's line carries its training pairs' reward accuracy over
the last quarter of its steps: ~0.5 is a model that did not learn to rank its own pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.layout import RunLayout
from cluster.settings import load_settings
from cluster.storage import Storage
from jobs import train as train_job
from stages.preference import pair_up, queries_and_answers
from longform.length_probe import constrained_probes, fixed_length_ceiling, summarize
from longform.scores import longen_row_score
from longform.preference import number_only_pairs, shuffled_labels
from toyworld.build import greedy_replies
from toyworld.method_vs_control import read_instructions

KEYS = ("length_score", "in_window", "mean_words", "unique_sentence_ratio", "asked_vs_written")


def score(model_dir: str, rows: list[dict], repetition_penalty: float, store=None, name: str = "") -> dict:
    """The model's length-following on `rows`; its answers (with words and score) to `store` as
    answers-<name>.jsonl where given."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True)
    replies = greedy_replies(model, tokenizer, [r["query"] for r in rows], max_new_tokens=1536, batch_size=32,
                             repetition_penalty=repetition_penalty)
    answers = {r["id"]: text for r, text in zip(rows, replies)}
    summary = summarize(rows, answers)
    if store is not None:
        store.write_jsonl(f"answers-{name}.jsonl", [{**longen_row_score({**r, "response": answers[r["id"]]}),
                                                    "response": answers[r["id"]]} for r in rows])
    out = {k: summary.get(k) for k in KEYS}
    loop_set = [r for r in rows if "~" not in r["id"]]
    if len(loop_set) < len(rows):  # more draws: also the loop's own probe set's score
        out["loop_set_length_score"] = summarize(loop_set, answers)["length_score"]
    return out


def learned(summary: dict) -> float | None:
    """The DPO run's reward accuracy on its training pairs over the last quarter of its steps."""
    history = summary.get("training", {}).get("reward_history") or []
    tail = history[-max(1, len(history) // 4):]
    return round(statistics.fmean(h["rewards/accuracies"] for h in tail), 3) if history else None


def probe_rows(settings, draws: int) -> list[dict]:
    """The loop's length-constrained probe set (draw 0), and with `draws` > 1 the same instructions
    under constraints drawn with the next seeds (ids `<id>~<draw>`)."""
    instructions = read_instructions(settings.probe.file)
    return [{**row, "id": row["id"] if draw == 0 else f"{row['id']}~{draw}"}
            for draw in range(draws)
            for row in constrained_probes(instructions, settings.final.probe_words, settings.run.seed + draw)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/demo", help="a finished run folder (local)")
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], help="settings overrides for the pairs and the DPO runs")
    parser.add_argument("--balance", action="store_true", help="pairs balanced by length direction")
    parser.add_argument("--draws", type=int, default=1,
                        help="constraints drawn per probe instruction (1: the loop's probe set; more: a measure with "
                             "less noise, each draw a different length asked of the same instruction)")
    parser.add_argument("--no-control", action="store_true", help="skip the shuffled-label control (sweeps)")
    parser.add_argument("--pairs", choices=("run", "number-only"), default="run",
                        help="run: the loop's pairs; number-only: pairs only the number asked tells apart")
    args = parser.parse_args()
    started = time.time()
    root, name = os.path.split(os.path.abspath(args.run))
    if args.balance:
        args.set.append("dpo.balance=true")
    settings = load_settings(args.config, [f"storage.root={root}", f"run.name={name}", *args.set])
    layout = RunLayout.create(Storage.open(root, settings.storage), name)
    queries, answers, extra = queries_and_answers(settings, layout)
    if args.pairs == "run":
        pairs, unpaired, tally = pair_up(settings, queries, answers)
    else:
        pairs = number_only_pairs(queries, settings.collect.min_words, settings.run.seed)
        unpaired, tally = [], {"pairs": len(pairs)}
    # a folder of its own for each set of overrides: jobs.train resumes what a folder already holds
    folder = "-".join(["bench-preference", *(["number-only"] if args.pairs != "run" else []),
                       *(o.replace("/", "_") for o in args.set)])
    bench = layout.store.child(folder)
    print(json.dumps({"pairs": len(pairs), "unpaired": len(unpaired), "extra_windows": extra, "tally": dict(tally)}),
          flush=True)
    if not pairs:
        raise SystemExit(f"no {args.pairs} pairs in {layout.store.uri('collect/data.jsonl')} and the run's answers "
                         "(number-only needs answers of two or more paragraphs)")
    rows = probe_rows(settings, args.draws)
    ceiling = fixed_length_ceiling(rows)  # what moving the length alone can reach on these probes
    print(json.dumps({"probes": len(rows), "fixed_length_ceiling": ceiling}), flush=True)
    sft_model = layout.store.uri("final/model")
    penalty = settings.probe.decoding.repetition_penalty  # the loop's probe decoding: greedy with this penalty
    results = {"sft": score(sft_model, rows, penalty, bench, "sft")}
    print(json.dumps({"model": "sft", **results["sft"]}), flush=True)
    labels = ("dpo",) if args.no_control else ("dpo", "shuffled")
    for seed in args.seeds:
        for label in labels:
            data = pairs if label == "dpo" else shuffled_labels(pairs, seed)
            bench.write_jsonl(f"pairs-{label}-s{seed}.jsonl", data)
            name_ = f"{label}-s{seed}"
            code = train_job.main([
                "--config", args.config, "--storage", root, "--run-name", name, "--method", "dpo",
                "--name", f"{folder}/{name_}", "--data", bench.uri(f"pairs-{label}-s{seed}.jsonl"),
                "--init-model", sft_model, "--set", f"run.seed={seed}", *sum((["--set", s] for s in args.set), [])])
            if code != 0:
                raise SystemExit(f"DPO run {name_} failed (exit {code})")
            results[name_] = score(bench.uri(f"{name_}/model"), rows, penalty, bench, name_)
            results[name_]["train_reward_accuracy"] = learned(bench.read_json(f"{name_}/summary.json"))
            print(json.dumps({"model": name_, "seed": seed, **results[name_]}), flush=True)
    means = {label: {k: round(statistics.fmean(results[f"{label}-s{s}"][k] for s in args.seeds), 4)
                     for k in ("length_score", "in_window", "mean_words", "unique_sentence_ratio")}
             for label in labels}
    print(json.dumps({
        "probes": len(rows), "seconds": round(time.time() - started, 1), "sft": results["sft"], "mean": means,
        "fixed_length_ceiling": ceiling["length_score"],
        "dpo_minus_sft": round(means["dpo"]["length_score"] - results["sft"]["length_score"], 4),
        "shuffled_minus_sft": (round(means["shuffled"]["length_score"] - results["sft"]["length_score"], 4)
                               if "shuffled" in means else None),
        "min_dpo_margin": round(min(results[f"dpo-s{s}"]["length_score"] for s in args.seeds)
                                - results["sft"]["length_score"], 4)}))


if __name__ == "__main__":
    main()
