"""Fine-tuning on Ray Train with DeepSpeed ZeRO-3, on a two-node Ray cluster on this machine:
full and LoRA, exports that reproduce the trained model, S3-only storage, and resuming after the
whole job is killed and run again. (A worker killed mid-training, and Ray Train resuming from
the last checkpoint, is tested inside the full loop: tests/test_job_submit.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.layout import RunLayout
from cluster.settings import load_settings
from cluster.storage import Storage
from toyworld.build import pad_batch, token_mean_loss, tokenize_chat
from training.export import EXPORT_MARKER, last_logits, reload, verify_ids
from training.trainer import train_role

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def two_nodes(s3_server):
    """A Ray cluster of two nodes on this machine (ray.cluster_utils), 4 logical CPUs each.
    Started after the S3 server: its processes get the AWS variables, as pods get them from
    a Secret."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    cluster.add_node(num_cpus=4)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def sft_examples(repo, n=48) -> list[dict]:
    seeds = [json.loads(line) for line in (repo / "configs/seeds/tiny_seeds.jsonl").read_text().splitlines()]
    answers = {"en": "It matters to many people.\n\nIt has a long history.\n\nIt will change again.",
               "zh": "它对许多人都很重要。\n\n它有很长的历史。\n\n它还会再变化。"}
    return [{"id": f"x{i}", "messages": [{"role": "user", "content": s["instruction"]},
                                         {"role": "assistant", "content": answers[s["lang"]]}]}
            for i, s in enumerate((seeds * 4)[:n])]


def setup_run(repo, tiny_model, root: str, name: str, *overrides: str):
    settings = load_settings(repo / "configs/tiny.yaml", [
        f"model.base={tiny_model}", f"storage.root={root}", f"run.name={name}",
        "training.cutoff_len=256", "training.epochs=2", "training.grad_accum=8", *overrides])
    layout = RunLayout.create(Storage.open(root, settings.storage), name)
    layout.store.write_jsonl("round-1/sft-generator/shard-00000.jsonl", sft_examples(repo))
    return settings, layout, [layout.store.uri("round-1/sft-generator/shard-00000.jsonl")]


def export_folder(export_uri: str, tmp_path) -> str:
    if not export_uri.startswith("s3://"):
        return export_uri
    return Storage.open(export_uri, load_settings(None, ["model.base=x"]).storage).get_dir("", str(tmp_path / "export"))


@torch.no_grad()
def sft_loss(model, tiny_model, examples: list[dict]) -> float:
    """Mean cross-entropy over the assistant tokens of `examples` (as the training computes it)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = pad_batch([tokenize_chat(tokenizer, e) for e in examples], tokenizer.pad_token_id)
    return float(token_mean_loss(model.eval(), batch, bf16=False))


def reference_check(export_uri: str, marker: dict, tiny_model, lora: bool, tmp_path):
    """Reload the export independently and compare with the logits the trainer recorded."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = reload(export_folder(export_uri, tmp_path), str(tiny_model), lora)
    logits = last_logits(model, verify_ids(tokenizer))
    check = marker["export_check"]
    torch.testing.assert_close(logits[check["top_ids"]], torch.tensor(check["top_logits"]), rtol=1e-4, atol=1e-4)
    return logits


STEPS_AT_LEAST = 6
# measured on the 48 examples at lr 1e-3: LoRA 11.10 -> 8.98 (12 steps); full 11.10 -> 1.55 (12
# steps, grad_accum 1), and 11.10 -> 1.33 in the killed-job test (grad_accum 8, resumed)
LOSS_DROP_AT_LEAST = 1.0


def assert_exports_what_was_trained(result, layout: RunLayout, method: str, repo, tiny_model, tmp_path) -> None:
    """The export of a fine-tune on `sft_examples`: safetensors only, TensorBoard events, logits
    that reload and match what the trainer recorded, and a lower loss on its examples."""
    marker = layout.store.read_json(f"round-1/generator/{EXPORT_MARKER}")
    assert result.metrics["steps"] >= STEPS_AT_LEAST, result.metrics["steps"]
    assert marker["export_check"]["max_abs_logit_diff"] < 1e-3
    expected = {"adapter_config.json", "adapter_model.safetensors"} if method == "lora" else {"model.safetensors"}
    assert expected <= set(marker["files"]) and "tokenizer.json" in marker["files"]
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in marker["files"]), "no pickles in an export"
    events = layout.store.list("round-1/train-generator/tensorboard")  # training.report_to's default
    assert any(n.startswith("events.out.tfevents") for n in events), events
    logits = reference_check(result.export_uri, marker, tiny_model, method == "lora", tmp_path)
    base_logits = last_logits(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                              verify_ids(AutoTokenizer.from_pretrained(tiny_model)))
    assert not torch.allclose(logits, base_logits, atol=1e-3), "training changed nothing"
    # learned, on the examples it was trained on: one fixed set scored by the base and by the
    # export (per-step losses are of different batches and move by +-0.5 on their own)
    examples = sft_examples(repo)
    exported = reload(export_folder(result.export_uri, tmp_path), str(tiny_model), method == "lora")
    exported = exported.merge_and_unload() if method == "lora" else exported
    before = sft_loss(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), tiny_model, examples)
    after = sft_loss(exported, tiny_model, examples)
    print(f"{method}: loss on its examples {before:.3f} -> {after:.3f}")
    assert after < before - LOSS_DROP_AT_LEAST, (before, after)


