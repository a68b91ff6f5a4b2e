"""The final stage's measure (longform/length_probe.py): the probe set with length constraints,
scored with LonGen's length score, the share inside the window and the asked~written
correlation; and the settings that size it."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cluster.settings import SettingsError, load_settings
from longform.constraints import constraint_for
from longform.length_probe import constrained_probes, fixed_length_ceiling, rank_correlation, summarize
from longform.scores import longen_window


def probes(repo) -> list[dict]:
    return [json.loads(line) for line in (repo / "configs/seeds/tiny_probes.jsonl").read_text().splitlines()]


def test_every_probe_gets_a_constraint_stated_in_its_language_and_seeded(repo):
    rows = constrained_probes(probes(repo), (80, 320), seed=0)
    assert len(rows) == 30 and rows == constrained_probes(probes(repo), (80, 320), seed=0)
    assert rows != constrained_probes(probes(repo), (80, 320), seed=1)
    assert set(Counter(r["type"] for r in rows)) == {"about", "range", "above", "below"}
    for row, p in zip(rows, probes(repo)):
        assert row["query"].startswith(p["instruction"].rstrip()) and row["constraint"] in row["query"]
        assert row["language"] == p["lang"] and ("字" in row["constraint"]) == (p["lang"] == "zh")
        low, high = longen_window(row["type"], row["constraint"])  # LonGen reads back what was written
        assert 40 <= low and high <= 1.5 * 320 + 50


def test_fixed_length_ceiling_is_the_best_one_length_per_language():
    def row(n, lang="en"):
        unit = "words" if lang == "en" else "字"
        return {"id": f"{lang}{n}", "query": "q", "type": "about", "constraint": f"about {n} {unit}", "language": lang}
    # one window each: a length inside it scores 1 (the shortest such, 80 and 160, is named)
    one = fixed_length_ceiling([row(100), row(200, "zh")])
    assert one == {"length_score": 1.0, "by_language": {"en": {"words": 80, "length_score": 1.0},
                                                         "zh": {"words": 160, "length_score": 1.0}}}
    # 80-120 and 240-360 words: no one length is inside both, and none between scores more
    two = fixed_length_ceiling([row(100), row(300)])
    assert two["length_score"] == 0.5 and two["by_language"]["en"]["words"] == 80
    answers = {r: "w " * 80 for r in ("en100", "en300")}
    assert summarize([row(100), row(300)], answers)["length_score"] == two["length_score"]


def test_scores_inside_share_and_correlation():
    rows = [{"id": str(n), "query": "q", "type": "about", "constraint": f"about {n} words", "language": "en"}
            for n in (100, 200, 300)]
    exact = summarize(rows, {"0": None, "100": "w " * 100, "200": "w " * 200, "300": "w " * 300})
    assert exact["length_score"] == 1.0 and exact["in_window"] == 1.0 and exact["asked_vs_written"] == 1.0
    # same length whatever is asked: in the window once, no correlation to speak of
    flat = summarize(rows, {str(n): "w " * 200 for n in (100, 200, 300)})
    assert flat["in_window"] == round(1 / 3, 4) and flat["asked_vs_written"] is None
    assert flat["length_score"] == pytest.approx((0 + 1 + (2 * 200 / 240 - 1)) / 3, abs=1e-4)
    failed = summarize(rows, {"100": None, "200": "w " * 200, "300": None})
    assert failed["n"] == 1 and failed["failed"] == 2


def test_rank_correlation():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert rank_correlation([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    assert rank_correlation([1, 2, 2, 3], [1, 2, 2, 3]) == 1.0  # ties share a rank
    assert rank_correlation([1, 1], [1, 2]) is None


def test_a_constraint_for_the_tiny_range_admits_its_own_length():
    for words in range(60, 601, 7):
        for kind in ("about", "range", "above", "below"):
            assert constraint_for(kind, words).admits(words)


@pytest.mark.parametrize("override, message", [
    ("final.mix_fraction=0.3", "mix_with names no file"),
    ("final.probe_words=[300, 100]", "0 < lo <= hi"),
    ("final.mix_fraction=1", "less than 1"),
    ("final.generate_count=-1", "greater than or equal to 0"),
])
def test_final_settings_are_checked(override, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(None, ["model.base=x", override])
