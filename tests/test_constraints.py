"""Length constraints of the final data: windows, round numbers, labels, proportions, and the
collect job on a finished run's files: every branch of the rewrite (accepted; refused for the
wrong language, missing numbers, an empty reply, a failed call) with a scripted model, the job's
bad input, and queries rewritten by the tiny model, served."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from cluster.settings import load_settings
from jobs import collect
from stages.collect import build
from longform.constraints import TYPES, Constraint, appended_query, constraint_for, numbers_stated, pick_kind, window
from longform.sampling import seeded_rng
from tests.scripted import ScriptedModel


@pytest.mark.parametrize("kind, numbers, expected", [
    ("about", (2000,), (1600, 2400)), ("range", (2000, 3000), (2000, 3000)),
    ("above", (2000,), (2000, 3000)), ("below", (4000,), (2000, 4000)),
])
def test_windows_follow_the_method(kind, numbers, expected):
    assert window(kind, numbers) == expected


@pytest.mark.parametrize("words", [37, 150, 999, 1000, 1234, 2000, 2345, 3999, 5000, 7777, 8000])
@pytest.mark.parametrize("kind", list(TYPES))
def test_every_constraint_admits_its_response_with_round_numbers(kind, words):
    c = constraint_for(kind, words)
    assert c.kind == kind and c.admits(words)


@pytest.mark.parametrize("words, about, range_, above, below", [
    (37, (40,), (20, 40), (30,), (50,)),            # under 100 words: tens
    (150, (150,), (100, 200), (100,), (200,)),      # no window of hundreds admits 150: tens
    (999, (1000,), (700, 1100), (800,), (1200,)),   # hundreds under 1,000
    (1234, (1500,), (1000, 1500), (1000,), (1500,)),  # five hundreds to 2,000
    (7777, (8000,), (5000, 9000), (6000,), (10000,)),  # thousands above
])
def test_the_numbers_are_the_roundest_that_admit_the_response(words, about, range_, above, below):
    assert [constraint_for(kind, words).numbers for kind in ("about", "range", "above", "below")] == [
        about, range_, above, below]


def test_round_numbers_for_the_default_window():
    assert constraint_for("about", 2345).numbers == (2000,)
    assert constraint_for("below", 5000).numbers == (6000,)
    assert constraint_for("above", 5000).numbers == (4000,)
    assert constraint_for("range", 5000).numbers == (4000, 6000)


def test_chinese_labels_say_what_the_window_says():
    above, below = constraint_for("above", 5000), constraint_for("below", 5000)
    assert above.label("zh") == "大于4000字" and above.lo == 4000  # more than N: N is the floor
    assert below.label("zh") == "小于6000字" and below.hi == 6000  # fewer than N: N is the ceiling
    assert above.label("en") == "more than 4000 words" and below.label("en") == "fewer than 6000 words"
    assert constraint_for("range", 5000).label("zh") == "4000到6000字之间"


def test_numbers_must_be_stated_in_the_query():
    c = Constraint("range", 2000, 3000, (2000, 3000))
    assert numbers_stated("Write it in 2,000 to 3000 words.", c)
    assert not numbers_stated("Write it in 2000 words or more.", c)


def test_types_come_in_the_reference_proportions():
    counts = Counter(pick_kind(seeded_rng(0, "collect", i)) for i in range(4000))
    for kind, share in TYPES.items():
        assert abs(counts[kind] / 4000 - share) < 0.03, counts


def test_every_type_has_numbers_from_the_least_constrained_length_up():
    from longform.constraints import MIN_CONSTRAINED_WORDS, drawn_constraint

    for words in range(MIN_CONSTRAINED_WORDS, 2500):
        for kind in TYPES:
            assert constraint_for(kind, words).admits(words)
    with pytest.raises(ValueError, match="no about constraint fits 14 words"):
        constraint_for("about", 14)
    fits = {drawn_constraint(14, seeded_rng(0, "collect", i)) for i in range(50)}  # about is drawn 40% of the time
    assert {c.kind for c in fits} == {"range", "above", "below"} and all(c.admits(14) for c in fits)
    assert drawn_constraint(3, seeded_rng(0, "collect", 0)) is None


def test_build_sets_aside_an_answer_too_short_for_any_constraint(repo):
    settings = load_settings(repo / "configs/tiny.yaml", ["collect.min_words=1", "collect.max_words=1000",
                                                          "collect.rewrite=false"])
    kept, rejected, _ = asyncio.run(build([record(0, 3), record(1, 14), record(2, 300)], None, settings))
    assert rejected == [{"id": "r1/x0", "round": 1, "words": 3,
                         "reason": "no constraint type has round numbers for 3 words"}]
    assert [k["meta"]["source_id"] for k in kept] == ["r1/x1", "r1/x2"]


def record(i: int, words: int, lang: str = "en", round: int = 1) -> dict:
    text = ("Tea. " * words).strip() if lang == "en" else "茶" * (words - 1) + "。"
    return {"id": f"r{round}/x{i}", "round": round, "lang": lang, "instruction": f"Write about tea {i}.",
            "text": text, "status": "kept"}


def test_build_keeps_the_window_and_appends_the_constraint_when_rewriting_is_off(repo):
    settings = load_settings(repo / "configs/tiny.yaml", ["collect.min_words=100", "collect.max_words=1000",
                                                          "collect.rewrite=false"])
    records = [record(0, 50), record(1, 300), record(2, 500, "zh"), record(3, 2000)]
    kept, rejected, tally = asyncio.run(build(records, None, settings))
    assert [r["id"] for r in rejected] == ["r1/x0", "r1/x3"] and all("window" in r["reason"] for r in rejected)
    assert len(kept) == 2 and tally["appended"] == 2
    for example in kept:
        c = example["meta"]["constraint"]
        lo, hi = c["window"]
        assert lo <= example["meta"]["words"] <= hi
        assert numbers_stated(example["messages"][0]["content"], Constraint(c["type"], lo, hi, tuple(c["numbers"])))


def requirement_of(prompt: str) -> tuple[str, str]:
    """(language, the constraint's label) that a constrain_query prompt asks for."""
    en = re.search(r"asks for a length of (.*?)\. Keep", prompt)
    return ("en", en.group(1)) if en else ("zh", re.search(r"提出“(.*?)”的篇幅要求", prompt).group(1))


def scripted_rewriter(prompt: str, sampling: dict) -> str:
    """What a Generator might reply, per instruction: a good rewrite (tea 0, tea 5), one in the
    wrong language (tea 1), one without the numbers (tea 2), nothing (tea 3); tea 4 fails."""
    lang, requirement = requirement_of(prompt)
    which = re.search(r"tea (\d)", prompt).group(1)
    if which in "05":
        return f"Write about tea in {requirement}." if lang == "en" else f"写一篇关于茶的文章，{requirement}。"
    if which == "1":
        return f"写一篇关于茶的文章，{requirement}。"
    if which == "2":
        return "Write a long piece about tea."
    return "  \n"


def test_build_uses_a_rewrite_only_when_it_states_the_numbers_in_the_querys_language(repo):
    settings = load_settings(repo / "configs/tiny.yaml", ["collect.min_words=100", "collect.max_words=1000",
                                                          "collect.decoding.max_tokens=77"])
    records = [record(0, 300), record(1, 400), record(2, 500), record(3, 600), record(4, 700), record(5, 800, "zh")]
    model = ScriptedModel(chat=scripted_rewriter, fail_on="tea 4")
    kept, rejected, tally = asyncio.run(build(records, model, settings))
    assert rejected == [] and len(model.calls) == 6
    assert all(call["sampling"]["max_tokens"] == 77 for call in model.calls)  # collect.decoding
    by_id = {e["meta"]["source_id"]: e for e in kept}
    reasons = {i: by_id[f"r1/x{i}"]["meta"]["fallback_reason"] for i in range(6)}
    assert reasons[0] is None and reasons[5] is None
    assert reasons[1] == "rewrite is not in en"
    assert reasons[2] == "rewrite does not state the constraint's numbers"
    assert reasons[3] == "empty rewrite"
    assert reasons[4] == "call_failed: HTTP 400: scripted failure"
    assert tally["rewritten"] == 2 and tally["appended"] == 4
    assert {k: v for k, v in tally.items() if k.startswith("appended.")} == {
        "appended.rewrite is not in en": 1, "appended.rewrite does not state the constraint's numbers": 1,
        "appended.empty rewrite": 1, "appended.call_failed": 1}
    for i, example in ((i, by_id[f"r1/x{i}"]) for i in range(6)):
        meta, query = example["meta"], example["messages"][0]["content"]
        c = Constraint(meta["constraint"]["type"], *meta["constraint"]["window"], tuple(meta["constraint"]["numbers"]))
        assert c.admits(meta["words"]) and numbers_stated(query, c)
        assert meta["rewritten"] == (meta["fallback_reason"] is None)
        if meta["rewritten"]:  # the Generator's words, as they came
            lang = meta["lang"]
            label = c.label(lang)
            assert query == (f"Write about tea in {label}." if lang == "en" else f"写一篇关于茶的文章，{label}。")
        else:  # the constraint appended as a sentence
            assert query == appended_query(meta["instruction"], c, meta["lang"])
    assert by_id["r1/x5"]["meta"]["lang"] == "zh" and "字" in by_id["r1/x5"]["messages"][0]["content"]


def finished_run(root, rows) -> None:
    (root / "done/round-1/extensions").mkdir(parents=True)
    (root / "done/round-1/extensions/shard-00000.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")


def collect_main(repo, root, *argv: str) -> int:
    try:
        return collect.main(["--config", str(repo / "configs/tiny.yaml"), "--storage", str(root),
                             "--set", "run.rounds=1", "--set", "collect.min_words=100",
                             "--set", "collect.max_words=400", *argv])
    except SystemExit as stop:
        return stop.code


def test_collect_job_without_rewriting_writes_the_data(repo, tmp_path):
    root = tmp_path / "runs"
    finished_run(root, [record(0, 50), record(1, 200), record(2, 300, "zh")])
    assert collect_main(repo, root, "--run-name", "done", "--set", "collect.rewrite=false") == 0
    summary = json.loads((root / "done/collect/summary.json").read_text())
    assert summary["responses"] == 3 and summary["collected"] == 2 and summary["outside_window"] == 1
    assert summary["tally"]["appended.rewrite off"] == 2
    assert len((root / "done/collect/data.jsonl").read_text().splitlines()) == 2


def test_collect_job_with_a_misspelled_run_exits_2_naming_the_run_and_the_root_and_creates_nothing(
        repo, tmp_path, capsys):
    root = tmp_path / "runs"
    finished_run(root, [record(0, 200)])
    assert collect_main(repo, root, "--run-name", "dnoe") == 2
    err = capsys.readouterr().err
    assert f"error: no run 'dnoe' under the storage root {root}" in err and "runs there: done" in err
    assert sorted(p.name for p in root.iterdir()) == ["done"]
    assert not (root / "done/collect").exists()


def test_collect_job_with_nothing_to_collect_exits_2_and_writes_nothing(repo, tmp_path, capsys):
    root = tmp_path / "runs"
    finished_run(root, [{**record(0, 200), "status": "dropped_short"}])
    assert collect_main(repo, root, "--run-name", "done") == 2
    err = capsys.readouterr().err
    assert "error: nothing to collect: run 'done'" in err and "rounds 1-1" in err
    assert not (root / "done/collect").exists()


def test_collect_job_checks_the_model_it_would_serve_before_ray_starts(repo, tmp_path, capsys):
    root = tmp_path / "runs"
    finished_run(root, [record(0, 200)])
    assert collect_main(repo, root, "--run-name", "done", "--set", f"model.base={tmp_path / 'no-model'}") == 2
    assert f"error: model.base: no model at {tmp_path / 'no-model'} (config.json not found)" in capsys.readouterr().err
    assert collect_main(repo, root, "--run-name", "done", "--set", f"synthesis.prompt_dir={tmp_path}") == 2
    assert "error: synthesis.prompt_dir: " in capsys.readouterr().err
    import ray

    assert not ray.is_initialized() and not (root / "done/collect").exists()


@pytest.mark.cluster
def test_collect_job_rewrites_queries_with_the_served_generator(repo, served_tiny, tmp_path):
    run = tmp_path / "runs" / "done"
    rows = [record(i, 80 + 37 * i, "en" if i % 2 else "zh") for i in range(12)]
    (run / "round-1/extensions").mkdir(parents=True)
    (run / "round-1/extensions/shard-00000.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.collect", "--config", "configs/tiny.yaml", *served_tiny.set_args,
         "--storage", str(tmp_path / "runs"), "--run-name", "done", "--set", "run.rounds=1",
         "--set", "collect.min_words=100", "--set", "collect.max_words=400",
         "--set", f"collect.endpoint.base_url={served_tiny.base_url}", "--set", f"collect.endpoint.model={served_tiny.model}",
         "--set", f"collect.endpoint.api_key_env={served_tiny.key_var}"],
        cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run / "collect/summary.json").read_text())
    data = [json.loads(line) for line in (run / "collect/data.jsonl").read_text().splitlines()]
    alpaca = [json.loads(line) for line in (run / "collect/alpaca.jsonl").read_text().splitlines()]
    inside = [r for r in rows if 100 <= (80 + 37 * int(r["id"].split("x")[1])) <= 400]
    assert summary["collected"] == len(data) == len(alpaca) == len(inside)
    assert summary["tally"]["rewritten"] + summary["tally"]["appended"] == len(data)
    for example in data:
        meta, query = example["meta"], example["messages"][0]["content"]
        c = Constraint(meta["constraint"]["type"], *meta["constraint"]["window"], tuple(meta["constraint"]["numbers"]))
        assert c.admits(meta["words"])
        assert numbers_stated(query, c), query  # rewritten or appended, the query states it
        assert meta["rewritten"] or meta["fallback_reason"]
    assert "collected" in proc.stdout and "rewritten" in proc.stdout


def test_gather_takes_every_rounds_kept_extensions_and_the_final_stages_kept_answers(tmp_path):
    from cluster.layout import FINAL, RunLayout
    from cluster.settings import StorageSection
    from cluster.storage import Storage
    from jobs.collect import gather

    layout = RunLayout.create(Storage.open(str(tmp_path), StorageSection()), "run")
    dropped = {**record(9, 200), "status": "dropped_short"}
    layout.store.write_jsonl("round-1/extensions/shard-00000.jsonl", [record(0, 200), dropped])
    layout.store.write_jsonl("round-2/extensions/shard-00000.jsonl", [record(1, 300, round=2)])
    layout.store.write_jsonl("round-3/extensions/shard-00000.jsonl", [record(2, 300, round=3)])  # past run.rounds
    layout.store.write_jsonl(f"{FINAL}/drafts/shard-00000.jsonl", [{**record(3, 250), "round": FINAL}])
    layout.store.write_jsonl("round-1/drafts/shard-00000.jsonl", [record(4, 100)])  # drafts of rounds: not final data
    assert [r["id"] for r in gather(layout, rounds=2)] == ["r1/x0", "r2/x1", "r1/x3"]