def test_lora_on_two_zero3_workers_exports_what_was_trained(repo, tiny_model, tmp_path, two_nodes, s3_bucket):
    """LoRA runs serve adapters from object storage, so this one is on S3. (Full fine-tuning
    on two ZeRO-3 workers exports what it trained in the killed-job test below.)"""
    # one packed row per worker per step: enough optimizer steps that "the loss went down" is
    # the model learning, not float noise between two losses of the same weights
    settings, layout, files = setup_run(repo, tiny_model, f"s3://{s3_bucket}/runs", "t", "training.method=lora",
                                        "training.zero_stage=3", "training.num_workers=2",
                                        "training.grad_accum=1", "training.lr=1e-3", "serving.mode=lora")
    result = train_role(settings, layout, 1, "generator", str(tiny_model), files)
    assert_exports_what_was_trained(result, layout, "lora", repo, tiny_model, tmp_path)


def train_workers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if "ray::RayTrainWorker" in " ".join(p.info["cmdline"] or [])]


def wait_for_checkpoints(layout: RunLayout, count: int = 2, timeout: float = 300) -> None:
    """Until `count` checkpoint folders exist: a report returns only once every rank made it,
    so the second folder means the first checkpoint is registered with Ray Train."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sum(n.startswith("checkpoint_") for n in layout.store.list("round-1/train-generator")) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} checkpoints appeared")


LONG = ("training.epochs=12", "training.checkpoint_every_steps=3", "training.lr=1e-3")


def test_a_killed_job_run_again_resumes_and_exports_what_was_trained(repo, tiny_model, tmp_path, two_nodes):
    """Full fine-tuning on two ZeRO-3 workers, killed whole (driver, controller, workers) once
    two checkpoints are there and run again: the rerun resumes from the last intact checkpoint,
    finishes, and its export is what was trained."""
    settings, layout, files = setup_run(repo, tiny_model, str(tmp_path), "kill-job", *LONG)
    import ray

    script = f"""
