"""The quiet terminal (cluster/logs.py): only the job's progress among the workers' lines,
a link to the session's logs in a local run folder, and --verbose turning it all off."""

from __future__ import annotations

import argparse
import logging
import os

import pytest
from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

from cluster import logs
from cluster.cli import add_settings_args


@pytest.fixture()
def printed():
    """A stand-in for the handler Ray installs to print forwarded worker lines."""
    seen: list[str] = []
    saved = list(dispatcher.handlers)
    dispatcher.handlers = [("ray_print_logs", lambda data: seen.extend(data["lines"]))]
    yield seen
    dispatcher.handlers = saved


def test_only_progress_lines_of_workers_are_printed(printed):
    logs.print_only_progress()
    dispatcher.emit({"lines": ["WARNING 12-05 00:14:41 [cpu.py:95] Triton is not installed",
                               "[train generator] step 4/40 loss 1.2 lr 1e-4 ETA 30s",
                               "INFO: 127.0.0.1 - GET /v1/models 200",
                               "[00:14:41] [collect] 12 records"], "pid": 1, "is_err": True})
    dispatcher.emit({"lines": ["Enforce eager set, disabling CUDA graphs"], "pid": 2, "is_err": True})
    assert printed == ["[train generator] step 4/40 loss 1.2 lr 1e-4 ETA 30s", "[00:14:41] [collect] 12 records"]


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
