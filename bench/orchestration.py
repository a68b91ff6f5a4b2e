"""Orchestration overhead of a synthesis round with a zero-cost engine.

    .venv/bin/python bench/orchestration.py [--records 1000 10000 100000 1000000] [--num-cpus 4]
        [--config configs/tiny.yaml] [--set synthesis.shard_size=16 ...]

What runs: the real `actors.synthesis.run_synthesis` (Ray Data, the `ShardWorker` actor pool,
every shard's drafts, extensions, SFT and alpaca files and stats written to a local temporary
folder) on an embedded Ray (`ray.init(address="local", num_cpus=N)`), with the model replaced
by `actors.engines.InstantClientFactory`: every call answers at once, in the worker's own
process, with synthetic text that passes the quality rules, so drafts, length-biased sampling,
two-stage extensions and SFT building all really run. What is left is the cost of the pipeline.

Instructions are synthetic (half English, half Chinese), written in the loader's JSONL format and
parsed with `longform.instructions.parse_instructions`; their shard files are written before the
clock starts (reported separately as `write_shards_s`). The benchmark then drops its own copy of
the records (~73 MiB at 100k, ~540 MiB at 1M), so the driver's figures are the fan-out's own;
until 2026-12-05 the driver's peak included them.
Outputs take ~6.6 KiB of disk per record (~6.5 GiB at 1M with shards of 64).

Figures per size (each size runs in a fresh Python process and a fresh Ray):
  records_per_s    instructions / wall seconds of run_synthesis (actor start-up included)
  steady_records_per_s  the rate from the first shard's commit to the last (start-up excluded),
                   from the modification times of the shards' commit markers (stats files): the
                   progress line, once printed for every shard, now prints at most every 20 s
  first_shard_s    from the start of run_synthesis to the first commit marker
  cpu_ms_per_record  CPU seconds of every process of the run (driver, workers, Ray's daemons),
                   per instruction: less sensitive than wall time to other load on the machine
  peak_rss_total   peak of the summed RSS of the driver and every process under it (Ray's GCS,
                   raylet, dashboard and all Ray workers), sampled with psutil every 0.2 s.
                   RSS counts shared pages (the object store's shared memory, shared libraries)
                   once per process, so the sum overstates the machine's use; it is the same
                   measure at every size, which is what the growth check needs.
  peak_rss_workers the same sum over the Ray worker processes only ("ray::..." titles)
  peak_rss_driver  the driver's own peak; driver_rss_before_run / _after_run: its RSS before
                   run_synthesis starts and once it has returned (Ray still up)
  load_avg_1m_mean / _max  the machine's 1-minute load average, sampled with the memory

The pool is two shard workers of four shards each (`POOL`; a `--set` of synthesis.workers or
shards_per_worker overrides it): with a zero-cost engine the workers' own work is all there is,
and one worker process runs on one core. configs/tiny.yaml runs one worker of eight, which on
two cores shared with real engines leaves them more CPU; here it gives ~1,740 records/s
(bench/RESULTS.md).
Goals (issue 8): >= 2,000 records/s on 2 cores; peak memory from 10k to 100k grows <= 10%.
Issue 15 adds 1M records: the summary gives the growth from 100k to 1M as well.
Prints one JSON line per size and one JSON object at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# the shard pool measured (before --set): two worker processes, as the figures before
# configs/tiny.yaml went to one were taken with
POOL = ["synthesis.workers=2", "synthesis.shards_per_worker=4"]


class RssSampler:
    """Samples the summed RSS of this process and all its descendants every `interval` s, and
    tallies the CPU seconds (user + system) they spend while it runs, per kind of process."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self.psutil, self.interval = psutil, interval
        self.me = psutil.Process()
        self.peak = {"total": 0, "workers": 0, "driver": 0}
        self.samples = 0
        self.loads: list[float] = []
        self.cpu_start: dict[int, float] = {}
        self.cpu_last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def processes(self):
        return [self.me, *self.me.children(recursive=True)]

    def sample(self) -> None:
        total = workers = driver = 0
        for proc in self.processes():
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    name = " ".join(proc.cmdline()) or proc.name()  # Ray workers retitle themselves "ray::<actor>"
                    cpu = proc.cpu_times()
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                continue
            self.cpu_last[proc.pid] = (name, cpu.user + cpu.system)
            total += rss
            if proc.pid == self.me.pid:
                driver = rss
            elif name.startswith("ray::"):
                workers += rss
        for key, value in (("total", total), ("workers", workers), ("driver", driver)):
            self.peak[key] = max(self.peak[key], value)
        self.samples += 1
        self.loads.append(os.getloadavg()[0])

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        for proc in self.processes():
            try:
                cpu = proc.cpu_times()
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                continue
            self.cpu_start[proc.pid] = cpu.user + cpu.system
        self._thread.start()
        return self

    def load(self) -> dict[str, float]:
        return {"load_avg_1m_mean": round(sum(self.loads) / len(self.loads), 2),
                "load_avg_1m_max": round(max(self.loads), 2)}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds spent during the run: the driver, the shard actors (titled by Ray Data's
        callable, ShardRunner; ShardWorker before 2026-12-05), other Ray workers, Ray's own
        daemons (GCS, raylet, dashboard, ...). A process that ended between two samples loses
        its last interval."""
        out = {"driver": 0.0, "shard_workers": 0.0, "other_ray_workers": 0.0, "ray_daemons": 0.0}
        for pid, (name, cpu) in self.cpu_last.items():
            spent = cpu - self.cpu_start.get(pid, 0.0)
            if pid == self.me.pid:
                key = "driver"
            elif "ShardRunner" in name or "ShardWorker" in name:  # Ray Data titles the pool by its callable
                key = "shard_workers"
            elif name.startswith("ray::"):
                key = "other_ray_workers"
            else:
                key = "ray_daemons"
            out[key] += spent
        out = {k: round(v, 2) for k, v in out.items()}
        out["total"] = round(sum(out.values()), 2)
        return out

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def mib(n: int) -> float:
    return round(n / 2**20, 1)


def commit_times(folder: str) -> list[float]:
    """When each shard's commit marker (its stats file) was written, in order."""
    return sorted(entry.stat().st_mtime for entry in os.scandir(folder) if entry.name.endswith(".json"))


