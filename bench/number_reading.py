"""Can the tiny model learn to read the number it is asked for, and from how much data?

    .venv/bin/python bench/number_reading.py --run runs/demo [--cuts 0 1] [--samples 16 [--continue-from paragraphs|end [--until paragraph]]] [--epochs 12] [--lr 1e-3] [--batch-tokens 400] [--draws 5]

The final SFT of a run trains the base on its collected queries (collect/data.jsonl): one
constraint per answer, ~120 on the demo. Its final model writes long but does not read the
number (asked ~ written near 0). Is that the model's size or the data's? For each `--cuts K`
this trains the run's base model on the collected queries and, for K > 0, on every collected
answer cut after each paragraph under K constraint types (longform.preference.number_examples):
the same beginning ends at several lengths, each under a number that admits it. With `--samples
K` it also trains the base on the collected queries and on whole answers: K sampled for each
collected query from the run's final model (offline vLLM with the engines' settings, temperature
1), each new answer in the collect window under a number that admits it
(longform.preference.sampled_examples), i.e. more answers an instruction. With `--continue-from
paragraphs` the samples share a beginning with a collected answer: the model is given its first
j paragraphs (every j short of the whole) and writes on to its own end, K times each; with
`--continue-from end` it writes on after the whole answer, so a longer answer holds the shorter
one whole. `--until paragraph` has it write one paragraph only after each beginning, where the
text is stopped: the stop placed from outside as a cut's, the closing paragraph the model's own.
Then it scores the run's probe set (`--draws` constraints per probe instruction, as
bench/preference.py) and prints one JSON line per model trained: length score, inside the
window, mean words, asked ~ written (rank correlation), each per language, and the probe set's
fixed-length ceiling (the best score a writer that ignores the number can reach).

A capacity check, not the loop's path: training runs in this process with the toy build's own
trainer (toyworld.build.train: AdamW, cosine, token-mean loss, batches of about
`--batch-tokens` padded tokens) rather than Ray Train and DeepSpeed, which take minutes per
thousand steps on two cores. The model trained is the run's base (its settings.json) where that
folder is still here, else the config's model.base, or `--base`. The models and their answers go
to <run>/bench-number-reading/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.preference import probe_rows, score  # noqa: E402
from cluster.layout import RunLayout  # noqa: E402
from cluster.settings import load_settings  # noqa: E402
from cluster.storage import Storage  # noqa: E402
from longform.length_probe import fixed_length_ceiling, summarize  # noqa: E402
from longform.closed_cuts import beginnings  # noqa: E402
from longform.preference import first_queries, number_examples, sampled_examples  # noqa: E402
from toyworld.build import length_batches, pad_batch, save, tokenize_chat, train  # noqa: E402


def batches(rows: list, batch_tokens: int, pad_id: int, seed: int):
    """Endless shuffled epochs of length-grouped batches."""
    rng = random.Random(f"number-reading:{seed}")
    while True:
        for batch in length_batches(rows, batch_tokens, rng):
            yield pad_batch(batch, pad_id)


def prompts(queries: list[dict], continue_from: str | None) -> list[tuple[dict, str, str]]:
    """(meta, user turn, prefix) to sample from: each collected query as asked (prefix ""), or with
    `continue_from` each distinct collected answer's beginning to go on from, under its query:
    "paragraphs" its first j paragraphs for every j short of the whole (the beginnings the
    final stage's closed cuts start from), "end" the whole answer."""
    if continue_from is None:
        return [(q["meta"], q["messages"][0]["content"], "") for q in queries]
    if continue_from == "paragraphs":
        return [(b.meta, b.query, b.text) for b in beginnings(queries)]
    return [(q["meta"], q["messages"][0]["content"], text) for q, text in first_queries(queries)]


def sample_answers(model_dir: str, asked: list[tuple[dict, str, str]], k: int, settings,
                   until: str = "end") -> list[tuple[dict, str]]:
    """`k` answers to each (meta, user turn, prefix) of `asked` from `model_dir`, sampled at
    temperature 1 by offline vLLM in the served engines' environment and settings, as (meta,
    text). A prefix is pre-filled as the answer's first paragraphs and the model writes on from a
    new paragraph (a raw completion, as the Extender's stage 2 goes on from its part) to its own
    end, or with `until="paragraph"` for one paragraph, where the text is stopped; the text is
    the prefix and what followed. Answers cut off by the context are left out."""
    os.environ["VLLM_LOGGING_LEVEL"] = "ERROR"  # set before vLLM is first imported: stdout stays this bench's JSON
    from actors.serving import engine_env

    os.environ.update({**engine_env(settings), "VLLM_LOGGING_LEVEL": "ERROR"})
    from vllm import LLM, SamplingParams

    kwargs = settings.serving.engine_kwargs
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    heads = [prefix + "\n\n" if prefix else "" for _, _, prefix in asked]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                           add_generation_prompt=True) + head
             for (_, user, _), head in zip(asked, heads)]
    longest = max(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)
    llm = LLM(model=model_dir, **{"seed": settings.run.seed, **kwargs})
    params = SamplingParams(n=k, temperature=1.0, max_tokens=kwargs.get("max_model_len", 2048) - longest,
                            stop=["\n\n"] if until == "paragraph" else None)
    outputs = llm.generate(texts, params, use_tqdm=False)
    llm.llm_engine.engine_core.shutdown()  # the engine process ends here, not at exit: the training needs both cores
    return [(meta, head + o.text.lstrip()) for (meta, _, _), head, out in zip(asked, heads, outputs)
            for o in out.outputs if o.finish_reason == "stop" and o.text.strip()]


