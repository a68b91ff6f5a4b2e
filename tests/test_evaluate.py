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
from evaluation import generation, outputs
from evaluation.scoring import compact
from jobs import evaluate
from stages import benchmarks as benchmark_stage
from reports.run import write_report
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
    out.write_jsonl(generation.PARTIAL, [{**rows[0], "response": "old answer", "error": None},
                                       {**rows[1], "prompt": "A prompt since edited.", "response": "stale"}])
    model = ScriptedModel(chat=lambda prompt, sampling: f"answer to {prompt}", fail_on="Write 3.")
    settings = load_settings(None, ["model.base=x", "evaluation.decoding.max_tokens=8"])
    target = outputs.Target("m", model, None)
    got = asyncio.run(outputs.respond("longbench-write", rows, target, out, benchmark_stage.options(settings)))
    assert [r["response"] for r in got] == ["old answer", "answer to Write 1.", "answer to Write 2.", None]
    assert got[3]["error"].startswith("HTTP 400") and len(model.calls) == 3
    assert model.calls[0]["sampling"] == {"temperature": 0.5, "max_tokens": 8}  # neutral knobs left out
    assert not out.exists(generation.PARTIAL) and len(list(out.read_jsonl("responses.jsonl"))) == 4


def round_summary(k: int, evaluation: dict | None) -> dict:
    probe = {"mean_words": 100.0 * k + 50, "unique_sentence_ratio": 1.0}
    return {"round": k, "synthesis": {"tally": {"instructions": 4, "extensions.requested": 2, "extensions.passed": 1}},
            "training": {}, "not_trained": [], "handoff_seconds": 1.0, "probe_before": probe,
            "probe_after": {**probe, "mean_words": probe["mean_words"] + 100}, "evaluation": evaluation,
            "seconds": 3.0}


# required lengths across the four LongBench-Write buckets; built here, so that the report's
# content is tested without ../shared
LBW_ROWS = [{"prompt": f"Write {n} words about tea.", "length": n} for n in (100, 300, 800, 1500, 2500, 3000, 5000, 8000)]
LONGEN_ROWS = [{"query": "Write about tea.", "type": t, "constraint": c, "range": "2-4k", "language": "en"}
               for t, c in (("about", "about 2000 words"), ("range", "2000-4000 words"),
                            ("above", "more than 2000 words"), ("below", "less than 4000 words"))]


