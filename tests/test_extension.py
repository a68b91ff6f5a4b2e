import asyncio

import pytest

from longform.extension import extend, extend_once, extension_step, split_sentences, split_units
from longform.params import Decoding, MethodParams
from longform.prompts import load_prompts
from tests.scripted import ScriptedModel, text_of

PROMPTS = load_prompts()
DECODING = Decoding(seed=3)


def run(coro):
    return asyncio.run(coro)


def test_split_units_prefers_blank_lines():
    assert split_units("a.\n\nb.\n\nc.") == ["a.", "b.", "c."]


def test_split_units_falls_back_to_lines_when_blank_lines_give_two_or_fewer():
    assert split_units("a.\nb.\n\nc.") == ["a.", "b.", "c."]
    assert split_units("a.\n\nb.") == ["a.", "b."]


def test_split_units_falls_back_to_sentences_for_one_paragraph():
    assert split_units("One. Two! Three?") == ["One.", "Two!", "Three?"]
    assert split_units("一。二！三？") == ["一。", "二！", "三？"]


def test_split_units_of_empty_text():
    assert split_units("") == []
    assert split_sentences("   ") == []


def enrich(prompt, sampling):
    """Stage 1: every unit of the given text followed by a new sentence."""
    return "\n\n".join(f"{u}\n\nMore about point {i}." for i, u in enumerate(split_units(text_of(prompt))))


def test_one_micro_step_enriches_the_first_half_and_continues_after_two_thirds():
    text = "P1 one.\n\nP2 two.\n\nP3 three.\n\nP4 four."
    model = ScriptedModel(chat=enrich, cont=lambda prompt, prefix, s: "\n\nTail sentence here.")
    out = run(extension_step("Write about x.", text, "en", model, PROMPTS, MethodParams(), DECODING, "k"))
    stage1, stage2 = model.calls
    assert text_of(stage1["messages"][-1]["content"]) == "P1 one.\n\nP2 two."  # first half only
    assert text_of(stage2["messages"][-1]["content"]) == text  # the whole text as the outline
    # stage 1 returned 4 units; the first 2/3 (int(4 * 2/3) = 2) become the prefix
    assert stage2["prefix"] == "P1 one.\n\nMore about point 0."
    assert out == stage2["prefix"] + "\n\nTail sentence here."
    assert stage1["sampling"]["seed"] != stage2["sampling"]["seed"]  # one seed per request


def test_chinese_instruction_uses_the_chinese_template():
    model = ScriptedModel(chat=enrich, cont=lambda p, prefix, s: "尾句。")
    run(extension_step("写蜜蜂。", "一。\n\n二。\n\n三。", "zh", model, PROMPTS, MethodParams(), DECODING, "k"))
    assert "指令：写蜜蜂。" in model.calls[0]["messages"][-1]["content"]


def fixed_candidates(candidates):
    """A model whose successive micro-steps produce the given candidates (prefix '' + text)."""
    queue = list(candidates)
    return ScriptedModel(chat=lambda p, s: "", cont=lambda p, prefix, s: queue.pop(0))


DRAFT = "Alpha beta gamma delta epsilon zeta eta theta iota kappa."  # 10 words


def test_only_longer_rule_passing_candidates_are_accepted():
    longer = DRAFT + " Lambda mu nu xi."  # 14 words
    cut_off = DRAFT + " Lambda mu nu xi omicron pi rho"  # longer but no final punctuation
    longest = longer + " Sigma tau upsilon phi."  # 18 words
    model = fixed_candidates([longer, cut_off, longest])
    result = run(extend_once("I.", DRAFT, "en", model, PROMPTS, MethodParams(), DECODING, "k"))
    assert [s.reason for s in result.steps] == ["accepted", "no_final_punctuation", "accepted"]
    assert result.text == longest and result.words == 18


def test_a_shorter_candidate_is_not_accepted_and_the_best_is_kept():
    longer = DRAFT + " Lambda mu nu xi."
    model = fixed_candidates([longer, DRAFT[:20] + ".", longer])
    result = run(extend_once("I.", DRAFT, "en", model, PROMPTS, MethodParams(), DECODING, "k"))
    assert [s.reason for s in result.steps] == ["accepted", "not_longer", "not_longer"]
    assert result.text == longer


def test_growth_must_exceed_1_2x():
    exactly = DRAFT + " Lambda mu."  # 12 words = 1.2 x 10: not enough
    result = run(extend_once("I.", DRAFT, "en", fixed_candidates([exactly] * 3), PROMPTS,
                             MethodParams(), DECODING, "k"))
    assert result.text is None and result.reason == "not_longer"
    more = DRAFT + " Lambda mu nu."  # 13 words
    result = run(extend_once("I.", DRAFT, "en", fixed_candidates([more, more, more]), PROMPTS,
                             MethodParams(), DECODING, "k"))
    assert result.text == more


def test_extend_retries_whole_attempts_until_one_grows():
    too_short = [DRAFT] * 3
    good = [DRAFT + " Lambda mu nu xi omicron."] + [DRAFT] * 2
    model = fixed_candidates(too_short + good)
    result = run(extend("I.", DRAFT, "en", model, PROMPTS, MethodParams(extension_attempts=5), DECODING, "k"))
    assert result.attempts == 2 and result.text is not None
    assert len(model.calls) == 2 * 3 * 2  # 2 attempts x 3 micro-steps x (stage 1 + stage 2)


def test_a_failed_call_is_recorded_and_never_becomes_text():
    model = ScriptedModel(chat=lambda p, s: "x", cont=lambda p, prefix, s: "y", fail_on="Draft:")
    result = run(extend("I.", DRAFT, "en", model, PROMPTS, MethodParams(), DECODING, "k"))
    assert result.text is None
    assert result.reason.startswith("model_error") and "scripted failure" in result.reason


@pytest.mark.parametrize("text, expected, reasons", [
    ("", "Short.", ["accepted", "not_longer", "not_longer"]),  # anything grows an empty draft
    ("Only one sentence here.", None, ["not_longer"] * 3),     # one sentence: half of it is nothing
])
def test_degenerate_drafts_do_not_crash(text, expected, reasons):
    model = fixed_candidates(["Short."] * 3)
    result = run(extend_once("I.", text, "en", model, PROMPTS, MethodParams(), DECODING, "k"))
    assert result.text == expected and [s.reason for s in result.steps] == reasons


def test_the_last_candidate_a_rule_turned_down_is_kept_beside_the_result():
    draft = "First part of the draft.\n\nSecond part of the draft."
    tails = iter(["\n\nA continuation that stops mid-sentence,", "\n\nA proper ending that goes on and on. "
                  "It adds a lot more to say about everything. And then it ends here."])
    model = ScriptedModel(chat=lambda prompt, s: "First part of the draft.", cont=lambda prompt, prefix, s: next(tails))
    params = MethodParams(extension_attempts=1, extension_steps=2, min_growth=1.2)
    result = asyncio.run(extend("Write.", draft, "en", model, PROMPTS, params, Decoding(), "k"))
    assert [s.reason for s in result.steps] == ["no_final_punctuation", "accepted"]
    assert result.text is not None and result.failed == ("A continuation that stops mid-sentence,", "no_final_punctuation")
