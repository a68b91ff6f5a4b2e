"""Packing vs padding: useful (label) tokens per second of the real trainer (Ray Train +
DeepSpeed ZeRO-3, 2 workers, gloo on CPU) on the same long-tailed SFT set, in one run.

    .venv/bin/python bench/packing.py [--model models/tiny] [--examples 192] [--epochs 1]

Prints JSON: per mode the label tokens/s, the share of computed positions that carry a label,
steps and seconds, and the speed-up of packing over padding.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile

from cluster.layout import RunLayout
from cluster.ray_cluster import connect
from cluster.settings import load_settings
from cluster.storage import Storage
from training.trainer import train_role

SENTENCE = "The river keeps its own slow time under the old stone bridge."


def long_tailed_examples(n: int, seed: int) -> list[dict]:
    """Answers whose lengths follow a log-normal: most short, a few very long (as in
    Self-Lengthen data, where rounds stretch the tail)."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        sentences = max(1, min(60, int(rng.lognormvariate(1.3, 0.9))))
        answer = "\n\n".join(f"{SENTENCE[:-1]}, part {j}." for j in range(sentences))
        examples.append({"id": f"b{i}", "messages": [{"role": "user", "content": f"Write about rivers, {i}."},
                                                     {"role": "assistant", "content": answer}]})
    return examples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/tiny")
    parser.add_argument("--examples", type=int, default=192)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--micro-batch", type=int, default=8, help="samples per step when padding")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-packing-")
    results = {}
    for packing in (True, False):
        settings = load_settings("configs/tiny.yaml", [
            f"model.base={args.model}", f"storage.root={root}", f"run.name={'packed' if packing else 'padded'}",
            f"training.packing={packing}", f"training.epochs={args.epochs}", "training.cutoff_len=1024",
            f"training.micro_batch_size={1 if packing else args.micro_batch}"])
        connect(settings)
        layout = RunLayout.create(Storage.open(root, settings.storage), settings.run.name)
        layout.store.write_jsonl("round-1/sft-generator/shard-00000.jsonl", long_tailed_examples(args.examples, 0))
        result = train_role(settings, layout, 1, "generator", settings.model.base,
                            [layout.store.uri("round-1/sft-generator/shard-00000.jsonl")])
        m = result.metrics
        results["packing" if packing else "padding"] = {
            k: m[k] for k in ("label_tokens_per_s", "useful_token_ratio", "steps", "seconds", "samples", "label_tokens")}
    results["speedup_label_tokens_per_s"] = round(
        results["packing"]["label_tokens_per_s"] / results["padding"]["label_tokens_per_s"], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