def test_the_run_report_shows_benchmark_scores_per_round(repo, tmp_path):
    layout = RunLayout.create(Storage.open(str(tmp_path / "runs"), load_settings(None, ["model.base=x"]).storage), "r")
    run = tmp_path / "runs/r"
    evaluation = {}
    for k, ratios, longen_words in ((0, [0.5], 1000), (1, [1], 3000)):
        evaluation[k] = {}
        for benchmark, rows in (("longbench-write", lbw_responses(LBW_ROWS, ratios)),
                                ("longen", [{**r, "response": "word " * longen_words} for r in LONGEN_ROWS])):
            folder = f"round-{k}/evaluation/{benchmark}"
            scores = score(repo, benchmark, write_jsonl(tmp_path / f"{benchmark}-{k}.jsonl", rows), run / folder)
            evaluation[k][benchmark] = {"scores": compact(scores), "out": folder}
    layout.store.write_jsonl("round-1/drafts/shard-00000.jsonl",
                             [{"words": 120, "text": "t"}, {"words": 0, "text": ""}])
    layout.store.write_jsonl("round-1/extensions/shard-00000.jsonl", [{"words": 300, "status": "kept"},
                                                                     {"words": 90, "status": "dropped_short"}])
    summary = {"run": "r", "storage": str(run), "seconds": 10,
               "inputs": {"seeds": 4, "probes": 2, "set_aside": 1, "set_aside_file": "rejected/inputs.jsonl"},
               "probe_base": {"mean_words": 50.0}, "evaluation_base": evaluation[0],
               "rounds": [round_summary(1, evaluation[1])]}

    report = Path(write_report(layout.store, summary)).read_text()
    assert "# Run `r`" in report and "total time 10 s" in report
    assert ("Inputs: 4 seed instructions, 2 probe instructions, 1 input lines set aside "
            "(see `rejected/inputs.jsonl`).") in report
    assert "## The Generator on the probe set" in report and "## Round 1" in report
    # probe: 150 -> 250 words; 1 of 2 extensions passed
    assert "| 1 | 150.0 | 250.0 | 1.67x | 1.0 | 0.5 |" in report
    assert "| instructions | 4 |  |  |" in report and "| extensions | 2 | 1 |" in report
    assert "Serving the new weights took 1.0 s." in report
    # LongBench-Write: half the words everywhere scores 50 in every bucket, all of them scores 100
    assert "## Benchmarks" in report and "### LongBench-Write" in report and "### LonGen" in report
    assert "| base | 8/8 | 50 | 50 | 50 | 50 | 50 | – | – | no judge |" in report
    assert "| round 1 | 8/8 | 100 | 100 | 100 | 100 | 100 | – | – | no judge |" in report
    # LonGen, 1000 words: about [1600, 2400] 2*1000/1600-1 = 0.25, range [2000, 4000] 0, above [2000, 3000] 0,
    # below [2000, 4000] 0; 3000 words: about 3 - 2*3000/2400 = 0.5, the others inside: 1
    assert "| base | 4/4 | 0.0625 | 0.25 | 0 | 0 | 0 | 0.0625 | – | no judge |" in report
    assert "| round 1 | 4/4 | 0.875 | 0.5 | 1 | 1 | 1 | 0.875 | – | no judge |" in report
    assert "![longbench-write](report/benchmark-longbench-write.png)" in report
    for image in ("report/probe.png", "report/round-1-lengths.png", "report/benchmark-longbench-write.png",
                  "report/benchmark-longen.png"):
        assert f"({image})" in report and (run / image).read_bytes()[:4] == b"\x89PNG"
    for folder in ("round-0/evaluation/longbench-write", "round-1/evaluation/longen"):
        assert f"({folder}/scores.md)" in report and (run / folder / "scores.md").exists()
    assert "## The final model" not in report


def test_the_run_report_shows_the_final_stage(tmp_path):
    layout = RunLayout.create(Storage.open(str(tmp_path / "runs"), load_settings(None, ["model.base=x"]).storage), "r")
    probe = {"base": {"length_score": 0.25, "in_window": 0.5, "mean_words": 120.0, "asked_vs_written": -0.2,
                      "fixed_length_ceiling": 0.86},
             "final": {"length_score": 0.75, "in_window": 0.5, "mean_words": 310.5, "asked_vs_written": 0.4,
                       "fixed_length_ceiling": 0.86},
             "words": [100, 400]}
    final = {"collect": {"collected": 3, "responses": 5, "window": [100, 400],
                         "tally": {"type.about": 2, "type.below": 1, "rewritten": 1, "appended": 2},
                         "files": {"data": "runs/r/collect/data.jsonl", "rejected": "runs/r/collect/rejected.jsonl"}},
             "training": {"examples": 3, "mixed": 0, "metrics": {"steps": 4, "train_loss": 1.5}},
             "model": "runs/r/final/model", "length_probe": probe}
    for label, words in (("base", 120), ("final", 310)):
        layout.store.write_jsonl(f"final/length-probe/{label}.jsonl", [
            {"id": "p0", "type": "about", "constraint": "about 300 words", "query": "q", "response": "w " * words},
            {"id": "p1", "type": "about", "constraint": "about 300 words", "query": "q", "response": None}])
    summary = {"run": "r", "storage": "runs/r", "rounds": [], "final": final}
    report = Path(write_report(layout.store, summary)).read_text()
    assert "## The final model" in report
    assert ("Data: 3 of 5 answers in the window 100-400 words, each query given a length constraint it meets "
            "(`runs/r/collect/data.jsonl`; set aside: `runs/r/collect/rejected.jsonl`).") in report
    assert "| about | 2 |" in report and "| range | 0 |" in report and "| below | 1 |" in report
    assert "Queries rewritten by the Generator: 1; constraint appended as a sentence: 2." in report
    assert ("Fine-tuning the base model: 3 examples (+0 mixed in), 4 steps, final loss 1.5. "
            "Weights: `runs/r/final/model`.") in report
    assert "(100-400 words asked" in report
    assert "| base | 0.25 | 0.5 | 120 | – | -0.2 |" in report and "| final | 0.75 | 0.5 | 310.5 | – | 0.4 |" in report
    assert "A writer that ignores the number, one length a language, scores at most 0.86 on these probes." in report
    assert "![asked vs written](report/final-lengths.png)" in report
    assert (tmp_path / "runs/r/report/final-lengths.png").read_bytes()[:4] == b"\x89PNG"


