"""Build the tiny Qwen2-style model from code: corpus -> tokenizer -> random init -> train -> save.

The saved folder loads with `AutoModelForCausalLM` / `AutoTokenizer` and serves on vLLM-CPU
(head_dim 32, untied embeddings, eos = <|im_end|> in generation_config.json).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.utils import logging as hf_logging

from longform.metrics import probe_summary
from longform.prompts import PromptBook, load_prompts
from toyworld import tokenizer as tok_lib
from toyworld.corpus import sample_examples

PROBES = Path(__file__).resolve().parents[1] / "configs" / "seeds" / "tiny_probes.jsonl"
IGNORE = -100


@dataclass(frozen=True)
class BuildSpec:
    seed: int = 0
    steps: int = 800
    vocab_size: int = 2048
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 512
    max_positions: int = 2048
    lr: float = 3e-3
    warmup: int = 40
    batch_tokens: int = 4096  # padded tokens per optimizer step
    max_length: int = 1024
    tokenizer_examples: int = 4000
    threads: int = 2
    chunk_examples: int = 512  # examples drawn at a time for the batches (a short test build needs few)


def model_config(spec: BuildSpec, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    im_end = tokenizer.convert_tokens_to_ids(tok_lib.IM_END)
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.ffn,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.hidden // spec.heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=im_end,
        pad_token_id=tokenizer.pad_token_id,
        use_sliding_window=False,
    )


def build_tokenizer(spec: BuildSpec, prompts: PromptBook) -> PreTrainedTokenizerFast:
    examples = sample_examples(spec.seed + 1_000_003, spec.tokenizer_examples, prompts)
    texts = tok_lib.training_texts(e["messages"] for e in examples)
    return tok_lib.wrap(tok_lib.train_bpe(texts, spec.vocab_size), spec.max_length)


# ---------------------------------------------------------------- tokenizing with labels

def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def tokenize_chat(tokenizer: PreTrainedTokenizerFast, example: dict, split_prefix: bool = False):
    """(input_ids, labels) of a ChatML conversation; loss on assistant contents and their
    <|im_end|> only. Token-for-token what apply_chat_template gives (tests check), except with
    `split_prefix`, where the reply's pre-fillable prefix is encoded on its own, as it is when
    the method sends it as an assistant prefix."""
    start, end = tokenizer.convert_tokens_to_ids([tok_lib.IM_START, tok_lib.IM_END])
    ids: list[int] = []
    labels: list[int] = []
    for message in example["messages"]:
        header = [start] + encode(tokenizer, message["role"] + "\n")
        content = message["content"]
        prefix = example.get("assistant_prefix") if split_prefix else None
        if message["role"] == "assistant" and prefix and content.startswith(prefix):
            body = encode(tokenizer, prefix) + encode(tokenizer, content[len(prefix):])
        else:
            body = encode(tokenizer, content)
        body += [end]
        trained = message["role"] == "assistant"
        ids += header + body + encode(tokenizer, "\n")
        labels += [IGNORE] * len(header) + (body if trained else [IGNORE] * len(body)) + [IGNORE]
    return ids, labels


# ---------------------------------------------------------------- batches

def pad_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = [r[0] + [pad_id] * (width - len(r[0])) for r in rows]
    labels = [r[1] + [IGNORE] * (width - len(r[1])) for r in rows]
    mask = [[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask)}


def length_batches(rows: list, batch_tokens: int, rng: random.Random) -> list[list]:
    """Group rows of similar length so that padded size stays under `batch_tokens`."""
    rows = sorted(rows, key=lambda r: len(r[0]))
    batches, current = [], []
    for row in rows:
        if current and len(row[0]) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(row)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def corpus_batches(spec: BuildSpec, tokenizer, prompts: PromptBook) -> Iterator[dict]:
    rng = random.Random(f"tiny-batches:{spec.seed}")
    for chunk in range(10**9):
        examples = sample_examples(spec.seed * 100_003 + chunk, spec.chunk_examples, prompts)
        rows = [tokenize_chat(tokenizer, e, split_prefix=rng.random() < 0.5) for e in examples]
        rows = [(ids[: spec.max_length], labels[: spec.max_length]) for ids, labels in rows]
        for batch in length_batches(rows, spec.batch_tokens, rng):
            yield pad_batch(batch, tokenizer.pad_token_id)


# ---------------------------------------------------------------- training

def fast_bf16(device_type: str = "cpu") -> bool:
    """Whether bf16 matrix products run fast here. On a CPU that needs oneDNN's bf16 kernels
    (AVX-512 on x86, the bf16 extension on Arm); without them (an AVX2-only x86) PyTorch falls
    back to a reference path about 80x slower than fp32 (0.85 against 69 GFLOP/s for a
    1,024-square product, measured on such a 2-core EPYC), and the build would take an hour
    instead of minutes."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device_type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def token_mean_loss(model, batch: dict[str, torch.Tensor], bf16: bool | None = None) -> torch.Tensor:
    """Cross-entropy averaged over the batch's trained tokens (not over sequences). Logits are
    computed only where a label is trained: most of the tokens are prompt, and the output layer
    is a large share of a tiny model's compute. bf16 autocast roughly halves CPU time again where
    the CPU has bf16 kernels (`bf16=None`: use it where `fast_bf16`)."""
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    device_type = batch["input_ids"].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=fast_bf16(device_type) if bf16 is None else bf16):
        # rows are right-padded, so the causal mask alone keeps real tokens off the padding
        hidden = model.model(input_ids=batch["input_ids"]).last_hidden_state
        logits = model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum") / keep.sum().clamp(min=1)


