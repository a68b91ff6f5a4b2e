"""The quiet terminal (cluster/logs.py): of the workers' output only the job's progress,
a link to the session's logs in a local run folder, and --verbose turning it all off."""

from __future__ import annotations

import argparse
import logging
import os
import time

import pytest

from cluster import logs
from cluster.cli import add_settings_args


@pytest.mark.cluster
def test_workers_progress_reaches_the_driver_and_nothing_else_they_print(capfd, monkeypatch):
    """A real Ray with log_to_driver off, as connect() starts it: a task's progress line comes
    through the relay, the same task's other output stays in its log file; and ray.init's
    notice that token authentication is on is not printed (without --verbose)."""
    import ray

    monkeypatch.delenv(logs.VERBOSE_ENV, raising=False)
    for name in logs.QUIET_DRIVER_ENV:  # put back as they were after the test
        monkeypatch.setenv(name, os.environ.get(name, "x"))
    # unset, as in a fresh shell: a new local Ray then turns token authentication on and says so
    # (an earlier ray.init in this process has set it)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    saved = {name: logging.getLogger(name).level for name in logs.QUIET_RAY_LOGGERS}
    logs.set_verbosity(False)
    ray.init(address="local", num_cpus=1, log_to_driver=False, logging_level=logging.WARNING)
    try:
        assert "Token authentication" not in capfd.readouterr().err
        logs.relay_progress(every_s=0.2)

        @ray.remote(num_cpus=0)
        def work() -> None:
            print("WARNING Triton is not installed", flush=True)
            logs.progress("[train generator] step 4/40 loss 1.2 lr 1e-4 ETA 30s")

        ray.get(work.remote())
        deadline = time.time() + 30
        out = ""
        while "[train generator]" not in out and time.time() < deadline:
            time.sleep(0.2)
            out += capfd.readouterr().out
        assert "[train generator] step 4/40 loss 1.2 lr 1e-4 ETA 30s" in out
        assert "Triton" not in out
    finally:
        ray.shutdown()
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def test_the_session_logs_are_linked_from_a_local_run_folder(tmp_path):
    session = tmp_path / "ray" / "session_2026-12-05_00-00-00_000000_1"
    (session / "logs").mkdir(parents=True)
    (session / "logs" / "worker-1.err").write_text("a warning\n")
    run = tmp_path / "runs" / "demo"
    for _ in range(2):  # a resumed run in the same session finds the link there
        line = logs.where_the_logs_are(str(session), str(run))
    assert (run / "logs" / session.name / "worker-1.err").read_text() == "a warning\n"
    assert str(run / "logs" / session.name) in line  # absolute: it is not under the working folder
    assert str(session / "logs") in logs.where_the_logs_are(str(session), None)


def test_verbose_is_a_flag_of_every_job(monkeypatch):
    monkeypatch.delenv(logs.VERBOSE_ENV, raising=False)
    for name in logs.QUIET_DRIVER_ENV:  # put back as they were after the test
        monkeypatch.setenv(name, os.environ.get(name, "x"))
    parser = argparse.ArgumentParser()
    add_settings_args(parser)
    assert parser.parse_args(["--config", "c.yaml"]).verbose is False
    logs.set_verbosity(parser.parse_args(["--config", "c.yaml", "--verbose"]).verbose)
    assert logs.verbose()
    logs.set_verbosity(False)
    assert not logs.verbose()


def test_loggers_that_libraries_set_to_info_in_the_driver_go_back_to_warning(monkeypatch):
    monkeypatch.delenv(logs.VERBOSE_ENV, raising=False)
    saved = {name: logging.getLogger(name).level for name in logs.DRIVER_LOGGERS}
    try:
        for name in logs.DRIVER_LOGGERS:  # as Serve and Serve LLM leave them on import
            logging.getLogger(name).setLevel(logging.INFO)
        logs.quiet_driver_loggers()
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert not logging.getLogger("ray.serve").isEnabledFor(logging.INFO)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


# -- the job's own lines: one progress helper, a line every few seconds at most ------------------

class Clock:
    """runtime.log's time.time, moved by hand."""

    def __init__(self, monkeypatch, now: float = 1000.0):
        import runtime.log

        self.now = now
        monkeypatch.setattr(runtime.log.time, "time", lambda: self.now)


