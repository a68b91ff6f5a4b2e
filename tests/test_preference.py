"""Preference pairs from a run's own answers (longform/preference.py), on hand-made records:
which answer is chosen, which is rejected, and why."""

from __future__ import annotations

from longform.preference import (balanced, build_pairs, extra_windows, index_answers, number_examples,
                                 number_only_pairs, paragraph_cuts, sampled_examples, shuffled_labels)
from training.sources import BadRecord, to_pair

import pytest

INSTRUCTION = "Write a long essay about tea."


def text(n: int, tag: str = "a") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def answer(id_: str, words: int, status: str = "kept", reason: str | None = None, tag: str | None = None,
           instruction: str = INSTRUCTION) -> dict:
    return {"id": id_, "instruction": instruction, "lang": "en", "text": text(words, tag or id_[-2:]),
            "status": status, "reason": reason}


def query(source_id: str, words: int, window: tuple[int, int], tag: str, instruction: str = INSTRUCTION) -> dict:
    return {"messages": [{"role": "user", "content": f"{instruction} About {words} words."},
                         {"role": "assistant", "content": text(words, tag)}],
            "meta": {"source_id": source_id, "lang": "en", "instruction": instruction,
                     "constraint": {"type": "about", "numbers": [words], "window": list(window)}}}


RECORDS = [
    answer("r1/d0", 40, "dropped_short", "length_biased_sampling", tag="d0"),  # far below
    answer("r1/d1", 120, tag="d1"),  # below the window, nearer
    answer("r2/x0", 200, tag="x0"),  # the collected one
    answer("r2/x1", 210, "rejected", "not_longer", tag="x1"),  # in the window, failed a rule
    answer("r3/x0", 400, tag="y0"),  # above the window
    answer("r3/x1", 200, tag="x0"),  # the same text as r2/x0: used once
    answer("other", 190, tag="o", instruction="Something else entirely."),
]


def test_the_nearest_answer_the_constraint_does_not_admit_is_rejected_first():
    answers = index_answers(RECORDS)
    pairs, unpaired, tally = build_pairs([query("r2/x0", 200, (160, 240), "x0")], answers, per_query=4)
    assert not unpaired
    got = [(p["meta"]["rejected"]["id"], p["meta"]["rejected"]["why"]) for p in pairs]
    # a rule-failing answer inside the window (distance 0), then 120 words (40 below), then 400
    # (160 above), then 40 (120 below): nearest the window first; the duplicate text never appears
    assert got == [("r2/x1", "failed_rule"), ("r1/d1", "under_window"), ("r1/d0", "under_window"),
                   ("r3/x0", "over_window")]
    assert {p["meta"]["chosen"]["id"] for p in pairs} == {"r2/x0"}
    assert all(p["meta"]["chosen"]["why"] == "collected" for p in pairs)
    assert pairs[0]["meta"]["rejected"]["fate"] == "rejected: not_longer"
    assert tally["rejected.under_window"] == 2 and tally["rejected.over_window"] == 1 and tally["pairs"] == 4
    first = pairs[0]
    assert first["prompt"] == [{"role": "user", "content": f"{INSTRUCTION} About 200 words."}]
    assert first["chosen"][0]["content"] == text(200, "x0") and first["rejected"][0]["content"] == text(210, "x1")


def test_a_text_a_quality_rule_turned_down_in_a_round_is_rejected_as_failing_it():
    """The round keeps no text on a rejected record (text None); the text a rule turned down on
    the way to a record is kept beside it (`failed`), and that is what the pair rejects."""
    import asyncio

    from longform.drafts import write_draft
    from longform.params import Decoding
    from longform.round import draft_record
    from tests.scripted import ScriptedModel

    cut_off, good = text(205, "f") + ",", text(200, "x0") + "."
    replies = iter([cut_off, good])
    draft = asyncio.run(write_draft(INSTRUCTION, ScriptedModel(chat=lambda p, s: next(replies)), Decoding(), 3, "k"))
    spec = type("Spec", (), {"round": 1})()
    record = draft_record(spec, {"id": "en-1", "instruction": INSTRUCTION, "lang": "en"}, 0, draft)
    assert record["text"] == good and record["failed"] == {"text": cut_off, "words": 205,
                                                           "rule": "no_final_punctuation"}
    turned_down = {**answer("en-1/d1", 10, "rejected", "attempts_exhausted"), "text": None,
                   "failed": {"text": text(30, "g") + ",", "words": 30, "rule": "no_final_punctuation"}}
    collected = query("en-1/d0", 200, (160, 240), "x0")
    collected["messages"][-1]["content"] = good
    pairs, _, tally = build_pairs([collected], index_answers([record, turned_down]), per_query=2)
    got = [(p["meta"]["rejected"]["id"], p["meta"]["rejected"]["why"], p["meta"]["rejected"]["fate"]) for p in pairs]
    assert got == [("en-1/d0/failed", "failed_rule", "failed: no_final_punctuation"),
                   ("en-1/d1/failed", "under_window", "failed: no_final_punctuation")]
    assert pairs[0]["rejected"][0]["content"] == cut_off and pairs[0]["chosen"][0]["content"] == good
    assert pairs[0]["meta"]["chosen"]["id"] == "en-1/d0" and tally["rejected.failed_rule"] == 1


