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

from longform.prompts import load_prompts
from toyworld.build import BuildSpec, Qwen2ForCausalLM, build_tokenizer, corpus_batches, model_config, token_mean_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=70, help="timed steps (after 10 untimed)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec, prompts = BuildSpec(), load_prompts()
    tokenizer = build_tokenizer(spec, prompts)
    batches = corpus_batches(spec, tokenizer, prompts)
    warm = 10
    ready = [next(batches) for _ in range(warm + args.steps)]
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(model_config(spec, tokenizer)).float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.01)
    for i, batch in enumerate(ready):
        if i == warm:
            started = time.perf_counter()
        token_mean_loss(model, batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    per_step = (time.perf_counter() - started) / args.steps
    print(json.dumps({"steps": args.steps, "threads": args.threads, "seconds_per_step": round(per_step, 3),
                      "when": time.strftime("%Y-%m-%d %H:%M:%S")}))


if __name__ == "__main__":
    main()
