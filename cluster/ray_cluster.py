"""Connecting to Ray: an address (settings, --address, or RAY_ADDRESS, which `ray job submit`
sets) means a real cluster; otherwise an embedded local Ray is started, and stopped when the job
exits with none of its processes left behind. Either way the terminal stays quiet unless
--verbose: the workers' logs stay in files (cluster/logs.py)."""

from __future__ import annotations

import atexit
import logging
import os
import sys

from cluster import logs
from cluster.settings import Settings

log = logging.getLogger(__name__)

# Environment every Ray worker of the run gets. Models come from a folder or s3://, never from
# a hub: with HF_HUB_OFFLINE a wrong path fails at once instead of after network retries.
# On CPU, DeepSpeed must not look for CUDA; vLLM-CPU sizes its KV cache from
# VLLM_CPU_KVCACHE_SPACE (GiB).
WORKER_ENV = {"HF_HUB_OFFLINE": "1"}
CPU_WORKER_ENV = {"DS_ACCELERATOR": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}
# Ray Train on an embedded Ray (one machine, nothing to be preempted), read by each fine-tune's
# controller from the driver's environment: no preemption watcher (one process less a fine-tune,
# ~2 s of CPU), and the workers polled every 0.25 s instead of 2 s, so that a fine-tune's start,
# end and checkpoints are seen without waiting for the next poll. A variable already set wins.
EMBEDDED_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(WORKER_ENV) if settings.training.use_gpu else {**WORKER_ENV, **CPU_WORKER_ENV}
    for name in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def export_credentials(settings: Settings) -> None:
    """Before an embedded Ray starts: the S3 keys of the settings into this process's
    environment, which the local Ray and every worker it starts inherit. Serve LLM's engines
    read them there; a `runtime_env` would show them to every client of the dashboard. On a
    cluster the nodes have them from their own environment (on Kubernetes, the Secret)."""
    storage = settings.storage
    if storage.access_key_id and storage.secret_access_key:
        os.environ["AWS_ACCESS_KEY_ID"] = storage.access_key_id.get_secret_value()
        os.environ["AWS_SECRET_ACCESS_KEY"] = storage.secret_access_key.get_secret_value()


def embedded(settings: Settings) -> bool:
    return not (settings.ray.address or os.environ.get("RAY_ADDRESS"))


def connect(settings: Settings) -> str:
    """Start or join Ray; returns a line saying which, and where the workers' logs are."""
    import ray  # here, so that a job's --help does not load it

    if ray.is_initialized():
        return "Ray: already connected"
    address = settings.ray.address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": worker_env(settings)}
    if address:
        context = ray.init(address=address, runtime_env=runtime_env, log_to_driver=logs.verbose(),
                           logging_level=logs.ray_log_level())
        line, run_dir = f"Ray: joined the cluster at {address}", None
    else:
        # address="local": always a new instance, never a cluster some other process started
        export_credentials(settings)
        for name, value in EMBEDDED_TRAIN_ENV.items():
            os.environ.setdefault(name, value)
        context = ray.init(address="local", num_cpus=settings.ray.num_cpus, runtime_env=runtime_env,
                           log_to_driver=logs.verbose(), logging_level=logs.ray_log_level())
        atexit.unregister(stop_embedded)  # once, however often this process connects
        atexit.register(stop_embedded)  # runs before Ray's own handler: registered after it
        line, run_dir = f"Ray: embedded local cluster with {settings.ray.num_cpus} logical CPUs", local_run_dir(settings)
    where = logs.where_the_logs_are(context.address_info["session_dir"], run_dir)
    if logs.verbose():
        return f"{line}; {where}"
    logs.relay_progress()
    return f"{line}; {where} (--verbose prints them here)"


def embedded_workers() -> list:
    """The worker processes of the local Ray this process started: its raylet's descendants
    (Serve replicas, their engine processes, Ray Data and Ray Train actors)."""
    import psutil

    workers = []
    for child in psutil.Process().children():
        try:  # a process may end while it is looked at
            if child.name() == "raylet":
                workers += child.children(recursive=True)
        except psutil.Error:
            pass
    return workers


def stop_embedded(grace_s: float = 5.0) -> int:
    """At exit: stop the embedded Ray, then kill any of its workers still running `grace_s`
    after it stopped; returns how many. Ray 2.60 can leave one behind: a worker whose actor has
    ended can deadlock in its own exit handler (seen with a Ray Train controller, stuck in
    `CoreWorkerProcessImpl`'s destructor), after it has left the raylet, so stopping the raylet
    no longer ends it, and it would outlive the job holding its memory."""
    import psutil
    import ray

    workers = embedded_workers()
    try:
        ray.shutdown()
    finally:  # even if Ray's shutdown failed: its workers are what must not outlive the job
        _, alive = psutil.wait_procs(workers, timeout=grace_s)
        for worker in alive:
            try:
                worker.kill()
            except psutil.NoSuchProcess:
                pass
    if alive:
        print(f"Ray: {len(alive)} worker process(es) of the embedded Ray had not exited {grace_s:.0f}s after it "
              f"stopped; killed", file=sys.stderr)
    return len(alive)


def local_run_dir(settings: Settings) -> str | None:
    """The run folder when it is on this machine's disk, else None."""
    if settings.storage.is_s3:
        return None
    return os.path.join(os.path.abspath(settings.storage.root), settings.run.name)
