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
def test_workers_progress_reaches_the_driver_and_nothing_else_they_print(capfd):
    """A real Ray with log_to_driver off, as connect() starts it: a task's progress line comes
    through the relay, the same task's other output stays in its log file."""
    import ray

    ray.init(address="local", num_cpus=1, log_to_driver=False, logging_level=logging.WARNING)
    try:
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
