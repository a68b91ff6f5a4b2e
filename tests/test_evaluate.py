"""jobs.evaluate: scoring a responses file of LongBench-Write with known lengths, the tables and
plots of every benchmark, the run report's benchmark section, and (on the served tiny model)
generation, a judge whose verdicts may not parse, and the loop's after-round hook."""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path

import pytest

from cluster.layout import RunLayout
from cluster.settings import load_settings
from cluster.storage import Storage
from jobs import evaluate
from jobs.report import write_report
from tests.scripted import ScriptedModel

pytest_plugins = ["tests.tiny_served"]

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
LBW_FILE = BENCHMARKS / "longbench_write.jsonl"
# the response to the i-th prompt has RATIOS[i % 5] x the required words; its S_l by hand:
# y = x: 100; y = 2x: 100 (1 - 1/3); y = x/2: 100 (1 - 1/2); y = 0: 0; y = 4x: 100 max(0, 1 - 3/3) = 0
RATIOS = [1, 2, 0.5, 0, 4]
EXPECTED = {1: 100.0, 2: 200 / 3, 0.5: 50.0, 0: 0.0, 4: 0.0}
BUCKETS = {"[0,500)": (0, 500), "[500,2k)": (500, 2000), "[2k,4k)": (2000, 4000), "[4k,20k]": (4000, 20001)}