def per_language(rows: list[dict], answers_file: str, store) -> dict:
    """Length score, mean words and asked ~ written of one model's stored answers, by language."""
    answers = {r["id"]: r["response"] for r in store.read_jsonl(answers_file)}
    return {lang: {k: summarize([r for r in rows if r["language"] == lang], answers)[k]
                   for k in ("length_score", "mean_words", "asked_vs_written")}
            for lang in sorted({r["language"] for r in rows})}


def run_base(layout) -> str | None:
    """The base model the run recorded in its settings, where that folder is still here."""
    if not layout.store.exists("settings.json"):
        return None
    base = layout.store.read_json("settings.json").get("model", {}).get("base")
    return base if base and os.path.isdir(base) else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/demo", help="a finished run folder (local)")
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--cuts", type=int, nargs="+", default=[0, 1],
                        help="constraint types per paragraph cut (0: the collected queries only)")
    parser.add_argument("--samples", type=int, default=0,
                        help="also: whole answers sampled from the run's final model, this many a collected query")
    parser.add_argument("--continue-from", choices=("paragraphs", "end"),
                        help="with --samples: the samples go on from each collected answer's first paragraphs "
                             "(every cut short of the whole) or from its end, this many a prefix")
    parser.add_argument("--until", choices=("end", "paragraph"), default="end",
                        help="with --continue-from: the model writes on to its own end, or one paragraph, where "
                             "the text is stopped (the stop placed from outside, as a cut's, the last paragraph "
                             "the model's own)")
    parser.add_argument("--epochs", type=float, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-tokens", type=int, default=400)
    parser.add_argument("--draws", type=int, default=5, help="constraints drawn per probe instruction")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--base", help="the model to train (default: the run's base where it still exists, else "
                                       "the config's model.base)")
    args = parser.parse_args()
    if args.continue_from and not args.samples:
        parser.error("--continue-from needs --samples K (how many answers to write on from each beginning)")
    if args.until != "end" and not args.continue_from:
        parser.error("--until needs --continue-from (the beginnings to write one paragraph after)")
    torch.set_num_threads(args.threads)
    root, name = os.path.split(os.path.abspath(args.run))
    settings = load_settings(args.config, [f"storage.root={root}", f"run.name={name}"])
    layout = RunLayout.create(Storage.open(root, settings.storage), name)
    bench = layout.store.child("bench-number-reading")
    queries = list(layout.store.read_jsonl("collect/data.jsonl"))
    if not queries:
        raise SystemExit(f"no collected queries in {layout.store.uri('collect/data.jsonl')}: run the final stage first")
    rows = probe_rows(settings, args.draws)
    base = args.base or run_base(layout) or str(settings.model.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    print(json.dumps({"base": base, "collected": len(queries), "probes": len(rows),
                      "fixed_length_ceiling": fixed_length_ceiling(rows)}), flush=True)
    datasets = {f"cuts-{k}": queries + (number_examples(queries, settings.collect.min_words, k, settings.run.seed)
                                        if k else [])
                for k in args.cuts}
    if args.samples:
        started = time.time()
        asked = prompts(queries, args.continue_from)
        sampled = sample_answers(layout.store.uri("final/model"), asked, args.samples, settings, args.until)
        extra = sampled_examples(queries, sampled, settings.collect.min_words, settings.collect.max_words,
                                 settings.run.seed)
        tag = (f"samples-{args.samples}" + (f"-from-{args.continue_from}" if args.continue_from else "")
               + (f"-until-{args.until}" if args.until != "end" else ""))
        print(json.dumps({"data": tag, "prompts": len(asked), "samples_per_prompt": args.samples,
                          "sampled": len(sampled), "kept": len(extra), "seconds": round(time.time() - started, 1)}),
              flush=True)
        datasets[tag] = queries + extra
    for tag, data in datasets.items():
        started = time.time()
        examples = [tokenize_chat(tokenizer, {"messages": d["messages"]}) for d in data]
        tokens = sum(len(ids) for ids, _ in examples)
        steps = max(1, round(args.epochs * tokens / args.batch_tokens))  # about `epochs` passes
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
        torch.manual_seed(settings.run.seed)
        train_s = train(model, batches(examples, args.batch_tokens, tokenizer.pad_token_id, settings.run.seed),
                        steps, args.lr, max(1, steps // 10))
        save(model, tokenizer, Path(bench.uri(f"{tag}/model")))
        result = score(bench.uri(f"{tag}/model"), rows, settings.probe.decoding.repetition_penalty, bench, tag)
        print(json.dumps({"data": tag, "examples": len(data), "tokens": tokens, "steps": steps,
                          "train_seconds": round(train_s, 1), **result,
                          "by_language": per_language(rows, f"answers-{tag}.jsonl", bench),
                          "seconds": round(time.time() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
