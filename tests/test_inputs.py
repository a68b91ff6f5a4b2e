"""Bad input: every unusable line is set aside with its file, line and reason; the others are read."""

import json

import pytest

from longform.instructions import MAX_INSTRUCTION_CHARS, parse_instructions

GOOD = json.dumps({"id": "en-1", "instruction": "Write a long essay about bees.", "lang": "en"}).encode()

BAD_LINES = {
    "malformed JSON": (b'{"instruction": "Write about', "not valid JSON"),
    "not an object": (b'["Write about bees."]', "expected a JSON object"),
    "missing field": (b'{"prompt": "Write about bees."}', 'missing field "instruction"'),
    "wrong type": (b'{"instruction": 42}', "must be a string, got int"),
    "empty instruction": (b'{"instruction": ""}', "is empty"),
    "whitespace instruction": (b'{"instruction": " \\n\\t "}', "is empty"),
    "huge instruction": (json.dumps({"instruction": "word " * 250_000}).encode(), "characters (limit"),
    "non-UTF-8 bytes": (b'{"instruction": "caf\xe9 au lait"}', "not valid UTF-8"),
    "unknown language": (b'{"instruction": "Bonjour.", "lang": "fr"}', "unknown language 'fr'"),
    "undetectable language": (b'{"instruction": "12345 !!!"}', "cannot tell the language"),
    "bad id type": (b'{"instruction": "Write.", "id": [1]}', 'field "id" must be a string'),
}


@pytest.mark.parametrize("name", BAD_LINES)
def test_bad_line_is_set_aside_with_file_line_and_reason(name):
    line, reason = BAD_LINES[name]
    data = GOOD + b"\n" + line + b"\n" + GOOD.replace(b"en-1", b"en-2") + b"\n"
    parsed = parse_instructions(data, "s3://bucket/seeds.jsonl", "seeds")
    assert [r["id"] for r in parsed.records] == ["en-1", "en-2"]
    (rejected,) = parsed.rejected
    assert rejected["file"] == "s3://bucket/seeds.jsonl" and rejected["line"] == 2
    assert reason in rejected["reason"]


def test_duplicate_ids_are_set_aside():
    parsed = parse_instructions(GOOD + b"\n" + GOOD, "seeds.jsonl", "seeds")
    assert len(parsed.records) == 1 and "duplicate id" in parsed.rejected[0]["reason"]


def test_defaults_for_id_and_language_and_blank_lines_skipped():
    data = b'\n{"instruction": "\xe5\x86\x99\xe4\xb8\x80\xe7\xaf\x87\xe6\x96\x87\xe7\xab\xa0\xe3\x80\x82"}\n\n'
    (record,) = parse_instructions(data, "dir/seeds.jsonl", "seeds").records
    assert record == {"id": "seeds-2", "instruction": "写一篇文章。", "lang": "zh", "source": "dir/seeds.jsonl:2"}


def test_the_limit_is_what_the_message_says():
    ok = json.dumps({"instruction": "a" * MAX_INSTRUCTION_CHARS}).encode()
    assert len(parse_instructions(ok, "f", "f").records) == 1