def test_one_pair_per_query_by_default_and_an_answer_of_another_instruction_is_never_used():
    pairs, _, _ = build_pairs([query("r2/x0", 200, (160, 240), "x0")], index_answers(RECORDS))
    assert len(pairs) == 1 and pairs[0]["meta"]["rejected"]["id"] == "r2/x1"
    assert all("o" not in p["rejected"][0]["content"].split()[0] for p in pairs)


def test_a_longer_answer_is_rejected_for_a_short_window():
    records = [answer("a", 100, tag="s"), answer("b", 300, tag="l")]
    pairs, _, tally = build_pairs([query("a", 100, (80, 120), "s")], index_answers(records))
    assert [(p["meta"]["rejected"]["id"], p["meta"]["rejected"]["why"]) for p in pairs] == [("b", "over_window")]
    assert tally == {"rejected.over_window": 1, "chosen.collected": 1, "pairs": 1}


def test_with_judge_scores_the_best_in_window_answer_is_chosen():
    records = [answer("a", 200, tag="a"), answer("b", 220, tag="b"), answer("c", 50, tag="c")]
    pairs, _, tally = build_pairs([query("a", 200, (160, 240), "a")], index_answers(records),
                                  judge={"a": 6.0, "b": 8.5})
    assert pairs[0]["meta"]["chosen"]["id"] == "b" and pairs[0]["meta"]["chosen"]["why"].startswith("judge 8.5")
    assert pairs[0]["meta"]["rejected"]["id"] == "c"  # the other in-window answer passed the rules: never rejected
    assert tally["chosen.judge"] == 1


def test_a_query_with_nothing_to_reject_is_counted_with_its_reason():
    records = [answer("a", 200, tag="a"), answer("b", 210, tag="b")]
    pairs, unpaired, tally = build_pairs([query("a", 200, (160, 240), "a")], index_answers(records))
    assert pairs == [] and tally["unpaired"] == 1
    assert unpaired[0]["query_id"] == "a" and "outside the window" in unpaired[0]["reason"]


def test_extra_windows_make_a_text_chosen_under_its_own_length_and_rejected_under_another():
    queries = [query("r2/x0", 200, (160, 240), "x0")]
    answers = index_answers(RECORDS)
    extra = extra_windows(queries, answers, per_instruction=4, min_words=60, max_words=600, seed=0)
    # passing answers of 60-600 words no window admits yet, shortest first: 120 words, then 400
    # (40 is under the bounds, 210 failed a rule and sits in the collected window, "other" is
    # another instruction's); each query built as collect builds one, around its answer
    assert [q["meta"]["source_id"] for q in extra] == ["r1/d1", "r3/x0"]
    for q in extra:
        meta = q["meta"]
        lo, hi = meta["constraint"]["window"]
        assert lo <= meta["words"] <= hi and not lo <= 200 <= hi
        assert q["messages"][0]["content"].startswith(INSTRUCTION) and q["messages"][1]["content"] == \
            next(r["text"] for r in RECORDS if r["id"] == meta["source_id"])
        assert all(str(n) in q["messages"][0]["content"] for n in meta["constraint"]["numbers"])
        assert meta["origin"] == "extra window"
    assert extra == extra_windows(queries, answers, 4, 60, 600, seed=0)  # seeded
    assert len(extra_windows(queries, answers, 1, 60, 600, seed=0)) == 1
    # no new window admits an answer another window was built around: each text is chosen under
    # its own window and can be rejected under every other
    words = [200, *(q["meta"]["words"] for q in extra)]
    for q in extra:
        lo, hi = q["meta"]["constraint"]["window"]
        assert sum(lo <= w <= hi for w in words) == 1
    pairs, _, _ = build_pairs(queries + extra, answers, per_query=4)
    sides = {(p["meta"]["chosen"]["id"], p["meta"]["rejected"]["id"]) for p in pairs}
    assert {("r1/d1", "r2/x0"), ("r2/x0", "r1/d1"), ("r3/x0", "r2/x0"), ("r2/x0", "r3/x0")} <= sides


