"""The final models of finished runs, side by side on one larger length-constrained probe set.

    .venv/bin/python bench/final_models.py --run runs/demo --run runs/cc [--draws 5]

The loop scores its final model on 30 constrained probes, which move by ~0.07 between two
trainings of one recipe. This scores each run's <run>/final/model on the same instructions
under `--draws` constraints each (150 with the default 5), as bench/preference.py does: greedy,
with `probe.decoding.repetition_penalty`, LonGen's length score. One JSON line per run: the
run's final-SFT data (collected examples, closed cuts: `final.closed_cuts`), the scores, and
asked ~ written per language; the answers go to <run>/bench-final-models/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.number_reading import per_language  # noqa: E402
from bench.preference import probe_rows, score  # noqa: E402
from cluster.layout import RunLayout  # noqa: E402
from cluster.settings import load_settings  # noqa: E402
from cluster.storage import Storage  # noqa: E402
from longform.length_probe import fixed_length_ceiling  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", action="append", required=True, help="a finished run folder (local); repeat")
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--draws", type=int, default=5, help="constraints drawn per probe instruction")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = None
    for run in args.run:
        started = time.time()
        root, name = os.path.split(os.path.abspath(run))
        settings = load_settings(args.config, [f"storage.root={root}", f"run.name={name}"])
        layout = RunLayout.create(Storage.open(root, settings.storage), name)
        if rows is None:
            rows = probe_rows(settings, args.draws)
            print(json.dumps({"probes": len(rows), "fixed_length_ceiling": fixed_length_ceiling(rows)}), flush=True)
        trained = layout.store.read_json("final/stages/train.json")
        store = layout.store.child("bench-final-models")
        result = score(layout.store.uri("final/model"), rows, settings.probe.decoding.repetition_penalty, store, "final")
        print(json.dumps({"run": run, "collected": trained.get("examples"), "closed_cuts": trained.get("closed_cuts", 0),
                          "steps": trained["metrics"].get("steps"), **result,
                          "by_language": per_language(rows, "answers-final.jsonl", store),
                          "seconds": round(time.time() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
