"""GPU-hours of a Self-Lengthen run, estimated from its config and stated assumptions:

    python -m bench.gpu_hours [--config configs/qwen2-7b-instruct.yaml] [--set KEY=VALUE ...]
                              [--assume NAME=VALUE ...] [--instructions N]

Prints JSON: per round, the tokens the served models generate and read (prefill) and the tokens
the training steps go through, the GPU-hours each takes at the assumed throughputs, and the
wall-clock time on the config's GPUs. Nothing here is measured: every number follows from the
config and from ASSUMPTIONS, which say where they come from. Change them with --assume.
The estimate itself lives in cluster/capacity/gpu_hours.py (tests/test_k8s.py checks the copy
quoted in docs/runbook.md against it); this file is its command line.
"""

from __future__ import annotations

import argparse
import json
import sys

from cluster.capacity.gpu_hours import ASSUMPTIONS, estimate
from cluster.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_hours", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/qwen2-7b-instruct.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--assume", action="append", default=[], metavar="NAME=VALUE",
                        help=f"change an assumption: {', '.join(ASSUMPTIONS)}")
    parser.add_argument("--instructions", type=int, help="instructions per round, if the config takes every seed")
    args = parser.parse_args(argv)
    assumptions = {}
    for item in args.assume:
        name, _, value = item.partition("=")
        if name not in ASSUMPTIONS:
            parser.error(f"unknown assumption {name!r}")
        assumptions[name] = float(value)
    try:
        settings = load_settings(args.config, args.overrides)
        print(json.dumps(estimate(settings, assumptions, args.instructions), indent=2))
    except (SettingsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