def test_shuffled_labels_swap_about_half_and_keep_every_text():
    pairs, _, _ = build_pairs([query(f"q{i}", 200, (160, 240), f"x{i}", instruction=f"Topic {i}.") for i in range(40)],
                              index_answers([answer(f"q{i}", 100, tag=f"s{i}", instruction=f"Topic {i}.")
                                             for i in range(40)]))
    shuffled = shuffled_labels(pairs, seed=0)
    swapped = sum(bool(p["meta"].get("swapped")) for p in shuffled)
    assert 10 <= swapped <= 30
    assert shuffled != pairs and shuffled == shuffled_labels(pairs, seed=0)
    for before, after in zip(pairs, shuffled):
        assert {before["chosen"][0]["content"], before["rejected"][0]["content"]} == \
               {after["chosen"][0]["content"], after["rejected"][0]["content"]}


# ---------------------------------------------------------------- reading pairs people already have

def test_preference_records_in_the_shapes_trl_and_llama_factory_write():
    user, good, bad = {"role": "user", "content": "Q"}, {"role": "assistant", "content": "long"}, \
        {"role": "assistant", "content": "short"}
    expected = {"prompt": [user], "chosen": [good], "rejected": [bad]}
    assert to_pair({"prompt": [user], "chosen": [good], "rejected": [bad]}) == expected
    assert to_pair({"prompt": "Q", "chosen": "long", "rejected": "short"}) == expected
    assert to_pair({"chosen": [user, good], "rejected": [user, bad]}) == expected  # implicit prompt
    assert to_pair({"instruction": "Q", "input": "", "chosen": "long", "rejected": "short"}) == expected


@pytest.mark.parametrize("record, reason", [
    ({"prompt": "Q", "chosen": "a"}, "needs `chosen` and `rejected`"),
    ({"prompt": "Q", "chosen": "same", "rejected": "same"}, "the same text"),
    ({"prompt": "Q", "chosen": "", "rejected": "b"}, "`chosen` must be one assistant answer"),
    ({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}, "end in a user turn"),
    ({"prompt": "Q", "chosen": [{"role": "robot", "content": "a"}], "rejected": "b"}, "unknown role"),
    ("not an object", "must be an object"),
])
def test_a_bad_preference_record_says_why(record, reason):
    with pytest.raises(BadRecord, match=reason):
        to_pair(record)


def pair_rejecting(i: int, why: str) -> dict:
    return {"id": f"q{i}/pair-0", "meta": {"rejected": {"why": why}}}


def test_balanced_pairs_reject_as_many_too_short_as_too_long_answers_and_keep_rule_failures():
    pairs = ([pair_rejecting(i, "under_window") for i in range(9)] + [pair_rejecting(i, "over_window") for i in range(9, 12)]
             + [pair_rejecting(i, "failed_rule") for i in range(12, 14)])
    kept, dropped = balanced(pairs, seed=0)
    whys = [p["meta"]["rejected"]["why"] for p in kept]
    assert whys.count("under_window") == whys.count("over_window") == 3 and whys.count("failed_rule") == 2
    assert len(dropped) == 6 and all(p["reason"].startswith("balance") for p in dropped)
    assert [p["id"] for p in kept] == [p["id"] for p in pairs if p["id"] in {k["id"] for k in kept}]  # order kept
    assert [p["id"] for p in balanced(pairs, seed=0)[0]] == [p["id"] for p in kept]  # seeded
    assert [p["id"] for p in balanced(pairs, seed=1)[0]] != [p["id"] for p in kept]


def test_balancing_with_one_direction_missing_keeps_only_the_rule_failures():
    pairs = [pair_rejecting(i, "under_window") for i in range(4)] + [pair_rejecting(9, "failed_rule")]
    kept, dropped = balanced(pairs, seed=0)
    assert [p["id"] for p in kept] == ["q9/pair-0"] and len(dropped) == 4


