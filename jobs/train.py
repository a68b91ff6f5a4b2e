"""Fine-tuning on any dataset, with the loop's Ray Train + DeepSpeed path: supervised (the
default) or DPO on preference pairs (`--method dpo`, `dpo.*` settings):

    python -m jobs.train --config configs/tiny.yaml --run-name sft \\
        --data runs/demo/collect/data.jsonl --data s3://bucket/general.parquet@0.25
    python -m jobs.train --config configs/tiny.yaml --run-name demo --method dpo --name dpo \\
        --data runs/demo/final/preference/pairs.jsonl --init-model runs/demo/final/model

    read      every --data (chat `messages`, alpaca, ShareGPT; pairs as `prompt`/`chosen`/`rejected`;
              JSONL, JSON, Parquet or a `datasets` folder; local or s3://), set aside what cannot
              be used, weigh, shuffle
    train     `training.*` as in the loop (full or LoRA, ZeRO stage, packing, checkpoints)
    export    safetensors (or the adapter) under <run>/<name>/model/, ready for vLLM

Under <run>/<name>/ on storage: data/ (the records trained on), rejected.jsonl (file, line or
row, reason), checkpoints/ (Ray Train), model/, summary.json. The same command again resumes
from the last checkpoint, or does nothing if the model is already exported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

from cluster.cli import add_settings_args, settings_from_args
from cluster.layout import EXPORT_MARKER, RunLayout
from cluster.settings import FOLDER_NAME
from cluster.storage import Storage, filesystem_for
from jobs import bad_input, run_job
from runtime.log import logger
from runtime.preflight import check_storage_root, checked_location, model_dir
from training.sources import DataSpec, load_mixture

SHARD_RECORDS = 5000


log = logger("train")


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n\n")[0])
    add_settings_args(parser)
    parser.add_argument("--data", action="append", required=True, metavar="URI[@WEIGHT]",
                        help="a dataset file or folder, local or s3:// (repeatable; @WEIGHT repeats or subsamples it)")
    parser.add_argument("--method", choices=("sft", "dpo"), default="sft",
                        help="sft: chat records; dpo: preference pairs, as the dpo.* settings say (default: sft)")
    parser.add_argument("--name", help="folder of this fine-tune inside the run (default: the method)")
    parser.add_argument("--init-model", help="weights to start from (default: model.base)")
    parser.add_argument("--init-adapter", help="LoRA adapter to continue (training.method=lora)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.name = args.name or args.method
    settings = settings_from_args(args)
    if not re.match(FOLDER_NAME, args.name):
        print(f"error: --name {args.name!r}: a folder inside the run is one name of letters, digits, '.', '_' "
              "and '-', starting with a letter or digit", file=sys.stderr)
        return 2
    try:
        specs = [DataSpec.parse(text) for text in args.data]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    what = "--init-model" if args.init_model else "model.base"
    init_model = folder_arg(args.init_model or settings.model.base, what)
    model_dir(init_model, settings, what)  # exit 2 when there is no model there
    if args.init_adapter:
        args.init_adapter = folder_arg(args.init_adapter, "--init-adapter")
        fs, path = filesystem_for(args.init_adapter, settings.storage)
        if not fs.exists(f"{path}/adapter_config.json"):
            bad_input(f"--init-adapter: no LoRA adapter at {args.init_adapter} (adapter_config.json not found)")
    check_storage_root(settings)  # the data shards below are the first write

    # 1. the data, checked before any cluster starts
    started = time.time()
    try:
        records, rejected, counts = load_mixture(specs, settings.storage, settings.run.seed, args.method)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for c in counts:
        log(f"{c['data']}: {c['records']} records, {c['set_aside']} set aside, {c['used']} used (weight {c['weight']})")
    for r in rejected[:5]:
        log(f"set aside {r['file']} {r['where']}: {r['reason']}")
    if not records:
        print(f"error: no usable record in {', '.join(args.data)}", file=sys.stderr)
        return 2
    layout = RunLayout.create(Storage.open(settings.storage.root, settings.storage), settings.run.name)
    store = layout.store.child(args.name)
    files = []
    for i in range(0, len(records), SHARD_RECORDS):
        rel = f"data/shard-{i // SHARD_RECORDS:05d}.jsonl"
        store.write_jsonl(rel, records[i: i + SHARD_RECORDS])
        files.append(store.uri(rel))
    store.write_jsonl("rejected.jsonl", rejected)

    # 2. train and export (resumes from checkpoints; skipped when the export exists)
    summary = {"run": settings.run.name, "name": args.name, "data": counts, "records": len(records),
               "set_aside": len(rejected), "init_model": init_model, "method": args.method,
               "weights": settings.training.method}
    if store.exists(f"model/{EXPORT_MARKER}"):
        log(f"already trained: {store.uri('model')}")
        summary["training"] = store.read_json(f"model/{EXPORT_MARKER}")["metrics"]
    else:
        summary["training"] = fine_tune(settings, layout, args, init_model, files)
    summary.update(model=store.uri("model"), seconds=round(time.time() - started, 1))
    store.write_json("summary.json", summary)
    t = summary["training"]
    history = t.get("loss_history") or []
    loss = f"{history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}" if history else t.get("train_loss")
    log(f"trained on {len(records)} records ({len(rejected)} set aside): {t.get('steps')} steps, loss {loss}")
    log(f"model: {summary['model']}")
    print(json.dumps({k: summary[k] for k in ("records", "set_aside", "model")}))
    return 0


def folder_arg(uri: str, what: str) -> str:
    """A model or adapter location, checked; local paths made absolute (the Ray workers that
    read them start elsewhere)."""
    uri = checked_location(uri, what)
    return uri if uri.startswith("s3://") else os.path.abspath(uri)


def fine_tune(settings, layout: RunLayout, args, init_model: str, files: list[str]) -> dict:
    from runtime.context import RunContext
    from training.trainer import Target, train

    RunContext.open(settings, "train", tag="train")  # Ray only from here on
    target = Target(args.name, "checkpoints", f"{args.name}/model", args.name)
    result = train(settings, layout, target, init_model, files, args.init_adapter, args.method)
    return {**result.metrics, "loss_history": result.loss_history}


if __name__ == "__main__":
    run_job(main)
