"""From chat `messages` to training rows.

* `encode`: the prompt (every turn before the last assistant turn, rendered by the model's
  chat template with the generation prompt) and the answer (the rest of the rendered text:
  the assistant's content and its end-of-turn) are tokenized separately, as at inference,
  where the engine tokenizes the prompt and generates the answer. Labels are -100 on the
  prompt, so the loss covers assistant tokens only.
* Samples longer than `cutoff_len` are skipped or truncated (the policy is a setting) and
  counted.
* `pack`: samples go into rows of `row_len` tokens, first-fit by decreasing length. Position
  ids restart at 0 for every sample; transformers builds a block-diagonal causal mask from
  them (when no attention mask and no KV cache is given: training runs with use_cache=False),
  so no token attends across samples.
* The Trainer averages the loss over all label tokens of the global batch (all devices, all
  accumulation steps), so a long answer weighs by its tokens, not as one sequence.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(messages: list[dict], tokenizer) -> Encoded:
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's answer")
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently inside the full chat")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    return Encoded(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)


def encode_all(
    examples: list[dict], tokenizer, cutoff_len: int, over_length: str
) -> tuple[list[Encoded], Counter]:
    """Encode chat examples; counts: examples, over_length_skipped, over_length_truncated."""
    counts: Counter = Counter()
    encoded: list[Encoded] = []
    for example in examples:
        counts["examples"] += 1
        sample = encode(example["messages"], tokenizer)
        if len(sample) > cutoff_len:
            if over_length == "skip":
                counts["over_length_skipped"] += 1
                continue
            counts["over_length_truncated"] += 1
            sample = Encoded(sample.input_ids[:cutoff_len], sample.labels[:cutoff_len])
        if all(label == IGNORE for label in sample.labels):
            counts["no_answer_tokens"] += 1
            continue
        encoded.append(sample)
    counts["kept"] = len(encoded)
    return encoded, counts


def pack(samples: list[Encoded], row_len: int) -> list[list[Encoded]]:
    """First-fit decreasing: returns rows, each a list of samples totalling <= row_len tokens."""
    rows: list[list[Encoded]] = []
    room: list[int] = []
    for sample in sorted(samples, key=len, reverse=True):
        if len(sample) > row_len:
            raise ValueError(f"a sample of {len(sample)} tokens does not fit a row of {row_len}")
        for i, free in enumerate(room):
            if len(sample) <= free:
                rows[i].append(sample)
                room[i] -= len(sample)
                break
        else:
            rows.append([sample])
            room.append(row_len - len(sample))
    return rows


class PackedRows(torch.utils.data.Dataset):
    """Each item is one packed row: input_ids, labels, position_ids, padded to row_len."""

    def __init__(self, rows: list[list[Encoded]], row_len: int, pad_id: int):
        self.rows, self.row_len, self.pad_id = rows, row_len, pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        ids, labels, positions = [], [], []
        for sample in self.rows[i]:
            ids += sample.input_ids
            labels += sample.labels
            positions += list(range(len(sample)))
        pad = self.row_len - len(ids)
        # the padding tail is one more "sample" (positions restart) that no label counts
        return {
            "input_ids": torch.tensor(ids + [self.pad_id] * pad),
            "labels": torch.tensor(labels + [IGNORE] * pad),
            "position_ids": torch.tensor(positions + list(range(pad))),
        }


class PaddedSamples(torch.utils.data.Dataset):
    """One sample per item; `pad_batch` pads a batch to its longest sample (for comparison)."""

    def __init__(self, samples: list[Encoded]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Encoded:
        return self.samples[i]


def stack_rows(batch: list[dict]) -> dict:
    return {key: torch.stack([item[key] for item in batch]) for key in batch[0]}


def pad_batch(batch: list[Encoded], pad_id: int) -> dict:
    width = max(len(s) for s in batch)
    ids = [s.input_ids + [pad_id] * (width - len(s)) for s in batch]
    labels = [s.labels + [IGNORE] * (width - len(s)) for s in batch]
    mask = [[1] * len(s) + [0] * (width - len(s)) for s in batch]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


class Collator:
    """Makes batches (stacked packed rows, or padded samples) and counts what they cost: the
    positions the model computes and how many of them carry a label."""

    def __init__(self, packed: bool, pad_id: int):
        self.packed, self.pad_id = packed, pad_id
        self.positions = self.label_positions = 0

    def __call__(self, batch: list) -> dict:
        out = stack_rows(batch) if self.packed else pad_batch(batch, self.pad_id)
        self.positions += out["input_ids"].numel()
        self.label_positions += int((out["labels"] != IGNORE).sum())
        return out

    @property
    def useful_token_ratio(self) -> float:
        return round(self.label_positions / self.positions, 4) if self.positions else 0.0


def token_stats(samples: list[Encoded]) -> dict:
    label_tokens = sum(sum(1 for x in s.labels if x != IGNORE) for s in samples)
    return {"samples": len(samples), "tokens": sum(len(s) for s in samples), "label_tokens": label_tokens}