def test_the_preference_stage_balances_its_pairs_when_asked(tmp_path):
    """stages/preference.py on a run folder: 6 queries whose rejected answer is shorter, 2 whose
    is longer; with dpo.balance 2 + 2 pairs are trained on and the 4 left out are listed."""
    from types import SimpleNamespace

    from cluster.layout import RunLayout
    from cluster.settings import load_settings
    from cluster.storage import Storage
    from runtime.context import RunContext
    from stages.preference import FOLDER, PreferenceStage

    settings = load_settings(None, ["model.base=x", f"storage.root={tmp_path}", "run.rounds=1", "dpo.balance=true"])
    layout = RunLayout.create(Storage.open(str(tmp_path), settings.storage), "run")
    queries, drafts = [], []
    for i in range(8):
        topic = f"Topic {i}."
        queries.append(query(f"q{i}", 200, (160, 240), f"c{i}", instruction=topic))
        drafts.append(answer(f"r1/q{i}", 100 if i < 6 else 400, tag=f"s{i}", instruction=topic))
    layout.store.write_jsonl("collect/data.jsonl", queries)
    layout.store.write_jsonl("round-1/drafts/shard-00000.jsonl", drafts)
    stage = PreferenceStage(SimpleNamespace(ctx=RunContext(settings, layout, log=lambda m: None)))
    summary = stage.pairs({})
    pairs = list(layout.store.read_jsonl(f"{FOLDER}/pairs.jsonl"))
    whys = sorted(p["meta"]["rejected"]["why"] for p in pairs)
    assert whys == ["over_window", "over_window", "under_window", "under_window"] and summary["pairs"] == 4
    assert summary["tally"]["balance.dropped"] == 4
    # the tally counts what is trained on; the pairs left out are counted apart
    assert summary["tally"]["rejected.under_window"] == summary["tally"]["rejected.over_window"] == 2
    assert summary["tally"]["pairs"] == 4
    left_out = [u for u in layout.store.read_jsonl(f"{FOLDER}/unpaired.jsonl") if u["reason"].startswith("balance")]
    assert len(left_out) == 4


def test_the_preference_stage_adds_extra_windows_when_asked(tmp_path):
    """stages/preference.py with dpo.extra_windows: 1 on a run folder of 3 instructions, each
    with a collected 200-word answer and a 100-word draft: each draft gets a window of its own
    (the draft chosen, the collected answer rejected there), and the summary counts them."""
    from types import SimpleNamespace

    from cluster.layout import RunLayout
    from cluster.settings import load_settings
    from cluster.storage import Storage
    from runtime.context import RunContext
    from stages.preference import FOLDER, PreferenceStage

    def run(extra: int) -> tuple[dict, list[dict]]:
        settings = load_settings(None, ["model.base=x", f"storage.root={tmp_path}", "run.rounds=1", "collect.min_words=60",
                                        f"dpo.extra_windows={extra}"])
        layout = RunLayout.create(Storage.open(str(tmp_path), settings.storage), f"run{extra}")
        queries, drafts, extended = [], [], []
        for i in range(3):
            topic = f"Topic {i}."
            queries.append(query(f"q{i}/x0", 200, (160, 240), f"c{i}", instruction=topic))
            drafts.append(answer(f"q{i}/d0", 100, tag=f"s{i}", instruction=topic))
            extended.append(answer(f"q{i}/x0", 200, tag=f"c{i}", instruction=topic))  # the collected one
        layout.store.write_jsonl("collect/data.jsonl", queries)
        layout.store.write_jsonl("round-1/drafts/shard-00000.jsonl", drafts)
        layout.store.write_jsonl("round-1/extensions/shard-00000.jsonl", extended)
        summary = PreferenceStage(SimpleNamespace(ctx=RunContext(settings, layout, log=lambda m: None))).pairs({})
        return summary, list(layout.store.read_jsonl(f"{FOLDER}/pairs.jsonl"))

    summary, pairs = run(0)
    assert summary["extra_windows"] == 0 and summary["queries"] == summary["pairs"] == 3
    summary, pairs = run(1)
    assert summary["extra_windows"] == 3 and summary["queries"] == summary["pairs"] == 6
    sides = {(p["meta"]["chosen"]["id"], p["meta"]["rejected"]["id"]) for p in pairs}
    for i in range(3):  # each text chosen under its own window and rejected under the other's
        assert {(f"round-1/q{i}/x0", f"round-1/q{i}/d0"), (f"round-1/q{i}/d0", f"round-1/q{i}/x0")} <= sides
    assert summary["tally"]["rejected.under_window"] == summary["tally"]["rejected.over_window"] == 3


