"""A quiet terminal: the job's progress and summary on stdout, the libraries' logs in files.

A run's processes write a great deal that is not for its user: vLLM's engines (Triton,
NUMA, "enforce eager" warnings), Serve's controller and replicas, Ray Train's workers
(DeepSpeed, torch), Ray's own start-up lines. Ray keeps every worker's stdout and stderr in
the session's log folder (<session>/logs/worker-*.out|err, serve/, ...) whatever happens; by
default the driver also prints all of it. Here:

* The driver does not print the workers' output (ray.init(log_to_driver=False)); the job's
  own progress from workers (the trainer's "[train generator r1] 40/120 steps: loss ...")
  reaches it through a small named actor (`progress` in the worker, `relay_progress` in the
  driver), and everything else stays in the files only.
* The driver's own libraries log at WARNING (Ray's start-up INFO lines, Serve's client, the
  root logger that Serve LLM sets to INFO, Ray Data's execution plans and no progress bars)
  and vLLM, imported by Serve LLM in the driver, at ERROR; so does the module of ray.init that
  says, at WARNING on every new local Ray, that token authentication is on (it stays on).
* Two kinds of Ray line still reach the terminal, because nothing short of changing what Ray
  does removes them: the raylet's "N PYTHON worker processes have been started ... Nx the
  maximum expected startup concurrency" (sent to the driver on the channel that also carries
  worker crashes; the threshold moves only with RAY_worker_maximum_startup_concurrency, which
  also changes how many workers Ray starts at once), and the driver's core worker's one
  "core_worker.cc ... has constructor arguments in the object store and max_restarts > 0" line
  when Ray Data creates its first actor pool (C++, printed to stderr at ERROR; only
  RAY_BACKEND_LOG_LEVEL above ERROR would hide it, and with it every C++ error of the processes
  the driver starts; Ray Data always passes its map transformer by reference, so only
  `max_restarts=0` on the pool would avoid it, and that gives up restarting a shard worker
  that dies, whose blocks Ray Data retries on the restarted actor).
* On an embedded Ray with a local run folder, <run>/logs/<session> points at the session's
  log folder; the line that says Ray is up says where the logs are (with --verbose too).

`--verbose` (cluster/cli.py, every job has it) prints everything, as before. The choice is kept
in the driver's environment (VERBOSE_ENV): connect() and the serving code read it there
without it being handed down, and a user may set it instead of the flag.
"""

from __future__ import annotations

import logging
import os

VERBOSE_ENV = "SELF_LENGTHEN_VERBOSE"
# The driver's environment, set before vLLM or Ray Data is imported unless the user set them:
# vLLM (imported by Serve LLM) at ERROR; Ray Data without progress bars, and at ERROR, or it
# prints its execution plans and says that the bars are off
QUIET_DRIVER_ENV = {"VLLM_LOGGING_LEVEL": "ERROR", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
                    "RAY_DATA_LOG_LEVEL": "ERROR"}


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


# Driver loggers of Ray quieted before ray.init (a level set on a child of `ray` stays when
# ray.init sets the level of `ray`): a new local Ray turns token authentication on and says so
# at WARNING each time ("Set RAY_AUTH_MODE=disabled to opt out")
QUIET_RAY_LOGGERS = {"ray._private.authentication.authentication_token_setup": logging.ERROR}


def set_verbosity(on: bool) -> None:
    """Called once the arguments are parsed, before Ray or vLLM is imported. Also turns Ray's
    auto-init off in the driver (read when `ray` is imported): every job connects explicitly, and
    a library's thread that calls Ray after the job's Ray has shut down, at exit, would otherwise
    start a new local Ray from that thread (four stray lines after the summary, and the start-up
    time of a cluster nobody uses)."""
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    if on:
        os.environ[VERBOSE_ENV] = "1"
        for name in QUIET_RAY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    os.environ.pop(VERBOSE_ENV, None)
    for name, value in QUIET_DRIVER_ENV.items():
        os.environ.setdefault(name, value)
    for name, level in QUIET_RAY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


# Driver loggers that a library sets to INFO when it is imported, after ray.init has set the
# level of `ray`: Serve's client ("Started Serve in namespace ...", "Deleting app ...") and the
# root logger, which Serve LLM gives a handler at INFO, so that every library's INFO line
# propagates to the terminal (httpx: one "HTTP Request: POST ..." per request)
DRIVER_LOGGERS = ("ray.serve", "")


def quiet_driver_loggers() -> None:
    """Once those libraries are imported: their driver loggers at WARNING (not with --verbose)."""
    if not verbose():
        for name in DRIVER_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def ray_log_level() -> int:
    """The level of the driver's `ray` loggers, for ray.init(logging_level=...)."""
    return logging.INFO if verbose() else logging.WARNING


RELAY = "self-lengthen-progress"  # the named actor that carries workers' progress lines to the driver


class ProgressRelay:
    """Holds the progress lines workers send until the driver takes them (a Ray actor, no CPU)."""

    def __init__(self):
        self.lines: list[str] = []

    def put(self, line: str) -> None:
        self.lines.append(line)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def relay_progress(every_s: float = 1.0) -> None:
    """Driver, once Ray is connected with log_to_driver off: start the relay actor and a thread
    that prints what workers send it. Only the job's own progress reaches the terminal this
    way; everything else a worker writes stays in the session's log files."""
    import atexit
    import threading

    import ray

    relay = ray.remote(num_cpus=0)(ProgressRelay).options(name=RELAY).remote()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set() and ray.is_initialized():
            try:
                lines = ray.get(relay.take.remote(), timeout=60)
            except Exception:  # noqa: BLE001 - the job is ending (Ray shut down, the actor gone)
                return
            for line in lines:
                print(line, flush=True)
            stop.wait(every_s)

    thread = threading.Thread(target=pump, name="progress-relay", daemon=True)
    thread.start()

    def finish() -> None:
        # before Ray's own exit handler (registered earlier, so run later) shuts it down: a call
        # from this thread after that would start a new Ray from a thread (Ray's auto-init)
        stop.set()
        thread.join(timeout=5)

    atexit.register(finish)


_relay_handle: list = []  # the relay actor as found by this worker process (looked up once)


def progress(line: str) -> None:
    """In a Ray worker (the trainer): one of the job's progress lines, printed by the driver.
    Printed here instead when there is no relay (--verbose: the driver prints workers' output)."""
    if not _relay_handle:
        import ray

        try:
            _relay_handle.append(ray.get_actor(RELAY) if ray.is_initialized() else None)
        except ValueError:
            _relay_handle.append(None)
    if _relay_handle[0] is None:
        print(line, flush=True)
    else:
        _relay_handle[0].put.remote(line)


def where_the_logs_are(session_dir: str, run_dir: str | None) -> str:
    """Where the engine and worker logs are, said in a few words. With a local run folder, a
    link <run>/logs/<session> to the session's log folder is made first (a resumed run gets
    one per Ray session); otherwise they are in the session's folder on each node."""
    logs = os.path.join(session_dir, "logs")
    if run_dir is None:
        return f"engine and worker logs in {logs} on each node"
    link = os.path.join(run_dir, "logs", os.path.basename(session_dir.rstrip("/")))
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not os.path.islink(link):
        os.symlink(logs, link)
    shown = os.path.relpath(link)
    return f"engine and worker logs in {link if shown.startswith('..') else shown}"
