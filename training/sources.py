"""Training data from the files people already have: every record becomes chat `messages`.

    python -m jobs.train --config ... --data collect/data.jsonl --data s3://b/mix.parquet@0.5

Record shapes, recognised per record:
    chat      {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}
              (ours, the OpenAI and TRL form; `collect/data.jsonl`, the loop's SFT shards)
    alpaca    {"instruction": ..., "input": ..., "output": ..., "system"?: ..., "history"?: [[q, a], ...]}
              (LLaMA-Factory's; AgentWrite's and LongWriter-6k's files)
    sharegpt  {"conversations": [{"from": "human" | "gpt" | "system", "value": ...}, ...]}
Preference pairs (`jobs.train --method dpo`) become `prompt` / `chosen` / `rejected` messages:
TRL's explicit and implicit-prompt forms and LLaMA-Factory's instruction + chosen + rejected
(see `to_pair`).
Containers: JSON Lines, a JSON list, Parquet, or a folder written by `datasets`'
`save_to_disk`; each local or on s3://.

A record that cannot be used is set aside with its file, its line (or row) and the reason,
and the rest train. `URI@W` weighs a file: its records are used floor(W) times plus a seeded
W - floor(W) share of them once more (0.5: half of them; 2: each twice).
"""

from __future__ import annotations

import codecs
import json
import math
import os
import random
import tempfile
from dataclasses import dataclass, field

from cluster.settings import StorageSection
from cluster.storage import Storage, filesystem_for

ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system"}


class BadRecord(ValueError):
    """Why one record cannot be trained on."""


@dataclass(frozen=True)
class DataSpec:
    uri: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "DataSpec":
        """`URI` or `URI@WEIGHT`; the weight must be a positive number."""
        uri, sep, weight = text.rpartition("@")
        if not sep or "/" in weight:
            return cls(text)
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"--data {text}: the weight after '@' must be a number, got {weight!r} (a file whose "
                             f"name holds '@' is given with its weight: {text}@1)") from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"--data {text}: the weight after '@' must be a positive number")
        return cls(uri, value)


@dataclass
class Source:
    uri: str
    records: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------- one record

def turn(role: str, content, where: str) -> dict:
    if role not in ROLES:
        raise BadRecord(f"{where}: unknown role {role!r} (one of {sorted(ROLES)})")
    if not isinstance(content, str):
        raise BadRecord(f"{where}: content must be a string, got {type(content).__name__}")
    return {"role": role, "content": content}