import ray
from cluster.layout import RunLayout
from cluster.settings import load_settings
from cluster.storage import Storage
from toyworld.build import pad_batch, token_mean_loss, tokenize_chat
from training.trainer import train_role
ray.init(address={ray.get_runtime_context().gcs_address!r})
settings = load_settings({str(repo / 'configs/tiny.yaml')!r}, {settings_overrides(settings, tiny_model)!r})
layout = RunLayout.create(Storage.open(settings.storage.root, settings.storage), settings.run.name)
train_role(settings, layout, 1, "generator", {str(tiny_model)!r}, {files!r})
"""
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=repo,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_checkpoints(layout)
    finally:
        driver.send_signal(signal.SIGKILL)  # the whole job goes: driver, controller, workers
        driver.wait()
    deadline = time.time() + 60
    while train_workers() and time.time() < deadline:
        time.sleep(1)
    # damage every checkpoint but the oldest, as a kill during an upload could: the rerun must
    # name and skip them and resume from the oldest, not fail inside DeepSpeed or start over
    folder = tmp_path / "kill-job/round-1/train-generator"
    oldest, *newer = sorted(p for p in folder.iterdir() if p.name.startswith("checkpoint_"))
    for checkpoint in newer:
        for shard in checkpoint.glob("checkpoint/global_step*/*.pt"):
            shard.write_bytes(shard.read_bytes()[:1000])
    oldest_step = json.loads((oldest / "checkpoint/trainer_state.json").read_text())["global_step"]
    result = train_role(settings, layout, 1, "generator", str(tiny_model), files)
    assert result.metrics["resumed_from_step"] == oldest_step >= 3, "the rerun did not resume from the oldest checkpoint"
    skipped = result.metrics["skipped_checkpoints"]
    assert all("truncated" in reason for reason in skipped), skipped
    assert_exports_what_was_trained(result, layout, "full", repo, tiny_model, tmp_path)


def settings_overrides(settings, tiny_model) -> list[str]:
    return [f"model.base={tiny_model}", f"storage.root={settings.storage.root}", f"run.name={settings.run.name}",
            "training.cutoff_len=256", "training.grad_accum=8", *LONG]


def test_jobs_train_fine_tunes_on_files_people_already_have(repo, tiny_model, tmp_path, two_nodes, s3_bucket, capsys):
    """`python -m jobs.train` on a local Parquet file (alpaca rows) and a LongWriter-style JSONL
    on S3 holding one bad line: trains on 2 ZeRO-3 workers, exports to the run on S3, sets the bad
    line aside with its file and line, and a second run finds the export and does not train."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import train as train_job
    from longform.sft import to_alpaca

    pq.write_table(pa.Table.from_pylist([to_alpaca(e) for e in sft_examples(repo, 16)]), tmp_path / "a.parquet")
    store = Storage.open(f"s3://{s3_bucket}/data", load_settings(None, ["model.base=x"]).storage)
    lines = (repo / "tests/data/longwriter6k_style.jsonl").read_text().splitlines()
    store.write_text("lw.jsonl", "\n".join(lines[:5] + ['{"messages": "oops"}'] + lines[5:]) + "\n")
    args = ["--config", str(repo / "configs/tiny.yaml"), "--set", f"model.base={tiny_model}",
            "--set", "training.cutoff_len=256", "--set", "training.epochs=1",
            "--storage", f"s3://{s3_bucket}/runs", "--run-name", "own-data",
            "--data", str(tmp_path / "a.parquet"), "--data", f"s3://{s3_bucket}/data/lw.jsonl@2"]
    assert train_job.main(args) == 0
    run = Storage.open(f"s3://{s3_bucket}/runs/own-data/sft", load_settings(None, ["model.base=x"]).storage)
    summary = run.read_json("summary.json")
    assert summary["records"] == 16 + 2 * 20 and summary["set_aside"] == 1
    assert [r["where"] for r in run.read_jsonl("rejected.jsonl")] == ["line 6"]
    marker = run.read_json(f"model/{EXPORT_MARKER}")
    assert "model.safetensors" in marker["files"] and summary["training"]["steps"] > 0
    reference_check(summary["model"], marker, tiny_model, False, tmp_path)
    assert train_job.main(args) == 0
    assert "already trained" in capsys.readouterr().out


# ---------------------------------------------------------------- DPO (the preference stage)

def dpo_pairs(repo, n=24) -> list[dict]:
    """Pairs the tiny model can learn a preference from: a three-paragraph answer over a
    one-line one, for the seeds' instructions."""
    long_answer = {e["id"]: e["messages"][1]["content"] for e in sft_examples(repo, n)}
    return [{"id": f"p{i}", "prompt": [e["messages"][0]],
             "chosen": [{"role": "assistant", "content": long_answer[e["id"]]}],
             "rejected": [{"role": "assistant", "content": long_answer[e["id"]].split("\n\n")[0]}]}
            for i, e in enumerate(sft_examples(repo, n))]


@torch.no_grad()
def answer_logps(model, tokenizer, pairs: list[dict], side: str) -> torch.Tensor:
    """Summed log-probability of each pair's `side` answer given its prompt."""
    out = []
    for p in pairs:
        ids, labels = tokenize_chat(tokenizer, {"messages": p["prompt"] + p[side]})
        ids, labels = torch.tensor([ids]), torch.tensor(labels[1:])
        logps = torch.log_softmax(model.eval()(input_ids=ids).logits[0, :-1].float(), -1)
        keep = labels != -100
        out.append(logps[keep].gather(-1, labels[keep][:, None]).sum())
    return torch.stack(out)


def kill_one_worker_after_checkpoints(layout: RunLayout, folder: str, killed: list) -> threading.Thread:
    """In the background: once Ray Train's controller has registered a checkpoint (its snapshot
    on storage names one: a folder alone may be a report the controller has not collected yet,
    lost with the worker), SIGKILL one training worker started after this call (not another
    cluster's on this machine). What it did goes into `killed`."""
    snapshot = f"{folder}/checkpoint_manager_snapshot.json"
    since = time.time() - 1

    def watch():
        deadline = time.time() + 300
        while time.time() < deadline:
            if layout.store.exists(snapshot) and "checkpoint_" in layout.store.read_text(snapshot):
                workers = [p for p in train_workers() if p.create_time() >= since]
                if workers:
                    workers[-1].send_signal(signal.SIGKILL)
                killed.append(workers[-1].pid if workers else "no training worker found")
                return
            time.sleep(0.2)
        killed.append("no registered checkpoint within 300 s")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("method", ["full", "lora"])