def benchmark_rows(name: str) -> list[dict]:
    path = BENCHMARKS / name
    if not path.exists():
        pytest.skip(f"{path} is not here (the benchmarks are not shipped with the project)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list, extra_lines: list[str] = ()) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def score(repo, benchmark: str, responses: Path, out: Path, *extra: str) -> dict:
    assert evaluate.main(["score", "--config", str(repo / "configs/tiny.yaml"), "--benchmark", benchmark,
                          "--responses", str(responses), "--out", str(out), *extra]) == 0
    return json.loads((out / "scores.json").read_text())


def lbw_responses(rows: list[dict], ratios=RATIOS) -> list[dict]:
    return [{**r, "response": " ".join(["word"] * int(r["length"] * ratios[i % len(ratios)]))}
            for i, r in enumerate(rows)]


def test_score_gives_the_hand_computed_s_l_on_longbench_write(repo, tmp_path):
    rows = benchmark_rows("longbench_write.jsonl")
    responses = write_jsonl(tmp_path / "responses.jsonl", lbw_responses(rows),
                            extra_lines=['{"prompt": "Write 100 words.", "length": 100}'])  # no response: set aside
    scores = score(repo, "longbench-write", responses, tmp_path / "out")

    expected = [EXPECTED[RATIOS[i % 5]] for i in range(len(rows))]
    assert scores["prompts"] == scores["answered"] == 120 and scores["set_aside"] == 1
    assert scores["S_l"] == pytest.approx(statistics.fmean(expected), abs=0.01)
    for bucket, (low, high) in BUCKETS.items():
        inside = [e for e, r in zip(expected, rows) if low <= r["length"] < high]
        assert scores["S_l_buckets"][bucket] == {"n": len(inside), "score": pytest.approx(statistics.fmean(inside), abs=0.01)}
    assert scores["S_q"] is None and scores["S"] is None and scores["quality"] is None  # no judge configured

    out = tmp_path / "out"
    rejected = json.loads((out / "rejected.jsonl").read_text())
    assert rejected["line"] == 121 and rejected["reason"] == "missing field 'response'"
    table = (out / "scores.md").read_text()
    assert "| model | answered | S_l | [0,500) | [500,2k) | [2k,4k) | [4k,20k] | S_q | S | verdicts |" in table
    assert f"| responses | 120/120 | {scores['S_l']:g} |" in table and "no judge" in table
    assert (out / "lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "scored.jsonl").read_text().splitlines()) == 120


@pytest.mark.parametrize("benchmark, name, columns", [
    ("longwrite-ruler", "longwrite_ruler.jsonl", "| model | answered | S_l | words @ 1000 | words @ 2000 |"),
    ("longen", "LonGen.jsonl", "| model | answered | length score | about | range | above | below | 2-4k |"),
])
def test_score_writes_the_table_and_plot_of_every_benchmark(repo, tmp_path, benchmark, name, columns):
    rows = benchmark_rows(name)[::6]
    responses = [{**r, "response": "word " * 1500} for r in rows]
    responses[0] = {**responses[0], "response": None, "error": "HTTP 400: context too long"}
    scores = score(repo, benchmark, write_jsonl(tmp_path / "r.jsonl", responses), tmp_path / "out")
    assert scores["answered"] == len(rows) - 1 and scores["failed_responses"][0]["error"].startswith("HTTP 400")
    table = (tmp_path / "out/scores.md").read_text()
    assert columns in table and "1 responses failed to generate" in table
    assert (tmp_path / "out/lengths.png").stat().st_size > 0


def test_generation_reuses_checkpointed_responses_and_records_failed_calls(tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"Write {i}.", "length": 100} for i in range(4)]
    out = Storage.open(str(tmp_path / "out"), load_settings(None, ["model.base=x"]).storage)
    out.write_jsonl(evaluate.PARTIAL, [{**rows[0], "response": "old answer", "error": None},
                                       {**rows[1], "prompt": "A prompt since edited.", "response": "stale"}])
    model = ScriptedModel(chat=lambda prompt, sampling: f"answer to {prompt}", fail_on="Write 3.")
    settings = load_settings(None, ["model.base=x", "evaluation.decoding.max_tokens=8"])
    target = evaluate.Target("m", model, None, [])
    got = asyncio.run(evaluate.respond(settings, "longbench-write", rows, target, out))
    assert [r["response"] for r in got] == ["old answer", "answer to Write 1.", "answer to Write 2.", None]
    assert got[3]["error"].startswith("HTTP 400") and len(model.calls) == 3
    assert model.calls[0]["sampling"] == {"temperature": 0.5, "max_tokens": 8}  # neutral knobs left out
    assert not out.exists(evaluate.PARTIAL) and len(list(out.read_jsonl("responses.jsonl"))) == 4


def round_summary(k: int, evaluation: dict | None) -> dict:
    probe = {"mean_words": 100.0 * k + 50, "unique_sentence_ratio": 1.0}
    return {"round": k, "synthesis": {"tally": {"instructions": 4, "extensions.requested": 2, "extensions.passed": 1}},
            "training": {}, "not_trained": [], "handoff_seconds": 1.0, "probe_before": probe,
            "probe_after": {**probe, "mean_words": probe["mean_words"] + 100}, "evaluation": evaluation,
            "seconds": 3.0}


def test_the_run_report_shows_benchmark_scores_per_round(repo, tmp_path):
    rows = benchmark_rows("longbench_write.jsonl")
    layout = RunLayout.create(Storage.open(str(tmp_path / "runs"), load_settings(None, ["model.base=x"]).storage), "r")
    run = tmp_path / "runs/r"
    evaluation = {}
    for k, ratios in ((0, [0.5]), (1, [1])):
        folder = f"round-{k}/evaluation/longbench-write"
        scores = score(repo, "longbench-write", write_jsonl(tmp_path / f"r{k}.jsonl", lbw_responses(rows, ratios)),
                       run / folder)
        evaluation[k] = {"longbench-write": {"scores": evaluate.compact(scores), "out": folder}}
    summary = {"run": "r", "storage": str(run), "seconds": 10, "inputs": {"seeds": 4, "probes": 2, "set_aside": 0},
               "probe_base": {"mean_words": 50.0}, "evaluation_base": evaluation[0],
               "rounds": [round_summary(1, evaluation[1])]}

    report = Path(write_report(layout, summary)).read_text()
    assert "## The Generator on the probe set" in report and "## Round 1" in report
    assert "## Benchmarks" in report and "### LongBench-Write" in report
    assert "| base | 120/120 | 50 |" in report and "| round 1 | 120/120 | 100 |" in report
    assert "![longbench-write](report/benchmark-longbench-write.png)" in report
    for image in ("report/probe.png", "report/round-1-lengths.png", "report/benchmark-longbench-write.png"):
        assert f"({image})" in report and (run / image).read_bytes()[:4] == b"\x89PNG"
    for folder in ("round-0/evaluation/longbench-write", "round-1/evaluation/longbench-write"):
        assert f"({folder}/scores.md)" in report and (run / folder / "scores.md").exists()


# -- on the served tiny model ---------------------------------------------------------------------
@pytest.mark.cluster
def test_generate_and_judge_on_the_tiny_model_counts_unparseable_verdicts(repo, served_tiny, tmp_path):
    benchmark_rows("longbench_write.jsonl")
    out = tmp_path / "out"
    code = evaluate.main([
        "run", "--config", str(repo / "configs/tiny.yaml"), *served_tiny.set_args, "--benchmark", "longbench-write",
        "--data", str(LBW_FILE), "--limit", "3", "--endpoint", served_tiny.base_url, "--model", served_tiny.model,
        "--out", str(out), "--set", "evaluation.decoding.max_tokens=32", "--set", "evaluation.judge=true",
        "--set", "evaluation.judge_attempts=2", "--set", "evaluation.judge_decoding.max_tokens=48",
        "--set", "serving.judge.source=endpoint", "--set", f"serving.judge.base_url={served_tiny.base_url}",
        "--set", f"serving.judge.model={served_tiny.model}"])
    assert code == 0
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(responses) == 3 and all(isinstance(r["response"], str) for r in responses)
    verdicts = [json.loads(line) for line in (out / "judgements.jsonl").read_text().splitlines()]
    assert len(verdicts) == 3 and {v["status"] for v in verdicts} <= {"ok", "unparseable"}
    scores = json.loads((out / "scores.json").read_text())
    quality = scores["quality"]
    assert quality["judged"] + quality["unparseable"] + quality["judge_errors"] == 3
    assert [v["id"] for v in quality["not_scored"]] == [v["id"] for v in verdicts if v["status"] != "ok"]
    assert all(v["reason"] for v in verdicts if v["status"] == "unparseable")
    assert (scores["S_q"] is None) == (quality["judged"] == 0)
    assert (scores["S"] is None) == (scores["S_q"] is None)
    assert scores["decoding"]["max_tokens"] == 32 and "unparseable" in (out / "scores.md").read_text()


@pytest.mark.cluster
def test_the_loop_hook_evaluates_the_served_generator(repo, served_tiny, tmp_path):
    benchmark_rows("LonGen.jsonl")
    benchmarks = json.dumps([{"name": "longbench-write", "data": str(LBW_FILE), "limit": 2},
                             {"name": "longen", "data": str(BENCHMARKS / "LonGen.jsonl"), "limit": 2}])
    settings = load_settings(repo / "configs/tiny.yaml", [
        *served_tiny.set_args[1::2], "evaluation.after_each_round=true", f"evaluation.benchmarks={benchmarks}",
        "evaluation.decoding.max_tokens=24", f"storage.root={tmp_path}"])
    store = Storage.open(str(tmp_path / "run"), settings.storage)
    results = evaluate.after_round(settings, store, served_tiny.serving, 1)
    assert set(results) == {"longbench-write", "longen"}
    lbw, longen = results["longbench-write"], results["longen"]
    assert lbw["out"] == "round-1/evaluation/longbench-write" and lbw["scores"]["answered"] == 2
    assert lbw["scores"]["S_l"] is not None and lbw["scores"]["S_q"] is None
    assert longen["scores"]["length_score"] is not None and longen["scores"]["quality_score"] is None
    for folder in ("round-1/evaluation/longbench-write", "round-1/evaluation/longen"):
        assert {"responses.jsonl", "scores.json", "scores.md", "lengths.png", "scored.jsonl"} <= \
            set(store.list(folder))
