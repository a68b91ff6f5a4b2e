"""An embedded Ray leaves no process behind when its job exits (cluster/ray_cluster.py,
`stop_embedded`), even a worker that hangs in its own exit, as a Ray Train controller of a
`make demo` run once did (deadlocked in Ray's exit handler, it outlived the job by minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

# A job in miniature: connects as every job does (an embedded Ray from the tiny config), starts
# two actors, and ends one of them the way Ray ends an actor nobody holds (its exit handlers run),
# where one of its handlers never returns; then the driver exits normally.
DRIVER = textwrap.dedent("""
    import atexit, json, os, sys, time
    from cluster.ray_cluster import connect
    from cluster.settings import load_settings
    import ray

    settings = load_settings("configs/tiny.yaml", [f"storage.root={sys.argv[1]}"])
    print(connect(settings), file=sys.stderr)

    @ray.remote(num_cpus=0)
    class Worker:
        def pid(self, hang_at_exit):
            if hang_at_exit:
                atexit.register(time.sleep, 3600)
            return os.getpid()

    stuck, fine = Worker.remote(), Worker.remote()
    pids = {"stuck": ray.get(stuck.pid.remote(True)), "fine": ray.get(fine.pid.remote(False))}
    stuck.__ray_terminate__.remote()
    time.sleep(2)  # it has left the raylet and hangs in its exit handler
    print(json.dumps(pids), flush=True)
""")


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.cluster
def test_a_worker_stuck_in_its_exit_does_not_outlive_the_job(repo, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    pids = json.loads(done.stdout.strip().splitlines()[-1])
    deadline = time.time() + 10
    while alive(pids["stuck"]) and time.time() < deadline:
        time.sleep(0.2)
    survived = alive(pids["stuck"])
    if survived:  # do not leave it behind on the test machine either
        os.kill(pids["stuck"], 9)
    assert not survived, "the worker stuck in its exit outlived the job"
    assert not alive(pids["fine"])
    # the one stuck worker was killed, and the job said so; the other one had exited by itself
    assert "Ray: 1 worker process(es) of the embedded Ray had not exited" in done.stderr, done.stderr[-3000:]
