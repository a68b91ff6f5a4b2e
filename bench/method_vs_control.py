"""Method against control on the tiny model over several seeds (toyworld/method_vs_control.py).

    .venv/bin/python bench/method_vs_control.py [--seeds 0 1 2] [--config configs/tiny.yaml]

Prints one JSON line per seed (probe mean words before, after the method, after the control),
the smallest margins over the seeds, and the means over them: what
tests/test_method_direction.py asserts on (for seeds 0 and 1). One engine serves every seed.
"""

from __future__ import annotations

import argparse
import json
import time

from cluster.settings import load_settings
from toyworld.method_vs_control import compare, read_instructions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], help="extra settings overrides")
    args = parser.parse_args()
    rows = []
    started = time.time()
    settings = load_settings(args.config, args.set)
    results = compare(settings, read_instructions(settings.synthesis.seeds), read_instructions(settings.probe.file),
                      seeds=args.seeds)
    for result in results:
        row = {"seed": result.seed, "base_words": result.base["mean_words"], "method_words": result.method["mean_words"],
               "control_words": result.control["mean_words"], "growth": result.growth,
               "method_unique_sentences": result.method["unique_sentence_ratio"], "sft": result.sft,
               "tallies": result.tallies}
        print(json.dumps(row), flush=True)
        rows.append(row)
    mean = {m: round(sum(r["growth"][m] for r in rows) / len(rows), 3) for m in ("method", "control")}
    print(json.dumps({"seconds": round(time.time() - started, 1), "mean_growth": mean,
                      "mean_gap": round(mean["method"] - mean["control"], 3)}))
    print(json.dumps({"min_method_growth": min(r["growth"]["method"] for r in rows),
                      "max_control_growth": max(r["growth"]["control"] for r in rows)}))


if __name__ == "__main__":
    main()
