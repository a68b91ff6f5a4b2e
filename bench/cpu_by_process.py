"""Where a command's CPU goes, by process: runs the command and samples every process on the
machine every 0.5 s, then prints core-seconds by process name as JSON.

    .venv/bin/python bench/cpu_by_process.py -- .venv/bin/python -m jobs.self_lengthen --config configs/tiny.yaml

A Ray worker is named by the actor or task it runs (`ray::RayTrainWorker`, `ray::ServeReplica...`,
`ray::initialize_remote_node`), a vLLM engine core by its title (`VLLM::EngineCore`), anything
else by its program (and module, for `python -m`). What a process spends after its last
sample (up to 0.5 s) is missed, and so is one that lives less than 0.5 s; what processes had
spent before the command started is not counted. Also printed: the busy cores in each 10-s window (2.0 = both cores of
this machine), where the command left the machine idle.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: str) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def name_of(pid: str) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    argv = [a for a in argv if a]
    if not argv:
        return None
    if argv[0].startswith(("ray::", "VLLM::")):  # a title a process gave itself
        title = argv[0].split()[0]
        return title.split(".")[0] if title.startswith("ray::") else title  # ray::Actor.method -> ray::Actor
    program = os.path.basename(argv[0])
    if "python" in program and len(argv) > 1:
        module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else "-c" if argv[1] == "-c" else os.path.basename(argv[1])
        return f"python {module}"
    return program


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("name the command to run after --")

    before = {pid: cpu_seconds(pid) for pid in os.listdir("/proc") if pid.isdigit()}
    last: dict[str, tuple[str, float]] = {}  # pid -> (name, CPU seconds at the last sample)
    windows: dict[int, float] = collections.defaultdict(float)
    started = time.time()
    child = subprocess.Popen(command)
    while True:
        window = int((time.time() - started) // 10)
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == str(os.getpid()):
                continue
            seconds = cpu_seconds(pid)
            if seconds is None:
                continue
            name, counted = last.get(pid, (None, before.get(pid) or 0.0))
            if name is None or not name.startswith(("ray::", "VLLM::")) or name == "ray::IDLE":
                name = name_of(pid) or name  # a Ray worker takes its actor's title after it starts
            windows[window] += max(0.0, seconds - counted)
            last[pid] = (name or "?", seconds)
        if child.poll() is not None:
            break
        time.sleep(args.every)

    by_name: collections.Counter = collections.Counter()
    for pid, (name, seconds) in last.items():
        by_name[name] += seconds - (before.get(pid) or 0.0)
    print(json.dumps({
        "command": " ".join(command), "exit_code": child.returncode,
        "seconds": round(time.time() - started, 1),
        "core_seconds": round(sum(by_name.values()), 1),
        "by_process": {name: round(s, 1) for name, s in by_name.most_common() if s >= 0.5},
        "busy_cores_per_10s": [round(windows[i] / 10, 2) for i in range(max(windows, default=-1) + 1)],
    }, indent=1))
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
