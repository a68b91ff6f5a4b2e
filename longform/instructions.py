"""Reading instruction files (seeds, probes): one JSON object per line,

    {"id": "en-001", "instruction": "Write a detailed guide to ...", "lang": "en"}

`id` and `lang` are optional (default: "<file stem>-<line>" and the detected language). A line
that cannot be used is set aside with the file, the line number and the reason; the others
are read on. Nothing is dropped without a trace. Set aside:

* lines that are not a JSON object with a non-empty string "instruction" (or not UTF-8; a
  UTF-8 byte-order mark at the start of the file is allowed);
* instructions longer than MAX_INSTRUCTION_CHARS, or, given a `TokenLimit`, than the tokens the
  model's context leaves for them once the prompt templates and the answer are counted;
* instructions in a language the method does not support (Japanese, Cyrillic, ...; the
  supported ones are the table in longform/languages.py), and a `lang` label that the text
  contradicts. Labels are normalised ("ZH", "zh-CN", "zh-Hans", "Chinese" -> zh; "en-US" -> en);
* a second line with an id already used, and a second line with the same instruction text
  (whitespace normalised) under another id: the reason names the first id.

Generated ids never take an id that a line of the same file gives explicitly.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from longform import languages
from longform.words import guess_script, label_contradiction, language_of_script, normalize_language_label, script_name

MAX_INSTRUCTION_CHARS = 20_000


@dataclass(frozen=True)
class TokenLimit:
    """How many tokens an instruction may have, per language, and how that was worked out
    (cluster/preflight.py derives it from the model's tokenizer and context window)."""

    count: Callable[[str], int]
    limits: dict[str, int]
    why: dict[str, str] = field(default_factory=dict)

    def check(self, instruction: str, lang: str) -> str | None:
        limit = self.limits.get(lang)
        if limit is None:
            return None
        tokens = self.count(instruction)
        if tokens <= limit:
            return None
        why = self.why.get(lang)
        return f'field "instruction" has {tokens} tokens, more than the {limit} that fit' + (f" ({why})" if why else "")


@dataclass
class InstructionFile:
    records: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    lines: int = 0  # non-blank lines read


def language_of(obj: dict, instruction: str) -> str:
    """The record's language: its normalised `lang` label if the text agrees, else detected."""
    label = obj.get("lang")
    if label is None:
        guess = guess_script(instruction)
        if guess is None:
            raise ValueError(f"cannot tell the language of the instruction (no letters; {languages.names('or')} "
                             "expected)")
        lang = language_of_script(guess)
        if lang is None:
            raise ValueError(f"the instruction is written in {script_name(guess)}; supported: {languages.names('and')}")
        return lang
    if not isinstance(label, str):
        raise ValueError(f'field "lang" must be a string, got {type(label).__name__}')
    lang = normalize_language_label(label)
    if lang is None:
        raise ValueError(f'unknown language {label!r} (supported: {", ".join(languages.codes())})')
    contradiction = label_contradiction(instruction, lang)
    if contradiction is not None:
        raise ValueError(contradiction)
    return lang


def parse_line(raw: bytes, source: str, line_no: int, token_limit: TokenLimit | None = None) -> dict:
    """One validated record (its "id" None when the line gives none), or raise ValueError with
    what is wrong."""
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
    instruction = instruction.strip()
    lang = language_of(obj, instruction)
    too_long = token_limit.check(instruction, lang) if token_limit is not None else None
    if too_long is not None:
        raise ValueError(too_long)
    record_id = obj.get("id")
    if record_id is not None and (not isinstance(record_id, (str, int)) or isinstance(record_id, bool)):
        raise ValueError(f'field "id" must be a string, got {type(record_id).__name__}')
    return {"id": None if record_id is None else str(record_id), "instruction": instruction, "lang": lang,
            "source": f"{source}:{line_no}"}


def default_id(stem: str, line_no: int, taken: set[str]) -> str:
    """"<stem>-<line>", or with a "-2", "-3", ... suffix when a line of the file already uses it."""
    candidate, n = f"{stem}-{line_no}", 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{line_no}-{n}"
    return candidate


def parse_instructions(data: bytes, source: str, stem: str, token_limit: TokenLimit | None = None) -> InstructionFile:
    out = InstructionFile()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    parsed: list[tuple[int, bytes, dict | str]] = []
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            parsed.append((line_no, raw, parse_line(raw, source, line_no, token_limit)))
        except ValueError as err:
            parsed.append((line_no, raw, str(err)))
    out.lines = len(parsed)
    taken = {r["id"] for _, _, r in parsed if isinstance(r, dict) and r["id"] is not None}
    seen_ids: set[str] = set()
    seen_texts: dict[str, str] = {}
    for line_no, raw, record in parsed:
        if isinstance(record, dict):
            if record["id"] is None:
                record["id"] = default_id(stem, line_no, taken)
                taken.add(record["id"])
            text_key = " ".join(record["instruction"].split())
            if record["id"] in seen_ids:
                record = f'duplicate id {record["id"]!r}'
            elif text_key in seen_texts:
                record = f"the same instruction as id {seen_texts[text_key]!r} (set aside as a duplicate)"
            else:
                seen_ids.add(record["id"])
                seen_texts[text_key] = record["id"]
                out.records.append(record)
                continue
        out.rejected.append({"file": source, "line": line_no, "reason": record,
                             "text": raw[:200].decode("utf-8", "replace")})
    return out