def test_the_judge_is_asked_only_where_it_has_a_choice_and_its_best_rated_answer_is_chosen(tmp_path):
    """dpo.judge on a run folder of two rounds. Query q0 has three in-window answers: the
    collected one and two drafts, one from each round, which both rounds name alike (every round
    names its records after the same seeds): the judge rates all three, and the best-rated
    draft is chosen. Query q1 has one in-window answer: no choice, nothing asked. Of query q2's
    three, the judge can parse one verdict: one rated answer is no comparison, so the collected
    one stays chosen, and the verdicts say why."""
    import json
    import re
    from types import SimpleNamespace

    from cluster.layout import RunLayout
    from cluster.settings import load_settings
    from cluster.storage import Storage
    from runtime.context import RunContext
    from stages.preference import FOLDER, PreferenceStage
    from tests.scripted import ScriptedModel

    rating = {"c0": 3, "g0": 4.5, "h0": 2, "c2": "?", "g2": 4.0, "h2": "?"}  # by the texts' tags

    def verdict(prompt: str, sampling: dict) -> str:
        score = rating[re.search(r"\b([a-z]\d)0\b", prompt).group(1)]  # a text's first word is <tag>0
        if score == "?":
            return "I liked it."
        return json.dumps({dim: score for dim in ("Relevance", "Accuracy", "Coherence", "Clarity",
                                                 "Breadth and Depth", "Reading Experience")})

    settings = load_settings(None, ["model.base=x", f"storage.root={tmp_path}", "run.rounds=2", "dpo.judge=true",
                                    "evaluation.judge_attempts=2"])
    layout = RunLayout.create(Storage.open(str(tmp_path), settings.storage), "run")
    queries, round1, round2 = [], [], []
    for i in range(3):
        topic = f"Topic {i}."
        queries.append(query(f"q{i}", 200, (160, 240), f"c{i}", instruction=topic))
        round1.append(answer(f"q{i}/d1", 100, tag=f"s{i}", instruction=topic))
        if i != 1:
            round1.append(answer(f"q{i}/d0", 190, tag=f"g{i}", instruction=topic))
            round2.append(answer(f"q{i}/d0", 230, tag=f"h{i}", instruction=topic))
    layout.store.write_jsonl("collect/data.jsonl", queries)
    layout.store.write_jsonl("round-1/drafts/shard-00000.jsonl", round1)
    layout.store.write_jsonl("round-2/drafts/shard-00000.jsonl", round2)
    judge = ScriptedModel(chat=verdict)
    stage = PreferenceStage(SimpleNamespace(ctx=RunContext(settings, layout, log=lambda m: None)))
    summary = stage.pairs({}, judge=judge)

    asked = [re.search(r"\b([a-z]\d)0\b", c["messages"][-1]["content"]).group(1) for c in judge.calls]
    assert sorted(set(asked)) == ["c0", "c2", "g0", "g2", "h0", "h2"]  # q1 had nothing to choose from
    assert len(asked) == 4 + 2 * 2  # the unparseable ones asked again (judge_attempts 2)
    chosen = {p["meta"]["query_id"]: p["meta"]["chosen"] for p in layout.store.read_jsonl(f"{FOLDER}/pairs.jsonl")}
    assert chosen["q0"]["id"] == "round-1/q0/d0" and chosen["q0"]["why"] == "judge 4.5, highest in the window"
    assert chosen["q1"] == {"id": "q1", "words": 200, "why": "collected"}
    assert chosen["q2"]["id"] == "q2" and chosen["q2"]["why"] == "collected"
    assert summary["judge"]["asked"] == 6 and summary["judge"]["scored"] == 4
    assert summary["judge"]["unparseable"] == 2 and summary["tally"]["chosen.judge"] == 1
    assert "scores" not in summary["judge"] and summary["judge"]["provenance"]["prompt"].startswith("built-in")
    verdicts = {v["id"]: v for v in layout.store.read_jsonl(f"{FOLDER}/verdicts.jsonl")}
    assert verdicts["q2"]["status"] == "unparseable" and verdicts["q2"]["reason"] == "no JSON object in the reply"
    assert verdicts["round-2/q0/d0"]["scores"]["Coherence"] == 2 and verdicts["round-1/q0/d0"]["scores"]["Clarity"] == 4.5