def test_report_job_of_a_run_without_a_summary_exits_2_naming_it(repo, tmp_path, capsys):
    from jobs import report

    with pytest.raises(SystemExit) as stop:
        report.main(["--config", str(repo / "configs/tiny.yaml"), "--storage", str(tmp_path), "--run-name", "nope"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "no summary.json for run 'nope'" in err and str(tmp_path) in err
    assert list(tmp_path.iterdir()) == []
    for text, message in (("{\"rounds\": [", "does not parse as JSON"), ("[]", "is not the loop's summary")):
        (tmp_path / "broken").mkdir(exist_ok=True)
        (tmp_path / "broken" / "summary.json").write_text(text)
        with pytest.raises(SystemExit) as stop:
            report.main(["--config", str(repo / "configs/tiny.yaml"), "--storage", str(tmp_path), "--run-name", "broken"])
        assert stop.value.code == 2
        assert f"error: {tmp_path / 'broken' / 'summary.json'} {message}" in capsys.readouterr().err


# -- bad input: clear errors, exit 2, nothing half done -----------------------------------------------
def main_code(*argv: str) -> int:
    try:
        return evaluate.main(list(argv))
    except SystemExit as stop:
        return stop.code


def test_a_longen_constraint_of_0_words_is_set_aside_and_the_rest_scored(repo, tmp_path):
    rows = [{**r, "response": "word " * 2000} for r in LONGEN_ROWS]
    rows.append({**LONGEN_ROWS[0], "constraint": "about 0 words", "response": "word " * 10})
    scores = score(repo, "longen", write_jsonl(tmp_path / "r.jsonl", rows), tmp_path / "out")
    assert scores["answered"] == 4 and scores["set_aside"] == 1
    rejected = json.loads((tmp_path / "out/rejected.jsonl").read_text())
    assert rejected["line"] == 5 and rejected["reason"] == "the constraint 'about 0 words' asks for 0 words"


def test_lengths_written_as_integral_floats_are_scored(repo, tmp_path):
    rows = [{"prompt": "Write.", "length": 300.0, "response": "word " * 300},
            {"prompt": "Write.", "length": 600.0, "response": "word " * 300}]
    scores = score(repo, "longbench-write", write_jsonl(tmp_path / "r.jsonl", rows), tmp_path / "out")
    assert scores["answered"] == 2 and scores["set_aside"] == 0 and scores["S_l"] == 75.0


def test_a_file_with_most_lines_unusable_stops_the_job_naming_the_file_and_the_lines(repo, tmp_path, capsys):
    good = lbw_responses(LBW_ROWS[:2])
    bad = ["{not json", json.dumps({"prompt": "Write."}), json.dumps({"prompt": "Write.", "length": 300.5}),
           *[json.dumps({"prompt": "Write.", "length": 100})] * 3]  # no response
    responses = write_jsonl(tmp_path / "r.jsonl", good, extra_lines=bad)
    out = tmp_path / "out"
    code = main_code("score", "--config", str(repo / "configs/tiny.yaml"), "--benchmark", "longbench-write",
                     "--responses", str(responses), "--out", str(out))
    assert code == 2
    err = capsys.readouterr().err
    assert f"error: {responses}: 6 of 8 lines set aside as longbench-write responses (2 usable)" in err
    assert "line 3: not a JSON line" in err and "line 4: missing field 'length'" in err
    assert not out.exists()  # nothing scored, nothing written


@pytest.mark.parametrize("argv, message", [
    (["score", "--responses", "{tmp}/missing.jsonl"], "longbench-write file: file not found: {tmp}/missing.jsonl"),
    (["score", "--responses", "{tmp}/empty.jsonl"], "{tmp}/empty.jsonl: no usable line"),
    (["score"], "score needs --responses"),
    (["generate"], "generate/run need --data"),
    (["generate", "--data", "{tmp}/empty.jsonl", "--round", "1", "--endpoint", "http://127.0.0.1:9/v1",
      "--model", "m"],
     "give --round or --endpoint, not both"),
    (["score", "--responses", "{tmp}/empty.jsonl", "--set", "evaluation.judge=true",
      "--set", "evaluation.judge_prompt={tmp}/judge.txt"], "evaluation.judge_prompt: file not found"),
    (["generate", "--data", "{tmp}/empty.jsonl", "--out", "S3://bucket/out"],
     "--out: S3://bucket/out: neither a local path nor an S3 URI"),
    (["score", "--responses", "{tmp}/empty.jsonl", "--limit", "0"], "argument --limit: at least 1, not 0"),
    (["generate", "--data", "{tmp}/empty.jsonl", "--endpoint", "http://127.0.0.1:9/v1", "--model", "1.5"],
     "{tmp}/empty.jsonl: no usable line"),  # the model name "1.5" is text, not YAML's number
])
def test_bad_input_exits_2_like_every_other_job(repo, tmp_path, capsys, argv, message):
    (tmp_path / "empty.jsonl").write_text("\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main_code(*argv[:1], "--config", str(repo / "configs/tiny.yaml"), "--benchmark", "longbench-write",
                     "--storage", str(tmp_path / "runs"), *argv[1:])
    assert code == 2
    assert "error: " + message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


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
        "--set", f"serving.judge.model={served_tiny.model}",
        # the pair answers only with its key, taken from the variable each endpoint names
        "--set", f"evaluation.endpoint.api_key_env={served_tiny.key_var}",
        "--set", f"serving.judge.api_key_env={served_tiny.key_var}"])
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
    benchmark_rows("longbench_write.jsonl")  # both files are read below: a missing one skips, named
    benchmarks = json.dumps([{"name": "longbench-write", "data": str(LBW_FILE), "limit": 2},
                             {"name": "longen", "data": str(BENCHMARKS / "LonGen.jsonl"), "limit": 2}])
    settings = load_settings(repo / "configs/tiny.yaml", [
        *served_tiny.set_args[1::2], "evaluation.after_each_round=true", f"evaluation.benchmarks={benchmarks}",
        "evaluation.decoding.max_tokens=24", f"storage.root={tmp_path}"])
    store = Storage.open(str(tmp_path / "run"), settings.storage)
    results = benchmark_stage.after_round(settings, store, served_tiny.serving, 1)
    assert set(results) == {"longbench-write", "longen"}
    lbw, longen = results["longbench-write"], results["longen"]
    assert lbw["out"] == "round-1/evaluation/longbench-write" and lbw["scores"]["answered"] == 2
    assert lbw["scores"]["S_l"] is not None and lbw["scores"]["S_q"] is None
    assert longen["scores"]["length_score"] is not None and longen["scores"]["quality_score"] is None
    for folder in ("round-1/evaluation/longbench-write", "round-1/evaluation/longen"):
        assert {"responses.jsonl", "scores.json", "scores.md", "lengths.png", "scored.jsonl"} <= \
            set(store.list(folder))
