"""Benchmark scores on hand-computed cases: LongBench-Write S_l and its buckets, LongWrite-Ruler,
the LonGen window and length score, judge verdicts (parsed, unparseable, failed) and S_q."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from evaluation.judging import VerdictError, judge_response, parse_verdict
from evaluation.registry import RUBRICS
from evaluation.rows import evenly_spaced, parse_benchmark, unusable
from evaluation.scoring import score_benchmark
from longform.params import Decoding, portable_fields
from longform.prompts import load_prompts
from longform.scores import lbw_bucket, lbw_length_score, longen_length_score, longen_window
from tests.scripted import ScriptedModel

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
PROMPTS = load_prompts()
LBW = RUBRICS["longbench-write"]
LONGEN = RUBRICS["longen"]


# -- LongBench-Write S_l ----------------------------------------------------------------------
@pytest.mark.parametrize("required, words, expected", [
    (1000, 1000, 100.0),          # exact
    (1000, 2000, 100 * (1 - 1 / 3)),  # above: 1 - (2 - 1) / 3
    (1000, 4000, 0.0),            # above, floored: 1 - (4 - 1) / 3 = 0
    (1000, 9000, 0.0),
    (1000, 500, 50.0),            # below: 1 - (2 - 1) / 2
    (500, 400, 87.5),             # below: 1 - (1.25 - 1) / 2
    (1000, 250, 0.0),             # below, floored: 1 - (4 - 1) / 2 < 0
    (1000, 0, 0.0),               # nothing written scores 0 (the reference divided by zero)
])
def test_length_score_matches_the_formula(required, words, expected):
    assert lbw_length_score(required, words) == pytest.approx(expected)


@pytest.mark.parametrize("required, bucket", [
    (100, "[0,500)"), (499, "[0,500)"), (500, "[500,2k)"), (1999, "[500,2k)"), (2000, "[2k,4k)"),
    (3999, "[2k,4k)"), (4000, "[4k,20k]"), (20000, "[4k,20k]"),
])
def test_buckets_by_required_length(required, bucket):
    assert lbw_bucket(required) == bucket


def lbw_row(i, length, response, prompt="Write it."):
    return {"id": f"r{i}", "prompt": prompt, "length": length, "response": response}


def test_longbench_write_counts_chinese_characters_and_english_words_its_own_way():
    rows = [
        lbw_row(0, 9, "茶是中国的古老饮品。", prompt="写一篇关于茶的文章"),  # 9 ideographs; "。" is no word
        lbw_row(1, 4, "State-of-the-art, 3.5 times."),  # state, of, the, art, times: 5 words (3.5 is none)
    ]
    scores, scored = score_benchmark("longbench-write", rows, None)
    assert [s["produced"] for s in scored] == [9, 5]
    assert scored[0]["length_score"] == 100.0
    assert scored[1]["length_score"] == pytest.approx(100 * (1 - (5 / 4 - 1) / 3))
    assert scores["S_l"] == pytest.approx((100 + 100 * (1 - 0.25 / 3)) / 2, abs=0.01)
    assert scores["S_q"] is None and scores["S"] is None and scores["quality"] is None


def test_mean_and_buckets_over_answered_responses_and_failed_ones_listed():
    rows = [lbw_row(0, 100, "word " * 100), lbw_row(1, 400, "word " * 200), lbw_row(2, 1000, ""),
            lbw_row(3, 3000, "word " * 6000), {**lbw_row(4, 5000, None), "error": "HTTP 400: too long"}]
    scores, _ = score_benchmark("longbench-write", rows, None)
    assert scores["answered"] == 4 and scores["failed_responses"] == [{"id": "r4", "error": "HTTP 400: too long"}]
    # 100, 100 * (1 - (2 - 1) / 2) = 50, 0 (empty), 100 * (1 - (2 - 1) / 3) = 66.67
    assert scores["S_l"] == pytest.approx((100 + 50 + 0 + 200 / 3) / 4, abs=0.01)
    assert scores["S_l_buckets"] == {"[0,500)": {"n": 2, "score": 75.0}, "[500,2k)": {"n": 1, "score": 0.0},
                                     "[2k,4k)": {"n": 1, "score": 66.67}, "[4k,20k]": {"n": 0, "score": None}}


def test_ruler_reports_words_produced_per_required_length():
    rows = [{"id": "a", "prompt": "p", "length": 1000, "response": "w " * 800},
            {"id": "b", "prompt": "p", "length": 1000, "response": "w " * 1200},
            {"id": "c", "prompt": "p", "length": 5000, "response": "w " * 1000}]
    scores, _ = score_benchmark("longwrite-ruler", rows, None)
    assert scores["per_length"]["1000"] == {"n": 2, "mean_words": 1000.0, "median_words": 1000.0, "ratio": 1.0,
                                           "S_l": pytest.approx((100 * (1 - 0.25 / 2) + 100 * (1 - 0.2 / 3)) / 2,
                                                                abs=0.01)}
    assert scores["per_length"]["5000"]["ratio"] == 0.2 and scores["per_length"]["5000"]["S_l"] == 0.0


# -- LonGen -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, constraint, window", [
    ("about", "around 2000 words", (1600, 2400)),
    ("about", "大约2000字", (1600, 2400)),
    ("range", "4000-5000 words", (4000, 5000)),
    ("range", "6000字至8000字", (6000, 8000)),
    ("above", "more than 3000 words", (3000, 4500)),
    ("above", "大于2500字", (2500, 3750)),
    ("below", "less than 5000 words", (2500, 5000)),  # below is [0.5N, N] in both languages
    ("below", "小于5000字", (2500, 5000)),
])
def test_longen_window_from_the_constraint(kind, constraint, window):
    assert longen_window(kind, constraint) == pytest.approx(window)


@pytest.mark.parametrize("words, expected", [
    (2000, 1.0), (1600, 1.0), (2400, 1.0),  # inside, edges included
    (1200, 0.5),  # below: 2 * 1200 / 1600 - 1
    (800, 0.0),   # below, floored
    (3000, 0.5),  # above: 3 - 2 * 3000 / 2400
    (3600, 0.0),  # above, floored
    (0, 0.0),
])
def test_longen_length_score_below_inside_above(words, expected):
    assert longen_length_score(words, (1600, 2400)) == pytest.approx(expected)


def longen_row(i, kind, constraint, response, language="en", rng="2-4k"):
    return {"id": f"g{i}", "language": language, "range": rng, "type": kind, "constraint": constraint,
            "query": "Write.", "response": response}


def test_longen_counts_with_self_lengthen_rule_and_groups_by_type_range_language():
    rows = [
        # 600 ideographs + 600 Chinese commas: 1200 words by Self-Lengthen's rule (600 by LongBench-Write's)
        longen_row(0, "about", "大约1000字", "茶，" * 600, language="zh"),
        longen_row(1, "below", "less than 2000 words", "word " * 500),  # [1000, 2000]: 2 * 500 / 1000 - 1 = 0
        longen_row(2, "above", "more than 2000 words", "word " * 3500, rng="4-6k"),  # [2000, 3000]: 3 - 7000 / 3000
        longen_row(3, "range", "2000-4000 words", "word " * 3000),
    ]
    scores, scored = score_benchmark("longen", rows, None)
    assert [s["produced"] for s in scored] == [1200, 500, 3500, 3000]
    assert [s["length_score"] for s in scored] == pytest.approx([1.0, 0.0, 3 - 7000 / 3000, 1.0])
    assert scores["length_score"] == pytest.approx((2 + 3 - 7000 / 3000) / 4, abs=1e-4)
    assert scores["by_type"]["about"] == {"n": 1, "score": 1.0} and scores["by_type"]["below"]["score"] == 0.0
    assert scores["by_range"]["2-4k"]["n"] == 3 and scores["by_range"]["4-6k"]["n"] == 1
    assert scores["by_language"]["zh"] == {"n": 1, "score": 1.0} and scores["by_language"]["en"]["n"] == 3
    assert scores["quality_score"] is None


# -- benchmark files ----------------------------------------------------------------------------
def test_bad_lines_are_set_aside_with_their_reason():
    lines = [
        json.dumps({"prompt": "Write 100 words.", "length": 100}),
        "{not json",
        json.dumps({"prompt": "Write.", "length": "100"}),
        json.dumps({"prompt": "Write.", "length": 0}),
        json.dumps({"length": 100}),
        json.dumps({"id": "x", "prompt": "Write.", "length": 100}),
        json.dumps({"id": "x", "prompt": "Again.", "length": 100}),
    ]
    parsed = parse_benchmark("\n".join(lines).encode(), "longbench-write", "b.jsonl", "b")
    assert [r["id"] for r in parsed.rows] == ["b-1", "x"]
    assert [(r["line"], r["reason"].split(":")[0]) for r in parsed.rejected] == [
        (2, "not a JSON line"), (3, "field 'length' must be int, got str"), (4, "field 'length' must be positive, got 0"),
        (5, "missing field 'prompt'"), (7, "duplicate id 'x'")]
    responses = parse_benchmark(lines[0].encode(), "longbench-write", "b.jsonl", "b", with_response=True)
    assert responses.rejected[0]["reason"] == "missing field 'response'"
    longen = parse_benchmark(json.dumps({"query": "q", "type": "above", "constraint": "many words"}).encode(),
                             "longen", "g.jsonl", "g")
    assert longen.rejected[0]["reason"] == "no number in the constraint 'many words'"


def test_a_length_written_as_an_integral_float_is_read_as_the_whole_number():
    lines = [json.dumps({"prompt": "Write.", "length": 300.0}), json.dumps({"prompt": "Write.", "length": 300.5}),
             '{"prompt": "Write.", "length": NaN}', '{"prompt": "Write.", "length": Infinity}']
    parsed = parse_benchmark("\n".join(lines).encode(), "longwrite-ruler", "r.jsonl", "r")
    assert [(r["id"], r["length"], type(r["length"])) for r in parsed.rows] == [("r-1", 300, int)]
    assert [(r["line"], r["reason"]) for r in parsed.rejected] == [
        (2, "field 'length' must be a whole number, got 300.5"), (3, "field 'length' must be a whole number, got nan"),
        (4, "field 'length' must be a whole number, got inf")]
    scores, _ = score_benchmark("longwrite-ruler", [{**parsed.rows[0], "response": "w " * 300}], None)
    assert list(scores["per_length"]) == ["300"] and scores["S_l"] == 100.0


@pytest.mark.parametrize("kind, constraint", [
    ("about", "about 0 words"), ("below", "less than 0 words"), ("above", "more than 0 words"),
    ("range", "0-0 words"), ("about", "大约0字"),
])
def test_a_longen_constraint_of_0_words_is_set_aside_not_divided_by(kind, constraint):
    with pytest.raises(ValueError, match="asks for 0 words"):
        longen_window(kind, constraint)
    rows = [longen_row(0, kind, constraint, "word " * 10), longen_row(1, "about", "about 100 words", "word " * 100)]
    parsed = parse_benchmark("\n".join(json.dumps(r) for r in rows).encode(), "longen", "g.jsonl", "g",
                             with_response=True)
    assert [(r["line"], r["reason"]) for r in parsed.rejected] == [
        (1, f"the constraint {constraint!r} asks for 0 words")]
    scores, _ = score_benchmark("longen", parsed.rows, None)
    assert scores["answered"] == 1 and scores["length_score"] == 1.0


def test_a_range_from_0_words_is_scored():
    assert longen_window("range", "0-500 words") == (0.0, 500.0)
    assert longen_length_score(0, (0.0, 500.0)) == 1.0 and longen_length_score(750, (0.0, 500.0)) == 0.0


def test_a_file_is_unusable_when_more_than_half_its_lines_are_set_aside():
    good, bad = json.dumps({"prompt": "Write.", "length": 100}), "{not json"
    half = parse_benchmark("\n".join([good] * 4 + [bad] * 4).encode(), "longbench-write", "b.jsonl", "b")
    assert unusable(half, "b.jsonl") is None  # half is still worth scoring
    most = parse_benchmark("\n".join([good] * 3 + [bad] * 4).encode(), "longbench-write", "b.jsonl", "b")
    assert unusable(most, "b.jsonl", "responses").startswith(
        "b.jsonl: 4 of 7 lines set aside as responses (3 usable); first: line 4: not a JSON line")
    assert unusable(parse_benchmark(b"\n\n", "longbench-write", "b.jsonl", "b"), "b.jsonl") == "b.jsonl: no usable line"


def test_a_byte_order_mark_does_not_cost_line_1():
    data = "\ufeff".encode() + json.dumps({"prompt": "Write.", "length": 100}).encode()
    parsed = parse_benchmark(data, "longbench-write", "b.jsonl", "b")
    assert [r["id"] for r in parsed.rows] == ["b-1"] and parsed.rejected == []


def test_evenly_spaced_subset_spans_the_file():
    rows = [{"id": str(i)} for i in range(120)]
    assert [r["id"] for r in evenly_spaced(rows, 4)] == ["0", "30", "60", "90"]
    assert evenly_spaced(rows, None) == rows and evenly_spaced(rows[:3], 10) == rows[:3]


@pytest.mark.parametrize("name, benchmark, count", [
    ("longbench_write.jsonl", "longbench-write", 120), ("longbench_write_en.jsonl", "longbench-write", 60),
    ("longwrite_ruler.jsonl", "longwrite-ruler", 48), ("LonGen.jsonl", "longen", 240),
])
def test_the_public_benchmark_files_parse_completely(name, benchmark, count):
    path = BENCHMARKS / name
    if not path.exists():
        pytest.skip(f"{path} is not here (the benchmarks are not shipped with the project)")
    parsed = parse_benchmark(path.read_bytes(), benchmark, str(path), path.stem)
    assert len(parsed.rows) == count and parsed.rejected == []


# -- judge verdicts ---------------------------------------------------------------------------
GOOD = ('{"Analysis": "Clear and on topic.", "Relevance": 5, "Accuracy": 4, "Coherence": 4, "Clarity": 3, '
        '"Breadth and Depth": 2, "Reading Experience": 3}')


def test_a_verdict_parses_from_plain_or_fenced_json_with_loose_key_spelling():
    assert parse_verdict(GOOD, LBW) == {"Relevance": 5, "Accuracy": 4, "Coherence": 4, "Clarity": 3,
                                        "Breadth and Depth": 2, "Reading Experience": 3}
    fenced = ("Here you go:\n```json\n{\"analysis\": \"ok\", \"relevance\": \"4\", \"accuracy\": 4,\n"
              "\"coherence\": 4, \"clarity\": 4, \"breadth_and_depth\": 4, \"reading-experience\": 4.0}\n```\nThanks")
    assert set(parse_verdict(fenced, LBW).values()) == {4.0}


@pytest.mark.parametrize("reply, reason", [
    ("Relevance: 5, Accuracy: 4", "no JSON object"),
    ('{"Relevance": 5, "Accuracy": 4,', "no JSON object"),
    ('{"Relevance": 5 "Accuracy": 4}', "does not parse"),
    ('{"Relevance": 5}', "no score for Accuracy"),
    (GOOD.replace('"Clarity": 3', '"Clarity": 6'), "Clarity: 6 is not between 1 and 5"),
    (GOOD.replace('"Clarity": 3', '"Clarity": "good"'), "Clarity: 'good' is not a number"),
    (GOOD.replace('"Clarity": 3', '"Clarity": true'), "Clarity: True is not between"),
    ("[1, 2, 3]", "no JSON object"),
])
def test_unusable_verdicts_are_rejected_with_a_reason_never_guessed(reply, reason):
    with pytest.raises(VerdictError, match=reason):
        parse_verdict(reply, LBW)


def test_longen_verdicts_use_seven_dimensions_from_1_to_10():
    reply = json.dumps({"Analysis": "x", **{d: 8 for d in LONGEN.dimensions}})
    assert len(parse_verdict(reply, LONGEN)) == 7
    with pytest.raises(VerdictError, match="no score for Consistency"):
        parse_verdict(GOOD, LONGEN)


def judge_all(judge, rows, attempts):
    async def go():
        return await asyncio.gather(*(judge_response(judge, PROMPTS, "longbench-write", r, Decoding(), attempts)
                                      for r in rows))
    return asyncio.run(go())


def judge_rows(n):
    return [lbw_row(i, 100, "word " * 100) for i in range(n)]


def test_judging_retries_unparseable_verdicts_and_counts_those_that_stay_unparseable():
    replies = {"r0": ["I liked it.", GOOD], "r1": ["no", "still no"], "r2": [GOOD]}

    def chat(prompt, sampling):
        row = next(k for k in replies if f"Write it {k}." in prompt)
        return replies[row].pop(0)

    judge = ScriptedModel(chat=chat, fail_on="Write it r3.")
    rows = [{**r, "prompt": f"Write it {r['id']}."} for r in judge_rows(4)]
    verdicts = judge_all(judge, rows, attempts=2)
    assert [(v["status"], v["attempts"]) for v in verdicts] == [("ok", 2), ("unparseable", 2), ("ok", 1),
                                                                ("error", 1)]
    assert verdicts[1]["reason"] == "no JSON object in the reply" and verdicts[1]["raw"] == "still no"
    assert verdicts[3]["reason"].startswith("model_error: HTTP 400")

    scores, _ = score_benchmark("longbench-write", rows, verdicts)
    quality = scores["quality"]
    assert (quality["judged"], quality["unparseable"], quality["judge_errors"]) == (2, 1, 1)
    assert [v["id"] for v in quality["not_scored"]] == ["r1", "r3"]
    # two identical verdicts: (5-1)*25, (4-1)*25, (4-1)*25, (3-1)*25, (2-1)*25, (3-1)*25
    assert quality["dimensions"]["Relevance"] == 100.0 and quality["dimensions"]["Breadth and Depth"] == 25.0
    assert scores["S_q"] == pytest.approx((100 + 75 + 75 + 50 + 25 + 50) / 6, abs=0.01)
    assert scores["S_l"] == 100.0 and scores["S"] == pytest.approx((100 + scores["S_q"]) / 2, abs=0.01)


def test_no_parseable_verdict_leaves_s_q_and_s_null():
    rows = judge_rows(2)
    verdicts = judge_all(ScriptedModel(chat=lambda p, s: "nice"), rows, attempts=1)
    scores, _ = score_benchmark("longbench-write", rows, verdicts)
    assert scores["S_q"] is None and scores["S"] is None and scores["quality"]["unparseable"] == 2


def test_the_judge_prompt_follows_the_language_and_the_request_carries_no_neutral_knobs():
    judge = ScriptedModel(chat=lambda p, s: GOOD)
    row = {"id": "z", "prompt": "写一篇关于茶的文章", "length": 100, "response": "茶。"}
    asyncio.run(judge_response(judge, PROMPTS, "longbench-write", row, Decoding(temperature=0.5, top_p=1.0, top_k=-1,
                                                                               repetition_penalty=1.0), 1))
    call = judge.calls[0]
    assert "<请求>\n写一篇关于茶的文章\n</请求>" in call["messages"][0]["content"]
    assert call["sampling"] == {"temperature": 0.5, "max_tokens": 16384}
    assert portable_fields(Decoding()) == Decoding().request_fields()


# -- a benchmark's own judge prompt (evaluation.judge_prompt) ---------------------------------
OFFICIAL_REPLY = ('Analysis: a short answer.\n{"Analysis": "Brief but on topic.", "Relevance": 4, "Accuracy": 5, '
                  '"Coherence": 4, "Clarity": 3, "Breadth and Depth": 2, "Reading Experience": 3}')


@pytest.mark.skipif(not (BENCHMARKS / "longwriter_judge.txt").is_file(), reason="../shared/benchmarks not present")
def test_longwriters_official_judge_prompt_renders_and_its_replies_parse():
    from evaluation.judging import JudgeWording, judge_provenance

    text = (BENCHMARKS / "longwriter_judge.txt").read_text(encoding="utf-8")
    wording = JudgeWording.parse(text, "longwriter_judge.txt")
    judge = ScriptedModel(chat=lambda p, s: OFFICIAL_REPLY)
    row = {"id": "w", "prompt": "Write a 500-word story about $INST$ tokens.", "length": 500, "response": "Once."}
    verdict = asyncio.run(judge_response(judge, PROMPTS, "longbench-write", row, Decoding(temperature=0.5), 1, wording))
    sent = judge.calls[0]["messages"][0]["content"]
    # the request and the response sit in the official slots; the prompt's own JSON braces stay;
    # a request that itself says "$INST$" is not expanded a second time
    assert "<User Request>\n\nWrite a 500-word story about $INST$ tokens.\n\n</User Request>" in sent
    assert "<Response>\n\nOnce.\n\n</Response>" in sent and "$RESPONSE$" not in sent
    assert '{"Analysis": ..., "Relevance": ...' in sent
    assert verdict["status"] == "ok" and verdict["scores"]["Breadth and Depth"] == 2.0
    provenance = judge_provenance(judge, PROMPTS, "longbench-write", Decoding(temperature=0.5), wording)
    assert provenance["prompt"] == "longwriter_judge.txt" and provenance["decoding"]["temperature"] == 0.5
    assert provenance["prompt_sha256"] == __import__("hashlib").sha256(text.encode()).hexdigest()
    builtin = judge_provenance(judge, PROMPTS, "longbench-write", Decoding(), None)
    assert builtin["prompt"].startswith("built-in") and builtin["prompt_sha256"] != provenance["prompt_sha256"]


def test_a_judge_prompt_without_a_response_slot_is_refused():
    from evaluation.judging import JudgeWording

    with pytest.raises(ValueError, match=r"judge.txt: .*\$RESPONSE\$"):
        JudgeWording.parse("Rate this: $INST$", "judge.txt")
    assert JudgeWording.parse("Q {instruction} A {response} {\"x\": 1}", "j").render("q", "a") == 'Q q A a {"x": 1}'