def from_chat(messages) -> list[dict]:
    if not isinstance(messages, list):
        raise BadRecord("`messages` must be a list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRecord(f"messages[{i}] must be an object")
        out.append(turn(m.get("role"), m.get("content"), f"messages[{i}]"))
    return out


def from_alpaca(record: dict) -> list[dict]:
    out = []
    if record.get("system"):
        out.append(turn("system", record["system"], "system"))
    for i, pair in enumerate(record.get("history") or []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise BadRecord(f"history[{i}] must be a [query, answer] pair")
        out += [turn("user", pair[0], f"history[{i}][0]"), turn("assistant", pair[1], f"history[{i}][1]")]
    instruction, extra = record.get("instruction"), record.get("input") or ""
    if not isinstance(instruction, str) or not isinstance(extra, str):
        raise BadRecord("`instruction` and `input` must be strings")
    query = f"{instruction}\n\n{extra}" if instruction.strip() and extra.strip() else instruction + extra
    return out + [turn("user", query, "instruction"), turn("assistant", record.get("output"), "output")]


def from_sharegpt(conversations) -> list[dict]:
    if not isinstance(conversations, list):
        raise BadRecord("`conversations` must be a list")
    out = []
    for i, m in enumerate(conversations):
        if not isinstance(m, dict):
            raise BadRecord(f"conversations[{i}] must be an object")
        speaker = str(m.get("from", "")).lower()
        if speaker not in SHAREGPT_ROLES:
            raise BadRecord(f"conversations[{i}]: unknown speaker {m.get('from')!r}")
        out.append(turn(SHAREGPT_ROLES[speaker], m.get("value"), f"conversations[{i}]"))
    return out


def as_turns(value, role: str, where: str) -> list[dict]:
    """A string (one turn of `role`) or a list of chat messages."""
    if isinstance(value, str):
        return [turn(role, value, where)]
    try:
        return from_chat(value)
    except BadRecord as err:
        raise BadRecord(f"`{where}`: {err}") from None


def to_pair(record) -> dict:
    """A preference record as {"prompt": messages ending in a user turn, "chosen": [assistant],
    "rejected": [assistant]}, or BadRecord. Shapes:
        explicit  {"prompt": str | messages, "chosen": str | messages, "rejected": ...}  (TRL; ours)
        implicit  {"chosen": messages, "rejected": messages}, both starting with the same prompt (TRL)
        alpaca    {"instruction", "input"?, "chosen": str, "rejected": str}  (LLaMA-Factory)"""
    if not isinstance(record, dict):
        raise BadRecord(f"a record must be an object, got {type(record).__name__}")
    if "chosen" not in record or "rejected" not in record:
        raise BadRecord("a preference record needs `chosen` and `rejected`")
    if "prompt" in record:
        prompt = as_turns(record["prompt"], "user", "prompt")
        chosen, rejected = (as_turns(record[k], "assistant", k) for k in ("chosen", "rejected"))
    elif "instruction" in record:
        prompt = from_alpaca({**record, "output": "-"})[:-1]
        chosen, rejected = (as_turns(record[k], "assistant", k) for k in ("chosen", "rejected"))
    else:
        chosen, rejected = (as_turns(record[k], "assistant", k) for k in ("chosen", "rejected"))
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    if not prompt or prompt[-1]["role"] != "user" or not prompt[-1]["content"].strip():
        raise BadRecord("the prompt must end in a user turn with text")
    for name, side in (("chosen", chosen), ("rejected", rejected)):
        if len(side) != 1 or side[0]["role"] != "assistant" or not side[0]["content"].strip():
            raise BadRecord(f"`{name}` must be one assistant answer with text")
    if chosen[0]["content"] == rejected[0]["content"]:
        raise BadRecord("`chosen` and `rejected` are the same text")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def to_messages(record) -> list[dict]:
    """The record as chat messages ending in a non-empty assistant turn, or BadRecord."""
    if not isinstance(record, dict):
        raise BadRecord(f"a record must be an object, got {type(record).__name__}")
    if "messages" in record:
        messages = from_chat(record["messages"])
    elif "conversations" in record:  # the system prompt, where there is one, in a column of its own
        system = [turn("system", record["system"], "system")] if record.get("system") else []
        messages = system + from_sharegpt(record["conversations"])
    elif "instruction" in record and "output" in record:
        messages = from_alpaca(record)
    else:
        raise BadRecord("no `messages`, `conversations`, or `instruction` + `output`")
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise BadRecord("no user turn with text")
    if not messages or messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise BadRecord("the last turn must be the assistant's, with text")
    return messages


# ---------------------------------------------------------------- one file or folder

def rows_of(uri: str, cfg: StorageSection):
    """(position label, record or the error that kept it from being read) for every record."""
    fs, path = filesystem_for(uri, cfg)
    if not fs.exists(path):
        raise FileNotFoundError(f"--data {uri}: not found")
    if fs.isdir(path):
        yield from saved_dataset_rows(uri, cfg)
    elif path.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        for i, row in enumerate(table.to_pylist(), start=1):
            yield f"row {i}", row
    else:
        data = fs.cat_file(path)
        text_start = data.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
        if path.endswith(".json") and text_start == b"[":
            try:
                rows = json.loads(data.decode("utf-8-sig"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"--data {uri}: not a JSON list: {err}") from None
            for i, row in enumerate(rows, start=1):
                yield f"item {i}", row
            return
        for line_no, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                yield f"line {line_no}", json.loads(raw.decode("utf-8-sig" if line_no == 1 else "utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                yield f"line {line_no}", BadRecord(f"not a JSON line: {err}")


def saved_dataset_rows(uri: str, cfg: StorageSection):
    """A folder from `Dataset.save_to_disk` (or a DatasetDict's: every split, in name order)."""
    import datasets

    with tempfile.TemporaryDirectory(prefix="data-") as tmp:
        local = uri
        if uri.startswith("s3://"):
            local = Storage.open(uri, cfg).get_dir("", tmp)
        try:
            loaded = datasets.load_from_disk(local)
        except FileNotFoundError:
            raise ValueError(f"--data {uri}: a folder, but not one written by datasets' save_to_disk") from None
        splits = [(name, loaded[name]) for name in sorted(loaded)] if isinstance(loaded, datasets.DatasetDict) \
            else [("", loaded)]
        for name, split in splits:
            for i, row in enumerate(split, start=1):
                yield (f"{name} row {i}" if name else f"row {i}"), row


PARSERS = {"sft": lambda row: {"messages": to_messages(row)}, "dpo": to_pair}


def read_source(uri: str, cfg: StorageSection, kind: str = "sft") -> Source:
    """`kind` "sft": chat records (`messages`); "dpo": preference pairs (`prompt`, `chosen`, `rejected`)."""
    source, parse = Source(uri), PARSERS[kind]
    stem = os.path.basename(uri.rstrip("/")).split(".")[0] or "data"
    for where, row in rows_of(uri, cfg):
        try:
            if isinstance(row, Exception):
                raise row
            fields = parse(row)
        except BadRecord as err:
            source.rejected.append({"file": uri, "where": where, "reason": str(err)})
            continue
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        source.records.append({"id": str(row.get("id") or f"{stem}-{len(source.records)}"),
                               **fields, "meta": {**meta, "source": f"{uri} {where}"}})
    return source


def weighted(records: list[dict], weight: float, rng: random.Random) -> list[dict]:
    whole, part = divmod(weight, 1)
    out = records * int(whole)
    if part:
        out += rng.sample(records, round(part * len(records)))
    return out


def load_mixture(specs: list[DataSpec], cfg: StorageSection, seed: int,
                 kind: str = "sft") -> tuple[list[dict], list[dict], list[dict]]:
    """(records, rejected, per-file counts) of every --data, weighed and shuffled with `seed`."""
    rng = random.Random(f"mixture:{seed}")
    records, rejected, counts = [], [], []
    for spec in specs:
        source = read_source(spec.uri, cfg, kind)
        used = weighted(source.records, spec.weight, rng)
        records += used
        rejected += source.rejected
        counts.append({"data": spec.uri, "weight": spec.weight, "records": len(source.records),
                       "set_aside": len(source.rejected), "used": len(used)})
    rng.shuffle(records)
    return records, rejected, counts
