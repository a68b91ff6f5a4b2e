"""How fast this machine is right now, in the tiny model's own work: seconds per optimizer step of
the toy-model build (its batches, model, loss and AdamW), printed as JSON.

    .venv/bin/python bench/build_steps.py [--steps 70] [--threads 2] [--bf16 auto|on|off]

The build computes its loss under bf16 autocast where the CPU has bf16 kernels
(toyworld.build.fast_bf16), in fp32 elsewhere; `--bf16 on|off` times either on this machine.

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
from toyworld.build import BuildSpec, build_tokenizer, corpus_batches, fast_bf16, model_config, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=70, help="timed steps (after 10 untimed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="bf16 autocast in the loss: as the build chooses (auto), or forced")
    args = parser.parse_args()
    bf16 = fast_bf16() if args.bf16 == "auto" else args.bf16 == "on"
    torch.set_num_threads(args.threads)
    spec, prompts = BuildSpec(), load_prompts()
    tokenizer = build_tokenizer(spec, prompts)
    batches = corpus_batches(spec, tokenizer, prompts)
    ready = iter([next(batches) for _ in range(10 + args.steps)])  # batches made before the clock starts
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(model_config(spec, tokenizer)).float()
    train(model, ready, 10, spec.lr, 1, bf16=bf16)  # warm-up, untimed: the build's own step (loss, AdamW, clipping)
    per_step = train(model, ready, args.steps, spec.lr, 1, bf16=bf16) / args.steps
    print(json.dumps({"steps": args.steps, "threads": args.threads, "bf16_autocast": bf16,
                      "cpu_has_bf16_kernels": fast_bf16(), "seconds_per_step": round(per_step, 3),
                      "when": time.strftime("%Y-%m-%d %H:%M:%S")}))


if __name__ == "__main__":
    main()