def test_a_judge_that_answers_no_call_stops_the_stage_unrecorded(tmp_path):
    """Every verdict a failed call: the job stops with the first reason, and the stage is not
    marked done, so a resumed job asks the judge again."""
    from types import SimpleNamespace

    from cluster.layout import FINAL, RunLayout
    from cluster.settings import load_settings
    from cluster.storage import Storage
    from runtime.context import RunContext
    from stages.preference import PreferenceStage
    from tests.scripted import ScriptedModel

    settings = load_settings(None, ["model.base=x", f"storage.root={tmp_path}", "run.rounds=1", "dpo.judge=true"])
    layout = RunLayout.create(Storage.open(str(tmp_path), settings.storage), "run")
    layout.store.write_jsonl("collect/data.jsonl", [query("q0", 200, (160, 240), "c0")])
    layout.store.write_jsonl("round-1/drafts/shard-00000.jsonl", [answer("q0/d1", 100, tag="s0"),
                                                                 answer("q0/d0", 190, tag="g0")])
    ctx = RunContext(settings, layout, log=lambda m: None)
    judge = ScriptedModel(fail_on=INSTRUCTION)  # every call (each names the instruction): HTTP 400
    with pytest.raises(SystemExit, match="the judge answered none of the preference stage's 2 calls"):
        ctx.stage(FINAL, "pairs", lambda: PreferenceStage(SimpleNamespace(ctx=ctx)).pairs({}, judge=judge))
    assert layout.stage_done(FINAL, "pairs") is None


def test_an_endpoint_judge_is_called_over_http_with_its_key_and_its_client_closed(tmp_path, monkeypatch):
    """dpo.judge with serving.judge.source endpoint: the stage opens its own client of that
    endpoint (an HTTP stand-in for an external judge, which answers "ok": no verdict parses),
    sends the key from the named variable, and keeps the collected answers."""
    from types import SimpleNamespace

    from cluster.layout import RunLayout
    from cluster.settings import load_settings
    from cluster.storage import Storage
    from runtime.context import RunContext
    from stages.preference import FOLDER, PreferenceStage
    from tests.test_client import FlakyServer

    from actors.client import LLMClient

    server = FlakyServer([])
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", "sk-judge")
    closed = []
    aclose = LLMClient.aclose

    async def counted_aclose(client):
        closed.append(client.base_url)
        await aclose(client)
    monkeypatch.setattr(LLMClient, "aclose", counted_aclose)
    try:
        settings = load_settings(None, [
            "model.base=x", f"storage.root={tmp_path}", "run.rounds=1", "dpo.judge=true",
            "evaluation.judge_attempts=1", "serving.judge.source=endpoint", f"serving.judge.base_url={server.url}",
            "serving.judge.model=judge-model", "serving.judge.api_key_env=JUDGE_KEY_FOR_TEST"])
        layout = RunLayout.create(Storage.open(str(tmp_path), settings.storage), "run")
        layout.store.write_jsonl("collect/data.jsonl", [query("q0", 200, (160, 240), "c0")])
        layout.store.write_jsonl("round-1/drafts/shard-00000.jsonl", [answer("r1/s", 100, tag="s0"),
                                                                     answer("r1/g", 190, tag="g0")])
        summary = PreferenceStage(SimpleNamespace(ctx=RunContext(settings, layout, log=lambda m: None))).pairs({})
    finally:
        server.close()
    assert [r["body"]["model"] for r in server.requests] == ["judge-model", "judge-model"]
    assert {r["auth"] for r in server.requests} == {"Bearer sk-judge"}
    assert summary["judge"]["asked"] == 2 and summary["judge"]["unparseable"] == 2
    assert summary["judge"]["provenance"]["model"] == "judge-model"
    (pair,) = layout.store.read_jsonl(f"{FOLDER}/pairs.jsonl")
    assert pair["meta"]["chosen"]["why"] == "collected" and pair["meta"]["rejected"]["id"] == "round-1/r1/s"
    assert "sk-judge" not in (tmp_path / "run" / FOLDER / "summary.json").read_text()
    assert closed == [server.url]  # the client the stage opened, closed by it


