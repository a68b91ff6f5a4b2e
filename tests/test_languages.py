"""Languages are data: a made-up entry added to longform/languages.py's table (Greek here, with
a script the table did not know) is counted, detected, judged, constrained, planned and
collected by every module without any other change; its prompt templates are the only other
thing it needs. Also: the modules hold no "en" / "zh" test of their own."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import shutil
from pathlib import Path

import pytest

from cluster.settings import load_settings
from stages.collect import build
from longform import languages
from longform.agentwrite import PlanStep, is_refusal, parse_plan, strip_plan_markers
from longform.constraints import appended_query, constraint_for
from longform.extension import split_sentences
from longform.instructions import parse_instructions
from longform.languages import ENGLISH, LATIN, Script
from longform.prompts import DEFAULT_DIR, load_prompts
from longform.quality import check_quality
from longform.self_instruct import clean_candidate, says_yes
from longform.words import count_words, detect_language, guess_script, label_contradiction, normalize_language_label
from tests.scripted import ScriptedModel

REPO = Path(__file__).resolve().parents[1]
GREEK_SCRIPT = Script("el", "Greek", "\u0370-\u03ff\u1f00-\u1fff")
GREEK = dataclasses.replace(
    ENGLISH, code="el", name="Greek", script=GREEK_SCRIPT, aliases=("greek",),
    final_marks=".;!…»\"'", meta_talk_words=("αναθεωρημένη",), sentence_break=r"(?<=[.;!…])\s+",
    yes="ναι", instruction_label=r"οδηγία\s*\d+\s*[:：]",
    constraint_labels={"about": "περίπου {n} λέξεις", "range": "από {lo} έως {hi} λέξεις",
                       "above": "πάνω από {n} λέξεις", "below": "κάτω από {n} λέξεις"},
    appended_constraint="{instruction} Η απάντηση πρέπει να έχει {requirement}.",
    plan_step="Παράγραφος {number} - Κύριο σημείο: {point} - Λέξεις: {words}",
    plan_point_marker=r"κύριο\s*σημείο", plan_count_marker=r"λέξεις", section_label=r"παράγραφος\s*\d+",
    refusal=r"λυπάμαι|δεν μπορώ",
)
BEES = "Οι μέλισσες ζουν σε μεγάλες αποικίες και φτιάχνουν μέλι από το νέκταρ των λουλουδιών."


@pytest.fixture
def greek(monkeypatch):
    monkeypatch.setitem(languages.TABLE, "el", GREEK)
    return GREEK


@pytest.fixture
def greek_prompts(tmp_path):
    """The templates are the one other thing a language needs (English wording will do here)."""
    for code in ("en", "zh"):
        shutil.copytree(DEFAULT_DIR / code, tmp_path / code)
    shutil.copytree(DEFAULT_DIR / "en", tmp_path / "el")
    return tmp_path


def test_without_the_entry_greek_is_an_unsupported_script():
    assert detect_language(BEES) is None and guess_script(BEES) == "other"
    assert normalize_language_label("el") is None
    assert check_quality(BEES).rule == "empty"


def test_words_detection_and_labels_read_the_table(greek):
    assert detect_language(BEES) == guess_script(BEES) == "el"
    assert count_words(BEES) == 14  # whitespace words, as for any script without counted characters
    assert [normalize_language_label(x) for x in ("el", "EL-gr", "Greek", "zh-CN", "en", "fr")] == \
        ["el", "el", "el", "zh", "en", None]
    assert label_contradiction(BEES, "el") is None
    assert "of its words are Greek" in label_contradiction("Bees make honey.", "el")
    assert "it reads as Greek" in label_contradiction(BEES, "en")
    # the languages that were there behave as before
    assert detect_language("Bees make honey.") == "en" and detect_language("蜜蜂酿蜜。") == "zh"
    assert detect_language("東京の歴史について長いエッセイを書いてください。") is None


def test_quality_rules_read_the_table(greek):
    assert check_quality(BEES) is None
    assert check_quality(BEES[:-1] + ",").rule == "no_final_punctuation"
    assert check_quality("Τι φτιάχνουν οι μέλισσες;") is None  # the Greek question mark closes a sentence
    assert check_quality("Η αναθεωρημένη εκδοχή:\n" + BEES).rule == "meta_talk"
    ten = "ένα δύο τρία τέσσερα πέντε έξι επτά οκτώ εννέα δέκα"
    assert check_quality(f"{ten} και {ten} ξανά.").rule == "repeated_ngram"
    assert "no English, Chinese or Greek text" in str(check_quality("1234 !!"))


def test_constraints_and_the_appended_sentence_read_the_table(greek):
    c = constraint_for("range", 5000)
    assert c.label("el") == "από 4000 έως 6000 λέξεις"
    assert appended_query("Γράψε για τις μέλισσες. ", c, "el") == \
        "Γράψε για τις μέλισσες. Η απάντηση πρέπει να έχει από 4000 έως 6000 λέξεις."


def test_instruction_files_accept_the_language_and_name_it(greek):
    parsed = parse_instructions("\n".join([
        '{"id": "a", "instruction": "Γράψε ένα μακρύ κείμενο για τις μέλισσες."}',
        '{"id": "b", "instruction": "Γράψε για το μέλι.", "lang": "Greek"}',
        '{"id": "c", "instruction": "Write about bees.", "lang": "el"}',
        '{"id": "d", "instruction": "東京の歴史について長いエッセイを書いてください。"}',
    ]).encode(), "g.jsonl", "g")
    assert [(r["id"], r["lang"]) for r in parsed.records] == [("a", "el"), ("b", "el")]
    reasons = [r["reason"] for r in parsed.rejected]
    assert "lang 'el' contradicts the text" in reasons[0]
    assert reasons[1] == "the instruction is written in Japanese; supported: English, Chinese and Greek"


def test_prompt_folders_follow_the_table(greek, greek_prompts):
    with pytest.raises(FileNotFoundError, match="el"):
        load_prompts()  # the entry without its templates
    book = load_prompts(greek_prompts)
    assert set(book.texts) == {"en", "zh", "el"}
    assert book.render("judge_long", "el", instruction=BEES).endswith(BEES)


def test_self_instruct_extension_and_agentwrite_read_the_table(greek):
    assert says_yes("Ναι, χρειάζεται.", "el") and not says_yes("Όχι.", "el")
    assert clean_candidate("Οδηγία 3: Γράψε για το μέλι.") == "Γράψε για το μέλι."
    assert split_sentences("Τι είναι; Είναι μέλι.") == ["Τι είναι;", "Είναι μέλι."]
    step = PlanStep(2, "Η κυψέλη", 450)
    assert step.line("el") == "Παράγραφος 2 - Κύριο σημείο: Η κυψέλη - Λέξεις: 450"
    plan = parse_plan("Σχέδιο\n" + PlanStep(1, "Οι μέλισσες", 1500).line("el") + "\n" + step.line("el"))
    assert [(s.number, s.point, s.words) for s in plan.steps] == [(1, "Οι μέλισσες", 1000), (2, "Η κυψέλη", 450)]
    assert strip_plan_markers(step.line("el") + "\nΠαράγραφος 2 - " + BEES) == BEES
    assert is_refusal("Λυπάμαι, αλλά δεν μπορώ.")


def test_collect_appends_or_accepts_a_rewrite_in_the_language(greek, greek_prompts):
    settings = load_settings(REPO / "configs/tiny.yaml", ["collect.min_words=100", "collect.max_words=1000",
                                                          f"synthesis.prompt_dir={greek_prompts}"])
    text = " ".join(["Μέλι."] * 300)
    records = [{"id": f"r1/g{i}", "round": 1, "lang": "el", "instruction": f"Γράψε για το μέλι {i}.",
                "text": text, "status": "kept"} for i in range(2)]

    def rewriter(prompt: str, sampling: dict) -> str:
        numbers = " ".join(word for word in prompt.split("Request:")[0].split() if word.isdigit())
        return f"Γράψε για το μέλι σε {numbers} λέξεις." if "μέλι 0" in prompt else f"Write about honey in {numbers} words."

    kept, _, tally = asyncio.run(build(records, ScriptedModel(chat=rewriter), settings))
    assert tally["rewritten"] == 1 and tally["appended.rewrite is not in el"] == 1
    appended = kept[1]["messages"][0]["content"]
    assert appended.startswith("Γράψε για το μέλι 1. Η απάντηση πρέπει να έχει ")


def test_two_languages_may_not_share_a_script(monkeypatch):
    monkeypatch.setitem(languages.TABLE, "fr", dataclasses.replace(ENGLISH, code="fr", name="French", script=LATIN))
    with pytest.raises(ValueError, match="share the script"):
        detect_language("Les abeilles font du miel.")


LANGUAGE_MODULES = ["longform/words.py", "longform/quality.py", "longform/constraints.py", "longform/instructions.py",
                    "longform/prompts.py", "longform/self_instruct.py", "longform/drafts.py", "longform/extension.py",
                    "longform/sft.py", "longform/agentwrite.py", "stages/collect.py", "jobs/collect.py"]


@pytest.mark.parametrize("path", LANGUAGE_MODULES)
def test_no_module_tests_for_a_language_code_itself(path):
    """Every "en" / "zh" lives in longform/languages.py; the modules only ask it."""
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    codes = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and node.value in languages.codes()]
    assert codes == [], f"{path} names a language code on lines {codes}"