def run_one(args) -> dict:
    import ray

    from actors.engines import InstantClientFactory
    from actors.synthesis import RoundPlan, run_synthesis, write_instruction_shards
    from actors.synthetic_text import synthetic_instructions
    from cluster.layout import RunLayout
    from cluster.settings import load_settings
    from cluster.storage import Storage
    from longform.instructions import parse_instructions

    root = tempfile.mkdtemp(prefix="bench-orchestration-")
    settings = load_settings(args.config, [f"storage.root={root}", *POOL, *args.set])
    parsed = parse_instructions(synthetic_instructions(args.one, seed=args.seed), "synthetic.jsonl", "synthetic")
    records = parsed.records
    assert len(records) == args.one and not parsed.rejected
    layout = RunLayout.create(Storage.open(root, settings.storage), "bench")
    started = time.time()
    shards = write_instruction_shards(layout, 1, records, settings.synthesis.shard_size)
    write_s = time.time() - started
    n_records = len(records)
    del records, parsed  # in shard files now: the driver's figures are the fan-out's own
    gc.collect()
    plan = RoundPlan(round=1, base_url="http://unused.invalid/v1",
                     model_ids={"generator": "generator", "extender": "extender"},
                     versions={"generator": "instant", "extender": "instant"})
    ray.init(address="local", num_cpus=args.num_cpus, log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = args.progress_bars
    load_start = round(os.getloadavg()[0], 2)
    import psutil

    driver_before = psutil.Process().memory_info().rss
    try:
        with RssSampler() as rss:
            started = time.time()
            result = run_synthesis(settings, layout, plan, shards, client_factory=InstantClientFactory(),
                                   log=lambda line: print(line, file=sys.stderr, flush=True))
            seconds = time.time() - started
            driver_after = psutil.Process().memory_info().rss
    finally:
        ray.shutdown()
    tally = result["tally"]
    # every stage must have run on every record, or the figure means nothing
    assert tally["drafts.passed"] == tally["drafts.requested"] == 2 * n_records, tally
    done_at = commit_times(layout.store.path(f"{layout.round_dir(1)}/stats"))
    assert len(done_at) == len(shards), (len(done_at), len(shards))
    assert tally["extensions.passed"] == tally["extensions.requested"] > 0, tally
    assert tally["sft.generator"] > 0, tally
    out = {
        "records": n_records, "shards": len(shards), "shard_size": settings.synthesis.shard_size,
        "workers": settings.synthesis.workers, "shards_per_worker": settings.synthesis.shards_per_worker,
        "num_cpus": args.num_cpus, "run_synthesis_s": round(seconds, 2),
        "records_per_s": round(n_records / seconds, 1), "write_shards_s": round(write_s, 2),
        # start-up (actor pool, imports) is a fixed cost: the rate after the first shard came back
        "first_shard_s": round(done_at[0] - started, 2),
        "steady_records_per_s": round(n_records * (len(done_at) - 1) / len(done_at) / (done_at[-1] - done_at[0]), 1)
        if len(done_at) > 1 and done_at[-1] > done_at[0] else None,
        "peak_rss_total_mib": mib(rss.peak["total"]), "peak_rss_workers_mib": mib(rss.peak["workers"]),
        "peak_rss_driver_mib": mib(rss.peak["driver"]), "driver_rss_before_run_mib": mib(driver_before),
        "driver_rss_after_run_mib": mib(driver_after),
        "rss_samples": rss.samples,
        "cpu_s": (cpu := rss.cpu_seconds()),
        "cpu_ms_per_record": round(1000 * cpu["total"] / n_records, 3),
        "load_avg_1m_at_start": load_start, **rss.load(),
        "engine_calls": sum(v for k, v in result["calls"].items() if k.endswith(".requests")),
        "tally": {k: tally[k] for k in ("drafts.passed", "drafts.sampled_out", "extensions.passed",
                                        "extensions.sampled_out", "sft.generator", "sft.extender")},
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--config", default=str(REPO / "configs/tiny.yaml"))
    parser.add_argument("--set", action="append", default=[], help="settings override, e.g. synthesis.shard_size=64")
    parser.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the embedded Ray")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress-bars", action="store_true", help="keep Ray Data's progress bars on")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folder")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one size, in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args)), flush=True)
        return
    rows = []
    for n in args.records:  # a fresh process (and Ray) per size, so peaks do not carry over
        cmd = [sys.executable, __file__, "--one", str(n), "--config", args.config, "--num-cpus", str(args.num_cpus),
               "--seed", str(args.seed), *[a for s in args.set for a in ("--set", s)]]
        cmd += ["--progress-bars"] if args.progress_bars else []
        cmd += ["--keep"] if args.keep else []
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        if proc.returncode:
            raise SystemExit(f"size {n} failed (exit {proc.returncode})")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    summary = {"benchmark": "orchestration", "engine": "instant (zero-cost, in process)",
               "cpu_cores": os.cpu_count(), "settings_overrides": args.set, "sizes": rows,
               "goal_records_per_s": 2000,
               "min_records_per_s": min(r["records_per_s"] for r in rows)}
    # growth of the peaks from 10k to 100k records (goal <= 10%) and from 100k to 1M
    by_size = {r["records"]: r for r in rows}
    for small, large, name in ((10000, 100000, "10k_to_100k"), (100000, 1000000, "100k_to_1m")):
        if small in by_size and large in by_size:
            for key in ("peak_rss_total_mib", "peak_rss_workers_mib", "peak_rss_driver_mib"):
                summary[f"growth_{name}_{key[:-4]}"] = round(by_size[large][key] / by_size[small][key] - 1, 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
