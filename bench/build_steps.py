"""How fast this machine is right now, in the tiny model's own work: seconds per optimizer step of
the toy-model build (its batches, model, bf16 loss and AdamW), printed as JSON.

    .venv/bin/python bench/build_steps.py [--steps 70] [--threads 2]

Timed figures of a 2-core VM drift through a day; run this beside a timing (before and after
it) to tell a change from the machine. On 2026-12-06 it gave 0.285 s a step at 23:19 and
0.312-0.322 s an hour and a half later, with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import Qwen2ForCausalLM

from longform.prompts import load_prompts
from toyworld.build import BuildSpec, build_tokenizer, corpus_batches, model_config, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=70, help="timed steps (after 10 untimed)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec, prompts = BuildSpec(), load_prompts()
    tokenizer = build_tokenizer(spec, prompts)
    batches = corpus_batches(spec, tokenizer, prompts)
    ready = iter([next(batches) for _ in range(10 + args.steps)])  # batches made before the clock starts
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(model_config(spec, tokenizer)).float()
    train(model, ready, 10, spec.lr, 1)  # warm-up, untimed: the build's own step (bf16 loss, AdamW, clipping)
    per_step = train(model, ready, args.steps, spec.lr, 1) / args.steps
    print(json.dumps({"steps": args.steps, "threads": args.threads, "seconds_per_step": round(per_step, 3),
                      "when": time.strftime("%Y-%m-%d %H:%M:%S")}))


if __name__ == "__main__":
    main()
