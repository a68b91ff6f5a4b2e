"""Does Self-Lengthen visibly lengthen the tiny model? Rounds of the method, fully in-process.

Builds the tiny model (or loads one), then runs N rounds of the method and N rounds of the
control (MethodParams(control=True): fine-tune on the model's own drafts, no extension), both
from the same base model:

    longform.round.run_shard over the seed instructions   (HF `generate` behind ChatModel)
    -> full fine-tuning of the Generator on generator_sft and the Extender on extender_sft
       (AdamW, loss on assistant tokens, averaged over tokens)
    -> greedy answers to the fixed probe set -> longform.metrics.probe_summary

and prints one JSON line per round. No Ray, no vLLM: a tool to tune the tiny world and the
round hyperparameters.

One method setting differs from the reference by default: `--extension-steps 1` (reference: 3
micro-steps per extension). The tiny Extender doubles a text reliably, so three micro-steps
make a round-1 text up to 8x its draft, and the tiny world (30 aspects per topic and language,
at most one sentence each) is full after one round; with one micro-step each round can about
double. Pass `--extension-steps 3` to see the reference behaviour.

    python bench/tiny_world_check.py                       # build with seed 0, 2 rounds
    python bench/tiny_world_check.py --model /tmp/tiny --rounds 3 --replay 200
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from longform.params import Decoding, MethodParams, stable_seed  # noqa: E402
from longform.prompts import load_prompts  # noqa: E402
from longform.round import RoundSpec, run_shard  # noqa: E402
from toyworld.build import (  # noqa: E402
    BuildSpec, build, pad_batch, probe_report, read_jsonl, token_mean_loss,
    tokenize_chat,
)
from toyworld.corpus import sample_example  # noqa: E402

SEEDS = ROOT / "configs" / "seeds" / "tiny_seeds.jsonl"
PROBES = ROOT / "configs" / "seeds" / "tiny_probes.jsonl"


class HFChatModel:
    """`longform.model.ChatModel` over HF `generate`. Requests that arrive together (the method
    gathers all records of a shard at once) are generated as one padded batch."""

    def __init__(self, model, tokenizer, batch_size: int = 48):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.pending: list[tuple[str, dict, asyncio.Future]] = []
        self.calls = 0
        self.generated_tokens = 0

    async def chat(self, messages, **sampling) -> str:
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return await self._submit(prompt, sampling)

    async def continue_chat(self, messages, prefix, **sampling) -> str:
        # what vLLM's chat endpoint does with continue_final_message=True
        prompt = self.tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": prefix}],
            continue_final_message=True, tokenize=False,
        )
        return await self._submit(prompt, sampling)

    async def _submit(self, prompt: str, sampling: dict) -> str:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((prompt, sampling, future))
        if len(self.pending) == 1:
            asyncio.get_running_loop().create_task(self._flush_soon())
        return await future

    async def _flush_soon(self) -> None:
        for _ in range(5):  # let every task that is ready send its request first
            await asyncio.sleep(0)
        batch, self.pending = self.pending, []
        groups: dict[str, list] = {}
        for request in batch:
            key = json.dumps({k: v for k, v in request[1].items() if k != "seed"}, sort_keys=True)
            groups.setdefault(key, []).append(request)
        for requests in groups.values():
            requests.sort(key=lambda r: len(r[0]))
            for i in range(0, len(requests), self.batch_size):
                chunk = requests[i: i + self.batch_size]
                try:
                    texts = self._generate([r[0] for r in chunk], chunk[0][1], [r[1].get("seed") for r in chunk])
                except Exception as err:  # hand the failure to every waiting caller
                    for _, _, future in chunk:
                        future.set_exception(err)
                    continue
                for (_, _, future), text in zip(chunk, texts):
                    future.set_result(text)

    @torch.no_grad()
    def _generate(self, prompts: list[str], sampling: dict, seeds: list) -> list[str]:
        self.calls += len(prompts)
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        temperature = sampling.get("temperature", 1.0)
        kwargs = {"max_new_tokens": sampling.get("max_tokens", 512),
                  "repetition_penalty": sampling.get("repetition_penalty", 1.0)}
        if temperature > 0:
            kwargs |= {"do_sample": True, "temperature": temperature, "top_p": sampling.get("top_p", 1.0),
                       "top_k": max(0, sampling.get("top_k", 0))}
            # HF samples a batch from one generator: seed it from the requests' own seeds
            torch.manual_seed(stable_seed(*seeds) if None not in seeds else random.getrandbits(31))
        else:
            kwargs["do_sample"] = False
        if sampling.get("stop"):
            kwargs |= {"stop_strings": sampling["stop"], "tokenizer": self.tokenizer}
        out = self.model.generate(**inputs, **kwargs, eos_token_id=self.model.config.eos_token_id,
                                  pad_token_id=self.tokenizer.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        self.generated_tokens += int((new != self.tokenizer.pad_token_id).sum())
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [cut_at_stop(t, sampling.get("stop") or []) for t in texts]


def cut_at_stop(text: str, stops: list[str]) -> str:
    for stop in stops:
        if stop in text:
            text = text[: text.index(stop)]
    return text


def finetune(model, tokenizer, examples: list[dict], lr: float, epochs: int, batch_size: int,
             seed: int) -> dict:
    """Full fine-tuning, AdamW, constant lr, loss on assistant tokens averaged over tokens."""
    if not examples:
        return {"examples": 0, "steps": 0}
    rng = random.Random(seed)
    torch.manual_seed(seed)
    rows = [tokenize_chat(tokenizer, e) for e in examples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    steps, losses = 0, []
    for _ in range(epochs):
        order = rows[:]
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            batch = pad_batch(order[i: i + batch_size], tokenizer.pad_token_id)
            loss = token_mean_loss(model, batch, bf16=False)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            losses.append(loss.item())
    model.eval()
    return {"examples": len(examples), "steps": steps, "last_loss": round(sum(losses[-5:]) / len(losses[-5:]), 4)}


REPLAY_TASKS = {"extend": 0.8, "self_instruct": 0.1, "judge_long": 0.1}


def replay_examples(count: int, round_: int, seed: int, prompts) -> list[dict]:
    """Base-corpus examples mixed into every round's fine-tuning, identical for method and
    control. No short answers: replaying those would pull the Generator back to 2-4 sentences."""
    rng = random.Random(f"replay:{seed}:{round_}")
    tasks = rng.choices(list(REPLAY_TASKS), weights=list(REPLAY_TASKS.values()), k=count)
    return [sample_example(rng, prompts, task) for task in tasks]


def extension_stats(result) -> dict:
    kept = [e for e in result.extensions if e["status"] == "kept"]
    done = [e for e in result.extensions if e["text"] is not None]
    requested = result.tally["extensions.requested"]
    growth = [e["words"] / max(1, e["draft_words"]) for e in done]
    return {
        "acceptance": round(result.tally["extensions.passed"] / requested, 3) if requested else None,
        "mean_growth": round(sum(growth) / len(growth), 2) if growth else None,
        "kept_after_sampling": len(kept),
    }


def draft_stats(result) -> dict:
    passed = [d for d in result.drafts if d["text"] is not None]
    return {
        "pass_rate": round(len(passed) / max(1, len(result.drafts)), 3),
        "attempts_per_draft": round(result.tally["drafts.attempts"] / max(1, len(result.drafts)), 2),
        "mean_words": round(sum(d["words"] for d in passed) / max(1, len(passed)), 1),
    }


def run_rounds(base, tokenizer, args, control: bool, seeds: list[dict], probes: list[dict]) -> list[dict]:
    prompts = load_prompts()
    generator, extender = copy.deepcopy(base), copy.deepcopy(base)
    decoding = Decoding(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                        repetition_penalty=args.repetition_penalty, max_tokens=args.max_tokens,
                        seed=args.seed)
    params = MethodParams(control=control, extension_steps=args.extension_steps)
    rows = []
    for round_ in range(1, args.rounds + 1):
        started = time.time()
        spec = RoundSpec(round=round_, seed=args.seed, params=params, decoding=decoding, prompts=prompts)
        result = asyncio.run(run_shard(
            "shard-0", seeds, HFChatModel(generator, tokenizer), HFChatModel(extender, tokenizer), spec,
        ))
        synth_s = time.time() - started
        replay = replay_examples(args.replay, round_, args.seed, prompts)
        fit = dict(lr=args.lr, epochs=args.epochs, batch_size=args.batch, seed=args.seed * 100 + round_)
        gen_fit = finetune(generator, tokenizer, [*result.generator_sft, *replay], **fit)
        ext_fit = finetune(extender, tokenizer, [*result.extender_sft, *replay], **fit)
        row = {
            "mode": "control" if control else "method", "round": round_,
            **probes_both(generator, tokenizer, probes, args),
            "drafts": draft_stats(result),
            "extensions": None if control else extension_stats(result),
            "sft": {"generator": len(result.generator_sft), "extender": len(result.extender_sft),
                    "replay": len(replay)},
            "fit": {"generator": gen_fit, "extender": ext_fit},
            "seconds": {"synthesis": round(synth_s, 1), "total": round(time.time() - started, 1)},
        }
        if args.save_dir:
            generator.save_pretrained(Path(args.save_dir) / f"{row['mode']}-r{round_}")
            tokenizer.save_pretrained(Path(args.save_dir) / f"{row['mode']}-r{round_}")
        if args.show:
            row["samples"] = sample_texts(result, control)
        print(json.dumps(row, ensure_ascii=False), flush=True)
        rows.append(row)
    return rows


def probes_both(model, tokenizer, probes: list[dict], args) -> dict:
    """Greedy probe answers, plain and with the reference repetition penalty (1.1)."""
    return {"probe": probe_report(model, tokenizer, probes, args.max_tokens),
            "probe_rp": probe_report(model, tokenizer, probes, args.max_tokens, args.probe_repetition_penalty)}


def sample_texts(result, control: bool) -> list[str]:
    records = result.drafts if control else result.extensions
    kept = [r["text"] for r in records if r["status"] == "kept"]
    return kept[:1] + kept[-1:]


def load_or_build(args):
    if args.model:
        path = args.model
    else:
        path = tempfile.mkdtemp(prefix="tiny-model-")
        summary = build(path, BuildSpec(seed=args.seed, steps=args.steps), probes=False,
                        log=lambda p: print(json.dumps({"build": p}), flush=True) if p["step"] % 100 == 0 else None)
        print(json.dumps({"built": {k: summary[k] for k in ("out", "params", "seconds")}}), flush=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="load this tiny model instead of building one")
    parser.add_argument("--seed", type=int, default=0, help="build seed and round seed")
    parser.add_argument("--steps", type=int, default=BuildSpec.steps, help="build steps")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="method,control")
    parser.add_argument("--extension-steps", type=int, default=1,
                        help="micro-steps per extension (reference: 3; see the module docstring)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--replay", type=int, default=200, help="base-corpus examples per round and role")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--repetition-penalty", type=float, default=1.1)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--seeds-file", default=str(SEEDS))
    parser.add_argument("--probes-file", default=str(PROBES))
    parser.add_argument("--probe-repetition-penalty", type=float, default=1.1,
                        help="for the second probe summary (probe_rp); the first is plain greedy")
    parser.add_argument("--save-dir", help="save each round's generator here")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--show", action="store_true", help="print two kept texts per round")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    base, tokenizer = load_or_build(args)
    seeds, probes = read_jsonl(args.seeds_file), read_jsonl(args.probes_file)
    print(json.dumps({"config": {k: v for k, v in vars(args).items() if k not in ("seeds_file", "probes_file")}}), flush=True)
    print(json.dumps({"mode": "base", "round": 0, **probes_both(base, tokenizer, probes, args)},
                     ensure_ascii=False), flush=True)
    for mode in args.modes.split(","):
        run_rounds(base, tokenizer, args, mode == "control", seeds, probes)


if __name__ == "__main__":
    main()
