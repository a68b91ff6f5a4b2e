"""Bad input: every unusable line is set aside with its file, line and reason; the others are read."""

import codecs
import json

import pytest

from longform.instructions import MAX_INSTRUCTION_CHARS, TokenLimit, parse_instructions

GOOD = json.dumps({"id": "en-1", "instruction": "Write a long essay about bees.", "lang": "en"}).encode()
GOOD2 = json.dumps({"id": "en-2", "instruction": "Write a long essay about ants.", "lang": "en"}).encode()

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
    data = GOOD + b"\n" + line + b"\n" + GOOD2 + b"\n"
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
    over = parse_instructions(json.dumps({"instruction": "a" * (MAX_INSTRUCTION_CHARS + 1)}).encode(), "f", "f")
    assert over.records == [] and over.rejected[0]["reason"] == (
        f'field "instruction" has {MAX_INSTRUCTION_CHARS + 1} characters (limit {MAX_INSTRUCTION_CHARS})')


def lines(*objs) -> bytes:
    return b"\n".join(json.dumps(o, ensure_ascii=False).encode() for o in objs) + b"\n"


def test_a_utf8_byte_order_mark_does_not_cost_line_1():
    parsed = parse_instructions(codecs.BOM_UTF8 + GOOD + b"\n" + GOOD2, "seeds.jsonl", "seeds")
    assert [r["id"] for r in parsed.records] == ["en-1", "en-2"] and parsed.rejected == []


@pytest.mark.parametrize("text, lang", [
    ("Write an essay on 北京烤鸭的历史", "en"),     # an English request about a Chinese topic
    ("请用 Python 写一个程序，介绍排序算法。", "zh"),  # a Chinese request naming an English term
])
def test_mixed_instructions_take_the_language_of_their_frame(text, lang):
    (record,) = parse_instructions(lines({"instruction": text}), "f", "f").records
    assert record["lang"] == lang


@pytest.mark.parametrize("text, script", [
    ("東京の歴史について長いエッセイを書いてください。", "Japanese"),
    ("Пожалуйста, напишите длинное эссе об истории Москвы, please", "Cyrillic"),
    ("한국어로 서울의 역사에 대한 긴 글을 써 주세요", "Korean"),
])
def test_unsupported_scripts_are_set_aside_naming_the_script(text, script):
    parsed = parse_instructions(lines({"instruction": text}), "f", "f")
    assert parsed.records == [] and script in parsed.rejected[0]["reason"]


@pytest.mark.parametrize("label", ["ZH", "zh-CN", "zh_Hans", "zh-Hant-TW", "Chinese"])
def test_language_labels_are_normalised(label):
    (record,) = parse_instructions(lines({"instruction": "写一篇关于蜜蜂的长文。", "lang": label}), "f", "f").records
    assert record["lang"] == "zh"
    (record,) = parse_instructions(lines({"instruction": "Write about bees.", "lang": "en-US"}), "f", "f").records
    assert record["lang"] == "en"


def test_a_label_the_text_contradicts_is_set_aside_and_a_mixed_text_keeps_its_label():
    parsed = parse_instructions(lines({"id": "a", "instruction": "写一篇关于蜜蜂的长文。", "lang": "en"},
                                      {"id": "b", "instruction": "Write about 北京烤鸭的历史与文化", "lang": "en"},
                                      {"id": "c", "instruction": "Write about 北京烤鸭的历史与文化", "lang": "zh"}),
                               "f", "f")
    assert [r["id"] for r in parsed.records] == ["b"]
    assert "lang 'en' contradicts the text" in parsed.rejected[0]["reason"]
    assert "the same instruction as id 'b'" in parsed.rejected[1]["reason"]


def test_the_same_instruction_under_another_id_is_set_aside_naming_the_first():
    parsed = parse_instructions(lines({"id": "a", "instruction": "Write about bees."},
                                      {"id": "b", "instruction": "  Write about\tbees. "},
                                      {"id": "c", "instruction": "Write about ants."}), "seeds.jsonl", "seeds")
    assert [r["id"] for r in parsed.records] == ["a", "c"]
    (rejected,) = parsed.rejected
    assert rejected["line"] == 2 and "the same instruction as id 'a'" in rejected["reason"]


def test_generated_ids_never_take_an_explicit_id():
    # line 1 would default to "seeds-1", which line 2 names explicitly: both are kept
    parsed = parse_instructions(lines({"instruction": "Write about bees."},
                                      {"id": "seeds-1", "instruction": "Write about ants."}), "seeds.jsonl", "seeds")
    assert parsed.rejected == []
    assert [r["id"] for r in parsed.records] == ["seeds-1-2", "seeds-1"]


def test_a_token_limit_sets_aside_what_does_not_fit_with_tokens_and_limit():
    limit = TokenLimit(count=lambda text: len(text.split()), limits={"en": 5, "zh": 100},
                       why={"en": "context 2048 - 2000 for the answer"})
    parsed = parse_instructions(lines({"id": "ok", "instruction": "Write about bees."},
                                      {"id": "long", "instruction": "Write a very long essay about bees."}),
                                "f", "f", token_limit=limit)
    assert [r["id"] for r in parsed.records] == ["ok"]
    assert parsed.rejected[0]["reason"] == ('field "instruction" has 7 tokens, more than the 5 that fit '
                                            "(context 2048 - 2000 for the answer)")