def test_progress_prints_at_most_every_few_seconds_and_always_the_last(monkeypatch):
    from runtime.log import Progress

    clock, lines = Clock(monkeypatch), []
    # 2 of 6 shards finished before (a resumed stage): they count in 2/6, not in the rate
    progress = Progress("shards", 6, lines.append, every_s=20, done=2, tokens=True)
    for seconds, name in ((5, "a"), (21, "b"), (30, "c"), (31, "d")):
        clock.now = 1000 + seconds
        progress.tick(tokens=1000, event=f"shard {name} done", records=f"{seconds} SFT examples so far")
    assert lines == [
        "shard b done (4/6 shards): 21 SFT examples so far | 95 tok/s | ETA 21s",  # 2 shards in 21 s, 2 to go
        "shard d done (6/6 shards): 31 SFT examples so far | 129 tok/s | ETA 0s",  # the last, 10 s later
    ]


def test_progress_counts_failures_and_steps_that_come_several_at_a_time(monkeypatch):
    from runtime.log import Progress

    clock, lines = Clock(monkeypatch), []
    progress = Progress("responses", 4, lines.append, every_s=10)
    clock.now += 2
    assert progress.tick(ok=False) is None  # too soon after the start, and not the last
    clock.now += 2
    progress.tick(n=3)
    assert lines == ["4/4 responses, 1 failed | 1.00/s | ETA 0s"]


def test_a_benchmarks_answers_print_one_line_and_checkpointed_ones_are_not_asked_again(monkeypatch):
    import asyncio

    from evaluation import generation
    from longform.params import Decoding
    from tests.scripted import ScriptedModel

    clock = Clock(monkeypatch)

    def answer(prompt: str, sampling: dict) -> str:
        clock.now += 1  # an answer takes a second: well under the 20 s between lines
        return "tea " * 5

    rows = [{"id": str(n), "prompt": f"Write {n} words about tea.", "length": n} for n in (100, 200, 300)]
    rows[0]["response"] = "from the checkpoint"
    model, lines = ScriptedModel(chat=answer, fail_on="300 words"), []
    out = asyncio.run(generation.generate(model, "longbench-write", rows, Decoding(), concurrency=2, log=lines.append))
    assert [r["response"] for r in out] == ["from the checkpoint", "tea " * 5, None]
    assert len(model.calls) == 2
    # one line, the last: the checkpointed answer counts in 3/3 but not in the rate (2 in 1 s)
    assert lines == ["3/3 responses, 1 failed | 2.00/s | ETA 0s"]


def test_a_fine_tune_prints_a_step_line_every_30_s_and_the_last_step(monkeypatch):
    from types import SimpleNamespace

    from training import worker

    clock, lines = Clock(monkeypatch), []
    monkeypatch.setattr(worker, "progress", lines.append)
    callback = worker.ReportToRay("generator r1", rank=0)
    state = SimpleNamespace(global_step=4, max_steps=10)  # resumed from the checkpoint of step 4
    callback.on_train_begin(None, state, None)
    for step, seconds in ((5, 10), (6, 31), (7, 40), (8, 50), (9, 60), (10, 61)):
        clock.now, state.global_step = 1000 + seconds, step
        callback.on_log(None, state, None, logs={"loss": 1 / step, "learning_rate": 1e-5})
    callback.on_log(None, state, None, logs={"train_loss": 0.3})  # the Trainer's closing log: no step line
    assert [line.split("] ", 1)[1] for line in lines] == [
        "[train generator r1] 6/10 steps: loss 0.1667 lr 1.00e-05 | 0.06/s | ETA 62s",
        "[train generator r1] 10/10 steps: loss 0.1000 lr 1.00e-05 | 0.10/s | ETA 0s",
    ]
    assert all(line.startswith("[") and line[9] == "]" for line in lines)  # [HH:MM:SS] like the driver's
    worker.ReportToRay("generator r1", rank=1).on_log(None, state, None, logs={"loss": 1.0})  # rank 1: silent
    assert len(lines) == 2


def test_rays_token_auth_notice_is_quiet_unless_verbose(monkeypatch):
    monkeypatch.delenv(logs.VERBOSE_ENV, raising=False)
    for name in logs.QUIET_DRIVER_ENV:  # put back as they were after the test
        monkeypatch.setenv(name, os.environ.get(name, "x"))
    (name,) = logs.QUIET_RAY_LOGGERS
    saved = logging.getLogger(name).level
    try:
        logs.set_verbosity(False)
        assert not logging.getLogger(name).isEnabledFor(logging.WARNING)
        logs.set_verbosity(True)
        assert logging.getLogger(name).isEnabledFor(logging.WARNING)
    finally:
        logging.getLogger(name).setLevel(saved)
