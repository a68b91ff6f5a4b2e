import asyncio

from longform.extension import extend_once
from longform.languages import zh_tokens
from longform.params import Decoding, MethodParams
from longform.prompts import load_prompts
from longform.quality import check_quality, meta_talk, missing_final_punctuation, repeated_ngram
from tests.scripted import ScriptedModel

TEN = "one two three four five six seven eight nine ten"


def test_english_repeated_10_gram_is_rejected_and_9_gram_is_not():
    assert repeated_ngram(f"{TEN}. And then {TEN}.", "en") == TEN[:-3] + "ten."
    assert repeated_ngram(f"{TEN} and {TEN} again.", "en") == TEN
    assert repeated_ngram(f"{TEN} and {TEN}!", "en") is None  # "ten!" differs from "ten"
    nine = "one two three four five six seven eight nine"
    assert repeated_ngram(f"{nine} x {nine} y.", "en") is None


def test_chinese_tokens_are_characters_and_ascii_runs():
    assert zh_tokens("我用GPU 4090训练") == ["我", "用", "GPU 4090", "训", "练"]


def test_chinese_repeated_13_token_gram():
    thirteen = "一二三四五六七八九十甲乙丙"
    assert repeated_ngram(f"{thirteen}，{thirteen}。", "zh") == thirteen
    assert repeated_ngram(f"{thirteen[:12]}，{thirteen[:12]}。", "zh") is None


def test_final_punctuation_per_language():
    assert missing_final_punctuation("It ends well.", "en") is None
    assert missing_final_punctuation('He said "yes."\n', "en") is None
    assert missing_final_punctuation("It stops mid", "en") is not None
    assert missing_final_punctuation("It stops on a comma,", "en") is not None
    assert missing_final_punctuation("结束了。", "zh") is None
    assert missing_final_punctuation("（见上文）", "zh") is None
    assert missing_final_punctuation("没有结束，", "zh") is not None


def test_meta_talk_only_at_the_edges_and_only_in_english():
    body = "\n".join(f"Line {i} about bees." for i in range(10))
    assert meta_talk("Here is the revised version:\n" + body, "en") is not None
    assert meta_talk(body + "\nI hope this response helps.", "en") is not None
    middle = "\n".join([*body.split("\n")[:5], "A paragraph of history.", *body.split("\n")[5:]])
    assert meta_talk(middle, "en") is None
    assert meta_talk("修订版本：\n蜜蜂。", "zh") is None


def test_check_quality_follows_the_response_language():
    # an English answer in a run that also has Chinese must pass the English rules
    assert check_quality("Bees make honey.\n\nThey live in hives.") is None
    assert check_quality("蜜蜂酿蜜。\n\n它们住在蜂巢里。") is None
    assert check_quality("蜜蜂酿蜜，").rule == "no_final_punctuation"
    assert check_quality("").rule == "empty"
    assert check_quality("   ").rule == "empty"
    assert check_quality(f"{TEN} and {TEN} again.").rule == "repeated_ngram"
    assert check_quality("Revised version:\nBees make honey.").rule == "meta_talk"


def test_meta_talk_is_found_when_the_text_ends_in_blank_lines_or_spaces():
    body = "\n".join(f"Line {i} about bees." for i in range(10))
    for tail in ("\n\n\n", "   ", "\n \n\t\n  "):
        assert meta_talk(body + "\nI hope this revised version helps." + tail, "en") is not None
        assert check_quality(body + "\nI hope this revised version helps." + tail).rule == "meta_talk"
    assert meta_talk("\n\n\nHere is the revised text:\n" + body, "en") is not None


def test_a_response_in_an_unsupported_script_is_rejected_naming_it():
    rejection = check_quality("東京の歴史について書きました。")
    assert rejection.rule == "empty" and "Japanese" in rejection.detail


def test_extension_candidates_are_stripped_before_they_are_judged_and_kept():
    draft = "Alpha beta gamma delta epsilon zeta eta theta iota kappa."
    longer = draft + " Lambda mu nu xi omicron."
    queue = [longer + "\n\n  \n", "\n" + longer + " Pi rho.\nThis revised version is longer.\n\n"]
    model = ScriptedModel(chat=lambda p, s: "", cont=lambda p, prefix, s: queue.pop(0))
    params = MethodParams(extension_steps=2)
    result = asyncio.run(extend_once("I.", draft, "en", model, load_prompts(), params, Decoding(), "k"))
    assert [s.reason for s in result.steps] == ["accepted", "meta_talk"]
    assert result.text == longer  # kept without the trailing blank lines