def test_the_summary_and_the_report_say_what_the_judge_did():
    from io import StringIO

    from reports.run import preference_section
    from reports.summary import print_final

    judge = {"asked": 5, "scored": 4, "unparseable": 1, "errors": 0, "file": "runs/r/final/preference/verdicts.jsonl",
             "provenance": {"model": "judge-model", "prompt": "built-in judge_longbench_write (en, zh)"}}
    pairs = {"pairs": 2, "queries": 3, "unpaired": 1, "judge": judge,
             "tally": {"rejected.under_window": 2, "chosen.judge": 1, "chosen.collected": 1},
             "files": {"pairs": "runs/r/final/preference/pairs.jsonl", "unpaired": "runs/r/final/preference/unpaired.jsonl"}}
    scored = {"length_score": 0.5, "in_window": 0.5, "mean_words": 200.0, "asked_vs_written": 0.1}
    preference = {"pairs": pairs, "training": {"metrics": {"steps": 3, "train_loss": 0.6}}, "model": "runs/r/final/dpo-model",
                  "length_probe": scored}
    report = "\n".join(preference_section(preference))
    assert ("The judge (`judge-model`, built-in judge_longbench_write (en, zh)) was asked about 5 in-window answers: "
            "4 scored, 1 unparseable, 0 failed calls; its best-rated answer is the chosen one of 1 queries "
            "(`runs/r/final/preference/verdicts.jsonl`).") in report
    final = {"collect": {"collected": 3, "responses": 5, "window": [100, 400], "tally": {}},
             "training": {"examples": 3, "metrics": {"steps": 4, "train_loss": 1.5}}, "model": "runs/r/final/model",
             "length_probe": {"base": scored, "final": scored, "words": [100, 400]}, "preference": preference}
    out = StringIO()
    print_final(final, out)
    assert ("preference pairs: 2 from 3 constrained queries (rejected: under_window 2; 1 without a pair; "
            "the judge rated 4 of 5 in-window answers and chose 1); DPO 3 steps, loss 0.6") in out.getvalue()
    assert "ignores the number" not in out.getvalue()  # a run scored before the ceiling was measured
    scored["fixed_length_ceiling"] = 0.864
    out = StringIO()
    print_final(final, out)
    assert "(a writer that ignores the number, one length a language, scores at most 0.864 on these probes)" \
        in out.getvalue()
    del pairs["judge"]  # without dpo.judge: neither says a word about a judge
    out = StringIO()
    print_final(final, out)
    assert "judge" not in out.getvalue() and "judge" not in "\n".join(preference_section(preference))
    assert "extra window" not in out.getvalue() and "extra window" not in "\n".join(preference_section(preference))
    pairs["extra_windows"] = 1  # with dpo.extra_windows: both say how many queries were added
    out = StringIO()
    print_final(final, out)
    assert "preference pairs: 2 from 3 constrained queries, 1 of them extra windows (rejected:" in out.getvalue()
    assert "from 3 constrained queries (1 of them extra windows, each around another answer of its instruction" in \
        "\n".join(preference_section(preference))


def test_number_only_pairs_differ_in_where_the_answer_stops():
    """bench/preference.py --pairs number-only: the diagnostic's pairs are told apart by the
    number asked and by nothing else."""
    essay = "\n\n".join(text(20, f"p{i}_") + "." for i in range(6))  # 120 words in six paragraphs
    q = query("q1", 120, (96, 144), "x")
    q["messages"][-1]["content"] = essay
    one_paragraph = query("q3", 120, (96, 144), "y")
    pairs = number_only_pairs([q, {**q, "meta": {**q["meta"], "source_id": "q2"}}, one_paragraph], 30, seed=0)
    assert len(pairs) == 2  # the same answer twice is used once; one without a paragraph break gives none
    short = pairs[0]["chosen"][0]["content"]
    assert essay.startswith(short) and 30 <= len(short.split()) <= 80
    assert [p["chosen"][0]["content"] for p in pairs] == [short, essay]
    assert [p["rejected"][0]["content"] for p in pairs] == [essay, short]
    for p in pairs:
        lo, hi = p["meta"]["constraint"]["window"]
        assert lo <= p["meta"]["chosen"]["words"] <= hi and not lo <= p["meta"]["rejected"]["words"] <= hi
        assert p["prompt"][0]["content"].startswith(INSTRUCTION)
    assert pairs[0]["prompt"] != pairs[1]["prompt"]
    assert number_only_pairs([q], 30, seed=0) == number_only_pairs([q], 30, seed=0)


def test_paragraph_cuts_end_after_each_paragraph_and_last_is_the_whole_text():
    essay = "one two three.\n\nfour five.\n\nsix."
    assert paragraph_cuts(essay + "\n") == [("one two three.", 3), ("one two three.\n\nfour five.", 5), (essay, 6)]