def test_dpo_on_two_zero3_workers_resumes_after_a_killed_worker(method, repo, tiny_model, tmp_path, two_nodes,
                                                                request):
    """DPO through TRL's DPOTrainer in the Ray Train worker, everything on S3: one worker is
    killed once two checkpoints are there, Ray Train restarts the group from the last one, the
    export reproduces the trained model, and the export prefers the chosen answers more than the
    reference does (the implicit DPO reward margin on its pairs is positive). The full run also
    places one worker per node (STRICT_SPREAD), reads its base model from S3, with nothing of
    the run on local disk (this was a fine-tune of its own; folded in to keep CI short), and
    uploads its checkpoints asynchronously (`training.checkpoint_upload: async`). The
    LoRA run goes through `python -m jobs.train --method dpo` on pairs in LLaMA-Factory's
    instruction / chosen / rejected form."""
    from jobs import train as train_job
    from training.trainer import Target, train

    bucket = request.getfixturevalue("s3_bucket")
    extra = ["serving.mode=lora"] if method == "lora" else [
        "training.placement_strategy=STRICT_SPREAD", "training.resources_per_worker={CPU: 2}",
        "training.checkpoint_upload=async"]  # as configs/qwen2-7b-instruct.yaml: uploads while training goes on
    overrides = [f"training.method={method}", "training.num_workers=2", "training.grad_accum=1", "training.epochs=2",
                 "training.checkpoint_every_steps=4", "dpo.lr=1e-3" if method == "lora" else "dpo.lr=1e-4", *extra]
    settings, layout, _ = setup_run(repo, tiny_model, f"s3://{bucket}/runs", f"dpo-{method}", *overrides)
    base = str(tiny_model)
    if method == "full":
        base = f"s3://{bucket}/models/tiny"
        Storage.open(base, settings.storage).put_dir(str(tiny_model), "")
    pairs = dpo_pairs(repo)
    checkpoints = "dpo/train-dpo" if method == "full" else "dpo/checkpoints"  # jobs.train's folder
    killed: list = []
    killer = kill_one_worker_after_checkpoints(layout, checkpoints, killed)
    if method == "full":
        layout.store.write_jsonl("dpo/pairs.jsonl", pairs)
        target = Target("dpo", "train-dpo", "dpo/model", f"dpo {method}")
        result = train(settings, layout, target, base, [layout.store.uri("dpo/pairs.jsonl")], method="dpo")
        export_uri, metrics = result.export_uri, result.metrics
    else:
        layout.store.write_jsonl("pairs-alpaca.jsonl", [
            {"instruction": p["prompt"][0]["content"], "input": "", "chosen": p["chosen"][0]["content"],
             "rejected": p["rejected"][0]["content"]} for p in pairs])
        args = ["--config", str(repo / "configs/tiny.yaml"), "--storage", f"s3://{bucket}/runs",
                "--run-name", "dpo-lora", "--method", "dpo", "--name", "dpo", "--init-model", base,
                "--data", layout.store.uri("pairs-alpaca.jsonl"),
                *[a for o in [f"model.base={tiny_model}", "training.cutoff_len=256", *overrides] for a in ("--set", o)]]
        assert train_job.main(args) == 0
        summary = layout.store.read_json("dpo/summary.json")
        assert summary["method"] == "dpo" and summary["records"] == len(pairs) and summary["set_aside"] == 0
        export_uri, metrics = summary["model"], summary["training"]
    killer.join(timeout=5)
    assert killed and isinstance(killed[0], int), killed
    assert export_uri == f"s3://{bucket}/runs/dpo-{method}/dpo/model"
    assert any(n.startswith("checkpoint_") for n in layout.store.list(checkpoints)), "no Ray Train checkpoint on S3"
    assert metrics["method"] == "dpo" and metrics["pairs"] == len(pairs)
    assert metrics["resumed_from_step"] >= 4, "the restarted workers did not resume from a checkpoint"
    assert metrics["steps"] == 24
    marker = layout.store.read_json(f"dpo/model/{EXPORT_MARKER}")
    assert marker["export_check"]["max_abs_logit_diff"] < 1e-3
    reference_check(export_uri, marker, tiny_model, method == "lora", tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    policy = reload(export_folder(export_uri, tmp_path), str(tiny_model), method == "lora")
    reference = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    margin = ((answer_logps(policy, tokenizer, pairs, "chosen") - answer_logps(reference, tokenizer, pairs, "chosen"))
              - (answer_logps(policy, tokenizer, pairs, "rejected")
                 - answer_logps(reference, tokenizer, pairs, "rejected")))
    print(f"dpo {method}: implicit reward margin {margin.mean():.3f}, positive on {(margin > 0).float().mean():.2f}")
    assert margin.mean() > 0.5 and (margin > 0).float().mean() >= 0.75, margin