def cosine_lr(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def train(model, batches: Iterator[dict], steps: int, lr: float, warmup: int,
          log: Callable[[dict], None] | None = None, log_every: int = 25, bf16: bool | None = None) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, steps, warmup))
    model.train()
    started, tokens, loss_sum = time.time(), 0, 0.0
    for step in range(1, steps + 1):
        batch = next(batches)
        loss = token_mean_loss(model, batch, bf16)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        loss_sum += loss.item()
        if log and (step % log_every == 0 or step == steps):
            elapsed = time.time() - started
            log({"step": step, "steps": steps, "loss": round(loss_sum / log_every, 4),
                 "tokens_per_s": round(tokens / elapsed), "eta_s": round(elapsed / step * (steps - step))})
            loss_sum = 0.0
    model.eval()
    return time.time() - started


# ---------------------------------------------------------------- generation and probes

def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


@torch.no_grad()
def greedy_replies(model, tokenizer, instructions: list[str], max_new_tokens: int = 512,
                   batch_size: int = 16, repetition_penalty: float = 1.0) -> list[str]:
    replies = []
    for i in range(0, len(instructions), batch_size):
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
                   for text in instructions[i: i + batch_size]]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                             repetition_penalty=repetition_penalty,
                             eos_token_id=model.config.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        replies += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return replies


def probe_report(model, tokenizer, probes: list[dict], max_new_tokens: int = 512,
                 repetition_penalty: float = 1.0) -> dict:
    replies = greedy_replies(model, tokenizer, [p["instruction"] for p in probes], max_new_tokens,
                             repetition_penalty=repetition_penalty)
    report = {}
    for lang in ("en", "zh"):
        texts = [r for r, p in zip(replies, probes) if p["lang"] == lang]
        report[lang] = probe_summary(texts)
    return report


# ---------------------------------------------------------------- the whole build

def weights_hash(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save(model, tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()  # transformers' bar for writing a one-file model
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    GenerationConfig(
        eos_token_id=model.config.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(out)


def build(out: str | Path, spec: BuildSpec = BuildSpec(), log: Callable[[dict], None] | None = None,
          probes: bool = True) -> dict:
    torch.set_num_threads(spec.threads)
    started = time.time()
    prompts = load_prompts()
    tokenizer = build_tokenizer(spec, prompts)
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(model_config(spec, tokenizer)).float()
    train_s = train(model, corpus_batches(spec, tokenizer, prompts), spec.steps, spec.lr,
                    min(spec.warmup, max(1, spec.steps // 10)), log)
    save(model, tokenizer, Path(out))
    summary = {
        "out": str(out),
        "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_s, 1),
        "bf16_autocast": fast_bf16(),  # fp32 where the CPU has no bf16 kernels: the weights differ
        "weights_sha256": weights_hash(model),
        "spec": asdict(spec),
    }
    if probes and PROBES.is_file():
        summary["probes"] = probe_report(model, tokenizer, read_jsonl(PROBES))
    summary["seconds"] = round(time.time() - started, 1)
    return summary