def test_number_examples_end_one_answer_at_several_lengths_each_under_a_number_that_admits_it():
    """bench/number_reading.py: every cut of at least min_words that passes the rules, under
    distinct constraint types, each admitting the cut; an answer seen twice is cut once."""
    essay = "\n\n".join(text(20, f"p{i}_") + "." for i in range(6))  # six paragraphs of 20 words
    q = query("q1", 120, (96, 144), "x")
    q["messages"][-1]["content"] = essay
    out = number_examples([q, {**q, "meta": {**q["meta"], "source_id": "q2"}}], 50, kinds_per_cut=2, seed=0)
    assert len(out) == 4 * 2  # cuts of 60, 80, 100 and 120 words (20 and 40 are under 50), two types each
    assert sorted({e["meta"]["words"] for e in out}) == [60, 80, 100, 120]
    for e in out:
        lo, hi = e["meta"]["constraint"]["window"]
        answer_ = e["messages"][-1]["content"]
        assert essay.startswith(answer_) and lo <= e["meta"]["words"] <= hi
        assert e["messages"][0]["content"].startswith(INSTRUCTION) and e["meta"]["origin"] == "paragraph cut"
    kinds = {}
    for e in out:
        kinds.setdefault(e["meta"]["words"], []).append(e["meta"]["constraint"]["type"])
    assert all(len(set(k)) == 2 for k in kinds.values())
    assert len({e["meta"]["source_id"] for e in out}) == len(out)
    assert number_examples([q], 50, 4, seed=1) == number_examples([q], 50, 4, seed=1)
    assert len(number_examples([q], 50, 9, seed=1)) == 4 * 4  # at most the four types


def test_sampled_examples_put_each_new_answer_under_a_number_that_admits_it():
    """bench/number_reading.py --samples: a sampled answer becomes one example under its own
    constraint; the collected answer, a repeat, a rule failure or a length outside the window
    does not."""
    q = query("q1", 120, (96, 144), "x")
    q["messages"][-1]["content"] = collected = text(120, "x") + "."
    samples = [(q["meta"], text(70, "a") + "."), (q["meta"], collected), (q["meta"], text(70, "a") + ".\n"),
               (q["meta"], text(20, "b") + "."), (q["meta"], text(300, "c") + "."), (q["meta"], text(90, "e")),
               (q["meta"], "same words again and again. " * 15), (q["meta"], text(150, "d") + ".")]
    out = sampled_examples([q], samples, 50, 200, seed=0)
    assert [e["meta"]["words"] for e in out] == [70, 150]
    assert [e["meta"]["source_id"] for e in out] == ["q1/sample-0", "q1/sample-7"]
    for e in out:
        lo, hi = e["meta"]["constraint"]["window"]
        assert lo <= e["meta"]["words"] <= hi and e["meta"]["origin"] == "sampled answer"
        assert e["messages"][0]["content"].startswith(INSTRUCTION)
        assert str(e["meta"]["constraint"]["numbers"][0]) in e["messages"][0]["content"]
    assert sampled_examples([q], samples, 50, 200, seed=0) == out


def test_the_number_reading_bench_writes_on_from_each_beginning_of_a_collected_answer():
    """bench/number_reading.py --continue-from: the prefixes it asks the model to write on from.
    "paragraphs": every cut of a distinct collected answer short of the whole, under its own
    query; "end": the whole answer; without it, each query as asked. A repeated answer is asked
    about once."""
    from bench.number_reading import prompts

    q1, q2 = query("q1", 3, (2, 4), "x"), query("q2", 3, (2, 4), "x")
    q1["messages"][-1]["content"] = q2["messages"][-1]["content"] = "One.\n\nTwo.\n\nThree."
    q3 = query("q3", 2, (1, 3), "y")
    q3["messages"][-1]["content"] = "Alone."
    asked = [q["messages"][0]["content"] for q in (q1, q2, q3)]
    assert [(m["source_id"], u, p) for m, u, p in prompts([q1, q2, q3], "paragraphs")] == [
        ("q1", asked[0], "One."), ("q1", asked[0], "One.\n\nTwo.")]
    assert [(m["source_id"], u, p) for m, u, p in prompts([q1, q2, q3], "end")] == [
        ("q1", asked[0], "One.\n\nTwo.\n\nThree."), ("q3", asked[2], "Alone.")]
    assert [(m["source_id"], u, p) for m, u, p in prompts([q1, q2, q3], None)] == [
        ("q1", asked[0], ""), ("q2", asked[1], ""), ("q3", asked[2], "")]
