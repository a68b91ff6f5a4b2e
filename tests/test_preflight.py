"""Inputs are checked before a job connects to Ray (runtime/preflight.py): a missing or empty
file stops it with exit 2 naming the file; S3 reads go through the storage retries; an
instruction is limited by the model's tokenizer against its context window."""

import ast
import json
import re
import shutil
import socket
from pathlib import Path

import pytest

from cluster.layout import RunLayout
from cluster.settings import load_settings
from cluster.storage import Storage, StorageUnavailable
from runtime import preflight

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
pytestmark = pytest.mark.usefixtures("tiny_model")  # settings() below name models/tiny: built when missing


def settings(tmp_path, *overrides):
    return load_settings(TINY, [f"model.base={REPO / 'models' / 'tiny'}", f"storage.root={tmp_path / 'runs'}",
                                *overrides])


def write(path: Path, *rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def exit_message(capsys, call) -> str:
    with pytest.raises(SystemExit) as stop:
        call()
    assert stop.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("which", ["synthesis.seeds", "probe.file"])
def test_missing_or_empty_instruction_files_exit_2_naming_the_file(tmp_path, capsys, which):
    missing = tmp_path / "missing.jsonl"
    err = exit_message(capsys, lambda: preflight.check_loop_inputs(settings(tmp_path, f"{which}={missing}")))
    assert f"error: {which}: file not found: {missing}" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    err = exit_message(capsys, lambda: preflight.check_loop_inputs(settings(tmp_path, f"{which}={empty}")))
    assert f"error: {which}: {empty} is empty" in err
    unusable = write(tmp_path / "bad.jsonl", {"prompt": "Write."}, ["Write."])
    err = exit_message(capsys, lambda: preflight.check_loop_inputs(settings(tmp_path, f"{which}={unusable}")))
    assert f"no usable instruction in {unusable}: all 2 lines set aside (line 1: missing field" in err


def test_a_missing_model_exits_2_naming_the_setting(tmp_path, capsys):
    err = exit_message(capsys, lambda: preflight.check_loop_inputs(
        settings(tmp_path, f"model.base={tmp_path / 'no-model'}")))
    assert f"error: model.base: no model at {tmp_path / 'no-model'} (config.json not found)" in err


def test_a_key_variable_that_is_not_set_exits_2_naming_the_setting(tmp_path, capsys, monkeypatch):
    var = "SELF_LENGTHEN_PREFLIGHT_TEST_KEY"
    monkeypatch.delenv(var, raising=False)
    keyed = settings(tmp_path, f"serving.api_key_env={var}")
    for check in (lambda: preflight.check_loop_inputs(keyed),
                  lambda: preflight.check_agentwrite_inputs(keyed, str(tmp_path / "unread.jsonl"))):
        err = exit_message(capsys, check)
        assert f"error: serving.api_key_env: the environment variable {var} is not set" in err
    monkeypatch.setenv(var, "sk-" + "x" * 20)
    assert preflight.check_loop_inputs(keyed)["seeds"].records  # set: the check passes
    assert "sk-xxxx" not in capsys.readouterr().err


def test_files_the_loop_reads_only_rounds_later_are_checked_before_it_starts(tmp_path, capsys):
    # the chat data the final SFT mixes in (read after the last round)
    missing = tmp_path / "general.jsonl"
    err = exit_message(capsys, lambda: preflight.check_loop_inputs(
        settings(tmp_path, f"final.mix_with={missing}", "final.mix_fraction=0.2")))
    assert "error: final.mix_with: " in err and str(missing) in err
    unusable = write(tmp_path / "general.jsonl", {"nope": 1})
    err = exit_message(capsys, lambda: preflight.check_loop_inputs(
        settings(tmp_path, f"final.mix_with={unusable}", "final.mix_fraction=0.2")))
    assert f"error: final.mix_with: no usable record in {unusable} (line 1: " in err
    # the judge's prompt, for a benchmark's judge after each round and for the preference stage's
    bench = write(tmp_path / "lbw.jsonl", *[{"prompt": f"Write {n} words about tea.", "length": n, "type": "x",
                                              "lang": "en"} for n in (300, 500, 800)])
    benchmarks = f"evaluation.benchmarks=[{{name: longbench-write, data: {bench}}}]"
    for judged in ([benchmarks, "evaluation.judge=true"], ["final.preference=dpo", "dpo.judge=true"]):
        err = exit_message(capsys, lambda: preflight.check_loop_inputs(
            settings(tmp_path, *judged, f"evaluation.judge_prompt={tmp_path / 'judge.txt'}")))
        assert f"error: evaluation.judge_prompt: file not found: {tmp_path / 'judge.txt'}" in err
    preflight.check_loop_inputs(settings(tmp_path, benchmarks))  # the benchmark file itself is usable
    # a benchmark file with more lines set aside than evaluation accepts when it reads it
    mostly_bad = tmp_path / "mostly-bad.jsonl"
    mostly_bad.write_text(Path(bench).read_text().splitlines()[0] + "\n{\n[]\n", encoding="utf-8")
    err = exit_message(capsys, lambda: preflight.check_loop_inputs(
        settings(tmp_path, f"evaluation.benchmarks=[{{name: longbench-write, data: {mostly_bad}}}]")))
    assert f"error: evaluation.benchmarks[longbench-write].data: {mostly_bad}: 2 of 3 lines set aside" in err


def test_which_generator_is_served_and_none_is_refused_before_ray_starts(tmp_path, capsys):
    from cluster.layout import EXPORT_MARKER
    from jobs import evaluate as evaluate_job
    from jobs import serve as serve_job

    s = settings(tmp_path)
    assert preflight.generator_to_serve(s, None) == (0, s.model.base)  # nothing exported yet: the base model
    export = tmp_path / "runs" / "demo" / "round-1" / "generator"
    export.mkdir(parents=True)
    (export / EXPORT_MARKER).write_text("{}")
    assert preflight.generator_to_serve(s, None) == (1, str(export))
    assert preflight.generator_to_serve(s, 0) == (0, s.model.base)
    later = tmp_path / "runs" / "demo" / f"round-{s.run.rounds + 1}" / "generator"  # a run taken further
    later.mkdir(parents=True)                                                     # than this run.rounds
    assert preflight.generator_to_serve(s, None) == (1, str(export))  # not exported yet
    (later / EXPORT_MARKER).write_text("{}")
    assert preflight.generator_to_serve(s, None) == (s.run.rounds + 1, str(later))
    assert preflight.generator_to_serve(s, 1) == (1, str(export))
    layout = RunLayout.create(Storage.open(str(tmp_path / "runs"), s.storage), "demo")
    assert layout.last_export("generator", up_to=s.run.rounds) == 1  # jobs.collect: the rounds it collects
    assert layout.last_export("extender") == 0
    shutil.rmtree(later.parent)  # the jobs below see round 1's export only
    base = ["--config", str(TINY), "--set", f"model.base={REPO / 'models' / 'tiny'}", "--storage", str(tmp_path / "runs")]
    for args, message in [
        (["--round", "7"], f"error: no exported Generator for round 7 under {tmp_path / 'runs' / 'demo'}"),
        (["--final"], f"error: no final model under {tmp_path / 'runs' / 'demo' / 'final'}"),
        (["--round", "0", "--set", f"model.base={tmp_path / 'none'}"], "error: model.base: no model at"),
        (["--port", "70000"], "serving.port: Input should be less than or equal to 65535"),
        (["--host", "localhost:8000"], "serving.host: an IP address or a host name, without a scheme or a port"),
        (["--host", "http://127.0.0.1"], "serving.host: an IP address or a host name"),
    ]:
        assert message in exit_message(capsys, lambda: serve_job.main([*base, *args]))
    bench = write(tmp_path / "lbw.jsonl", {"prompt": "Write 300 words about tea.", "length": 300, "type": "x",
                                            "lang": "en"})
    err = exit_message(capsys, lambda: evaluate_job.main(
        ["generate", *base, "--benchmark", "longbench-write", "--data", bench, "--round", "3"]))
    assert "error: no exported Generator for round 3" in err
    import ray

    assert not ray.is_initialized()


def test_a_storage_root_in_a_bucket_that_is_not_there_stops_before_the_cluster(s3_server, s3_bucket, tmp_path,
                                                                                capsys):
    from runtime.context import RunContext

    missing = settings(tmp_path, "storage.root=s3://no-such-bucket-here/runs")
    for check in (lambda: RunContext.open(missing, "serve"), lambda: preflight.check_loop_inputs(missing)):
        err = exit_message(capsys, check)
        assert "error: storage.root: the bucket 'no-such-bucket-here' of s3://no-such-bucket-here/runs does not exist" in err
    import ray

    assert not ray.is_initialized()
    preflight.check_storage_root(settings(tmp_path, f"storage.root=s3://{s3_bucket}/runs"))  # there: passes
    preflight.check_storage_root(settings(tmp_path))  # a local root: made when the run first writes


def test_a_bucket_is_not_a_file(tmp_path, capsys):
    s = settings(tmp_path, "synthesis.seeds=s3://seed-bucket")
    err = exit_message(capsys, lambda: preflight.read_input(s.synthesis.seeds, s, "synthesis.seeds"))
    assert "synthesis.seeds: s3://seed-bucket names a bucket, not a file" in err


def test_seeds_on_unreachable_s3_go_through_the_storage_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries would take ~10 s
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = settings(tmp_path, f"storage.endpoint_url=http://127.0.0.1:{port}", "storage.access_key_id=k",
                 "storage.secret_access_key=s", "storage.retry_timeout_s=0.3", "storage.retry_backoff_s=0.1",
                 "synthesis.seeds=s3://seed-bucket/seeds.jsonl")
    with pytest.raises(StorageUnavailable) as err:
        preflight.instruction_file(s.synthesis.seeds, s)
    assert "could not read s3://seed-bucket/seeds.jsonl within storage.retry_timeout_s=0.3s" in str(err.value)


def test_no_s3_credentials_is_one_error_line_naming_the_file_not_a_traceback(tmp_path, monkeypatch, capsys):
    from cluster.errors import run_job
    from jobs import self_lengthen

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with socket.socket() as sock:  # credentials are looked for before anything is sent
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["--config", str(TINY), "--set", f"model.base={REPO / 'models' / 'tiny'}", "--storage", str(tmp_path),
            "--set", f"storage.endpoint_url=http://127.0.0.1:{port}", "--set", "synthesis.seeds=s3://no-keys/seeds.jsonl"]
    with pytest.raises(SystemExit) as stop:
        run_job(lambda: self_lengthen.main(argv))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: no S3 credentials to read s3://no-keys/seeds.jsonl: set storage.access_key_id" in err
    assert "Traceback" not in err


def test_instructions_are_limited_in_tokens_against_the_context_window(tmp_path):
    # the tiny model's window is 2,048 tokens; with max_tokens null half of it is the answer's
    long = "Write a very detailed history of the bees, " * 150  # ~1,300 tokens, 6,450 characters
    seeds = write(tmp_path / "seeds.jsonl", {"id": "short", "instruction": "Write about bees."},
                  {"id": "long", "instruction": long})
    parsed = preflight.instruction_file(seeds, settings(tmp_path, f"synthesis.seeds={seeds}"))
    assert [r["id"] for r in parsed.records] == ["short"]
    (rejected,) = parsed.rejected
    assert rejected["line"] == 2
    tokens, limit = map(int, re.search(r"has (\d+) tokens, more than the (\d+) that fit", rejected["reason"]).groups())
    assert tokens > limit and 1000 < limit < 1024  # 2,048 - 1,024 - the chat template's tokens
    assert "(a window of 2048 tokens (serving.engine_kwargs.max_model_len) - 1024 (half the window for the " \
           "answer, synthesis.decoding.max_tokens being null) - " in rejected["reason"]
    # with room for 1,500 answer tokens, even a ~200-token instruction does not fit
    medium = "Write a very detailed history of the bees, " * 25
    seeds = write(tmp_path / "seeds.jsonl", {"id": "short", "instruction": "Write about bees."},
                  {"id": "medium", "instruction": medium})
    s = settings(tmp_path, f"synthesis.seeds={seeds}", "synthesis.decoding.max_tokens=1900")
    parsed = preflight.instruction_file(seeds, s)
    assert [r["id"] for r in parsed.records] == ["short"]
    assert "synthesis.decoding.max_tokens=1900" in parsed.rejected[0]["reason"]


def test_a_decoding_that_leaves_no_room_for_any_instruction_exits_2(tmp_path, capsys):
    err = exit_message(capsys, lambda: preflight.check_loop_inputs(
        settings(tmp_path, "probe.decoding.max_tokens=4096")))
    assert "error: probe.decoding.max_tokens: 4096 tokens for the answer" in err
    assert "in a window of 2048 tokens (serving.engine_kwargs.max_model_len)" in err


def test_the_context_window_falls_back_to_the_model_config(tmp_path):
    s = settings(tmp_path, "serving.engine_kwargs={}")
    local = preflight.model_dir(s.model.base, s, "model.base")
    assert preflight.context_window(s, local) == (2048, "max_position_embeddings in the model's config.json")


def called_name(call: ast.Call) -> str | None:
    """`f(...)` -> "f"; `RunContext.open(...)` -> "RunContext.open"."""
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f"{f.value.id}.{f.attr}"
    return None


@pytest.mark.parametrize("job, check, connect", [
    ("jobs/self_lengthen.py", "check_loop_inputs", "RunContext.open"),
    ("jobs/agentwrite.py", "check_agentwrite_inputs", "connect"),
])
def test_every_job_checks_its_inputs_before_it_connects(job, check, connect):
    """Read from the source (importing the loop loads DeepSpeed): in main(), the input check
    is called before the call that connects to Ray."""
    tree = ast.parse((REPO / job).read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = [called_name(n) for n in ast.walk(main) if isinstance(n, ast.Call)]
    assert check in calls and connect in calls
    lines = {name: min(n.lineno for n in ast.walk(main) if isinstance(n, ast.Call) and called_name(n) == name)
             for name in (check, connect)}
    assert lines[check] < lines[connect]


def test_agentwrite_prompts_and_plan_decoding_are_checked(tmp_path, capsys):
    s = settings(tmp_path, "agentwrite.plan_decoding.max_tokens=48")
    err = exit_message(capsys, lambda: preflight.check_agentwrite_inputs(s, str(tmp_path / "p.jsonl")))
    assert f"error: --prompts: file not found: {tmp_path / 'p.jsonl'}" in err
    # the schema's default plan length (2,048 tokens) leaves the tiny model's 2,048-token window
    # no room (configs/tiny.yaml sets 512)
    prompts = write(tmp_path / "p.jsonl", {"instruction": "Write about bees."})
    too_long = settings(tmp_path, "agentwrite.plan_decoding.max_tokens=2048")
    err = exit_message(capsys, lambda: preflight.check_agentwrite_inputs(too_long, prompts))
    assert "error: agentwrite.plan_decoding.max_tokens: 2048 tokens for the answer plus" in err
    assert len(preflight.check_agentwrite_inputs(s, prompts).records) == 1


def test_more_rounds_for_a_run_whose_final_stage_has_begun_exit_2_before_ray(tmp_path, capsys):
    run = tmp_path / "runs" / "demo"
    for marker in ("round-1/stages/probe.json", "round-2/stages/probe.json", "final/stages/generate.json"):
        (run / marker).parent.mkdir(parents=True, exist_ok=True)
        (run / marker).write_text("{}", encoding="utf-8")
    preflight.check_rounds_before_final(settings(tmp_path, "run.rounds=2"))  # the same run resumed: fine
    preflight.check_rounds_before_final(settings(tmp_path, "run.rounds=3", "run.name=other"))  # another run
    preflight.check_rounds_before_final(settings(tmp_path, "run.rounds=3", "final.enabled=false"))  # none now
    err = exit_message(capsys, lambda: preflight.check_rounds_before_final(settings(tmp_path, "run.rounds=3")))
    assert "run.rounds=3: run 'demo' has begun its final stage after round 2" in err
    assert f"remove {run / 'final'} and {run / 'collect'} first" in err
