"""Length constraints of the final data: windows, round numbers, labels, proportions, and the
collect job on a finished run's files (queries rewritten by the tiny model, served)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter

import pytest

from cluster.settings import load_settings
from jobs.collect import build
from longform.constraints import TYPES, Constraint, constraint_for, numbers_stated, pick_kind, window
from longform.sampling import seeded_rng


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
    step = 100 if words < 1000 else 500 if words < 2000 else 1000
    assert all(n % step == 0 for n in c.numbers) or all(n % 10 == 0 for n in c.numbers)


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
         "--set", f"collect.endpoint.base_url={served_tiny.base_url}", "--set", f"collect.endpoint.model={served_tiny.model}"],
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
