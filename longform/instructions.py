"""Reading instruction files (seeds, probes): one JSON object per line,

    {"id": "en-001", "instruction": "Write a detailed guide to ...", "lang": "en"}

`id` and `lang` are optional (default: "<file stem>-<line>" and the detected language). A line
that cannot be used is set aside with the file, the line number and the reason; the others
are read on. Nothing is dropped without a trace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from longform.words import LANGUAGES, detect_language

MAX_INSTRUCTION_CHARS = 20_000


@dataclass
class InstructionFile:
    records: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)


def parse_line(raw: bytes, source: str, line_no: int, default_id: str) -> dict:
    """One validated record, or raise ValueError with what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"not valid UTF-8 (byte {err.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "instruction" not in obj:
        raise ValueError('missing field "instruction"')
    instruction = obj["instruction"]
    if not isinstance(instruction, str):
        raise ValueError(f'field "instruction" must be a string, got {type(instruction).__name__}')
    if not instruction.strip():
        raise ValueError('field "instruction" is empty')
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise ValueError(f'field "instruction" has {len(instruction)} characters (limit {MAX_INSTRUCTION_CHARS})')
    lang = obj.get("lang")
    if lang is None:
        lang = detect_language(instruction)
        if lang is None:
            raise ValueError("cannot tell the language of the instruction (English or Chinese expected)")
    elif lang not in LANGUAGES:
        raise ValueError(f'unknown language {lang!r} (supported: {", ".join(LANGUAGES)})')
    record_id = obj.get("id", default_id)
    if not isinstance(record_id, (str, int)) or isinstance(record_id, bool):
        raise ValueError(f'field "id" must be a string, got {type(record_id).__name__}')
    return {"id": str(record_id), "instruction": instruction.strip(), "lang": lang,
            "source": f"{source}:{line_no}"}


def parse_instructions(data: bytes, source: str, stem: str) -> InstructionFile:
    out = InstructionFile()
    seen: set[str] = set()
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = parse_line(raw, source, line_no, f"{stem}-{line_no}")
            if record["id"] in seen:
                raise ValueError(f'duplicate id {record["id"]!r}')
        except ValueError as err:
            out.rejected.append({"file": source, "line": line_no, "reason": str(err),
                                 "text": raw[:200].decode("utf-8", "replace")})
            continue
        seen.add(record["id"])
        out.records.append(record)
    return out
