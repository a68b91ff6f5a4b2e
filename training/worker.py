"""What every Ray Train worker runs: load the model, tokenize and pack the round's SFT
examples, train with transformers' Trainer under DeepSpeed, report checkpoints to Ray Train,
and export the weights for serving.

Checkpoints: every `checkpoint_every_steps` the Trainer saves (DeepSpeed shards per rank plus
trainer state); each rank reports its own folder and Ray Train merges them into one
checkpoint on the run's storage (local or S3). A restarted worker group (a worker died) or a
rerun of the whole job with the same run name gets that checkpoint from
`ray.train.get_checkpoint()` and resumes from its step (or from an earlier one, if that one
is damaged: training/checkpoints.py).
"""

from __future__ import annotations

import gc
import math
import os
import shutil
import tempfile
import time

import ray.train
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
from transformers.integrations.deepspeed import unset_hf_deepspeed_config
from transformers.trainer_callback import PrinterCallback

from cluster.layout import EXPORT_MARKER
from cluster.logs import progress
from cluster.settings import Settings
from cluster.storage import Storage
from runtime.log import Progress, stamp
from training import packed_attention, sft_data
from training.deepspeed_config import deepspeed_config
from training.checkpoints import INNER, OWNER, pick_resume, write_manifest
from training.export import export_weights, require_safetensors_adapter


def fetch_dir(uri: str, settings: Settings, local: str) -> str:
    """A local folder for `uri`: itself when local, a download when it is on S3."""
    if not uri.startswith("s3://"):
        return uri
    store = Storage.open(uri, settings.storage)
    return store.get_dir("", local)


def read_examples(settings: Settings, files: list[str]) -> list[dict]:
    examples = []
    for uri in files:
        store = Storage.open(os.path.dirname(uri), settings.storage)
        examples.extend(store.read_jsonl(os.path.basename(uri)))
    return examples


def use_bf16(settings: Settings) -> bool:
    wanted = settings.training.bf16
    if wanted == "auto":
        return settings.training.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(wanted)


def load_model(cfg: dict, settings: Settings, local: str):
    t = settings.training
    base = fetch_dir(cfg["init_model"], settings, f"{local}/init-model")
    dtype = torch.bfloat16 if use_bf16(settings) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, use_safetensors=True)  # never a pickle
    tokenizer = AutoTokenizer.from_pretrained(base)
    if t.method == "lora":
        from peft import LoraConfig, PeftModel, get_peft_model

        if cfg.get("init_adapter"):
            adapter = fetch_dir(cfg["init_adapter"], settings, f"{local}/init-adapter")
            model = PeftModel.from_pretrained(model, require_safetensors_adapter(adapter), is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(
                r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
                target_modules=t.lora.target_modules, task_type="CAUSAL_LM",
            ))
    # With a KV cache, transformers skips the block-diagonal mask it builds from packed
    # position ids, and packed samples would attend to each other. export() turns it back on.
    model.config.use_cache = False
    return model, tokenizer, base


def build_dataset(examples: list[dict], tokenizer, settings: Settings):
    t = settings.training
    samples, counts = sft_data.encode_all(examples, tokenizer, t.cutoff_len, t.over_length)
    if not samples:
        raise ValueError(f"no trainable examples ({dict(counts)})")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collator = sft_data.Collator(t.packing, pad_id)
    if t.packing:
        dataset = sft_data.PackedRows(sft_data.pack(samples, t.cutoff_len), t.cutoff_len, pad_id)
    else:
        dataset = sft_data.PaddedSamples(samples)
    return dataset, collator, counts, sft_data.token_stats(samples)


class ReportToRay(TrainerCallback):
    """Prints progress on rank 0 and reports every saved checkpoint to Ray Train."""

    PRINT_EVERY_S = 30  # a step line at most this often, and the last step's always

    def __init__(self, label: str, rank: int, upload: str = "sync", owner: str | None = None):
        self.label, self.rank, self.steps, self.owner = label, rank, None, owner
        self.upload = ray.train.CheckpointUploadMode.ASYNC if upload == "async" else ray.train.CheckpointUploadMode.SYNC

    def on_train_begin(self, args, state, control, **kwargs):
        # global_step is the resumed checkpoint's step by now: those steps count as done, not
        # towards the rate and the ETA
        if self.rank == 0:
            self.steps = Progress("steps", state.max_steps, lambda line: progress(stamp(line, f"train {self.label}")),
                                  every_s=self.PRINT_EVERY_S, done=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.steps is None or not logs or "loss" not in logs or state.global_step <= self.steps.done:
            return
        self.steps.tick(n=state.global_step - self.steps.done,
                        records=f"loss {logs['loss']:.4f} lr {logs.get('learning_rate', 0):.2e}")

    def on_save(self, args, state, control, **kwargs):
        """A copy of the Trainer's checkpoint goes to Ray Train, which uploads it to the run's
        storage and deletes the copy: before this returns (sync), or while training goes on
        (async: the next steps run during the upload)."""
        source = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        staged = tempfile.mkdtemp(prefix=f"report-{state.global_step}-")
        shutil.copytree(source, os.path.join(staged, INNER), copy_function=link_or_copy)
        write_manifest(os.path.join(staged, INNER), self.rank)  # checked on resume: training/checkpoints.py
        checkpoint = ray.train.Checkpoint.from_directory(staged)
        if self.owner:  # which fine-tune of a run of several wrote it
            checkpoint.set_metadata({OWNER: self.owner})
        try:
            ray.train.report(
                {"step": state.global_step, "loss": last_loss(state)},
                checkpoint=checkpoint,
                checkpoint_upload_mode=self.upload, delete_local_checkpoint_after_upload=True,
            )
        except BaseException:  # not uploaded: the links would keep a whole checkpoint on disk
            shutil.rmtree(staged, ignore_errors=True)
            raise


def link_or_copy(src: str, dst: str) -> None:
    """A hard link where the two folders share a disk (no second copy of ~100 GB at 7B: the
    Trainer never rewrites a saved file, and deleting its folder leaves the link), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def last_loss(state) -> float | None:
    losses = [log["loss"] for log in state.log_history if "loss" in log]
    return losses[-1] if losses else None


class Arguments(TrainingArguments):
    """transformers' arguments with `warmup_steps` holding our `training.warmup_ratio`: the
    share of the run's optimizer steps spent warming up, rounded to the nearest step.
    transformers rounds a ratio *up*, and its linear warmup gives the first step a learning
    rate of 0, so a 2-step run with ratio 0.1 spent half its steps not learning."""

    def get_warmup_steps(self, num_training_steps: int) -> int:
        return warmup_steps(self.warmup_steps, num_training_steps)


def warmup_steps(ratio: float, num_training_steps: int) -> int:
    return int(math.floor(ratio * num_training_steps + 0.5))


def trainer_kwargs(settings: Settings, output_dir: str) -> dict:
    """transformers' arguments as `training.*` says; the SFT and the DPO Trainer share them."""
    t = settings.training
    every = t.checkpoint_every_steps
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        num_train_epochs=t.epochs,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a ratio: see Arguments.get_warmup_steps
        weight_decay=t.weight_decay,
        bf16=use_bf16(settings),
        activation_checkpointing=t.gradient_checkpointing,
        deepspeed=deepspeed_config(t),
        use_cpu=not t.use_gpu,
        logging_steps=1,
        save_strategy="steps" if every else "no",
        save_steps=every or 1,
        save_total_limit=1,
        report_to=list(settings.training.report_to) or "none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=settings.run.seed,
        average_tokens_across_devices=True,
    )


def training_args(settings: Settings, output_dir: str) -> TrainingArguments:
    return Arguments(**trainer_kwargs(settings, output_dir))


def sft_trainer(cfg: dict, settings: Settings, model, tokenizer, examples: list[dict], output_dir: str):
    """(Trainer, metrics of the data) for supervised fine-tuning on chat `messages`."""
    dataset, collate, counts, stats = build_dataset(examples, tokenizer, settings)
    if settings.training.packing:  # each packed sample attends to itself alone, at its own cost
        model.set_attn_implementation(packed_attention.register())
    trainer = Trainer(model=model, args=training_args(settings, output_dir), train_dataset=dataset,
                      data_collator=collate)
    world = ray.train.get_context().get_world_size()

    def data_metrics(seconds: float) -> dict:
        return {
            # label tokens this run processed (rank 0's share x ranks) per second of training
            "label_tokens_per_s": round(collate.label_positions * world / max(seconds, 1e-9), 1),
            "useful_token_ratio": collate.useful_token_ratio,  # measured on this rank's batches
            "packing": settings.training.packing,
            **stats,
            **{f"data.{k}": v for k, v in counts.items()},
        }
    return trainer, data_metrics


def no_optional_deepspeed_ops() -> None:
    """DeepSpeed builds its CPU shared-memory all-reduce with a JIT compile when it sets up its
    communication (deepspeed/comm/torch.py: ~35 s on two cores, and again in any process whose
    compiler flags differ from the cached build's, e.g. a `ray job submit` cluster's and an
    embedded one's). Only `inference_all_reduce` uses that op, never training. Which optional
    ops to build is read from `deepspeed.ops.__compatible_ops__`, a dict DeepSpeed fills lazily
    and keeps once set (its own comment: edits persist): set first, empty, nothing is built.
    Called in the worker: the driver imports this module but never DeepSpeed."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__ = {}


def train_func(cfg: dict) -> None:
    """`cfg["fine_tunes"]`, one after the other (training/trainer.py: `train_in_turn`). One that
    is exported already is passed over: a restarted worker group goes on where it stopped."""
    no_optional_deepspeed_ops()
    settings: Settings = cfg["settings"]
    store = Storage.open(cfg["run_root"], settings.storage)
    fine_tunes = cfg["fine_tunes"]
    for job in fine_tunes:
        if not store.exists(f"{job['export']}/{EXPORT_MARKER}"):
            # a run of several fine-tunes resumes each from its own checkpoints only
            fine_tune(job, settings, cfg["run_root"], owner=job["label"] if len(fine_tunes) > 1 else None)
            gc.collect()  # the last model, its optimizer and DeepSpeed's buffers, before the next


def fine_tune(job: dict, settings: Settings, run_root: str, owner: str | None) -> None:
    """One fine-tune: `job["method"]` "sft" or "dpo" (training/dpo.py); the rest is shared."""
    rank = ray.train.get_context().get_world_rank()
    # the last fine-tune's TrainingArguments registered its ZeRO-3 config globally, and it lives on
    # for as long as something still holds them: a model loaded then is built under ZeRO-3's
    # partitioning init on that rank alone, and the ranks' collectives deadlock. Each fine-tune
    # loads its model as the first does.
    unset_hf_deepspeed_config()
    torch.manual_seed(settings.run.seed)
    local = tempfile.mkdtemp(prefix=f"train-{job['label'].replace('/', '-').replace(' ', '-')}-")
    model, tokenizer, base_dir = load_model(job, settings, local)
    examples = read_examples(settings, job["data_files"])
    os.environ["TENSORBOARD_LOGGING_DIR"] = f"{local}/tensorboard"  # read by transformers' TensorBoardCallback
    if job["method"] == "dpo":
        from training.dpo import dpo_trainer

        trainer, data_metrics = dpo_trainer(job, settings, model, tokenizer, examples, f"{local}/rank-{rank}")
    else:
        trainer, data_metrics = sft_trainer(job, settings, model, tokenizer, examples, f"{local}/rank-{rank}")
    trainer.add_callback(ReportToRay(job["label"], rank, settings.training.checkpoint_upload, owner))
    trainer.remove_callback(PrinterCallback)  # ReportToRay prints a step line every few seconds instead
    start = time.time()
    warn = progress if rank == 0 else (lambda message: None)
    resume, resumed_from, skipped = pick_resume(ray.train.get_checkpoint(), local, warn, owner)
    if resume and rank == 0:
        progress(stamp(f"resuming from the checkpoint of step {resumed_from}", f"train {job['label']}"))
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - start
    history = [{"step": log["step"], "loss": log["loss"]} for log in trainer.state.log_history if "loss" in log]
    metrics = {
        "method": job["method"],
        "train_loss": output.training_loss,
        "steps": trainer.state.global_step,
        "resumed_from_step": resumed_from,
        "skipped_checkpoints": skipped,
        "seconds": round(seconds, 2),
        **data_metrics(seconds),
        "loss_history": history,
    }
    export_weights(trainer, tokenizer, settings, run_root, job["export"], base_dir, local, rank,
                   metrics, bf16=use_bf16(settings))
    if rank == 0 and os.path.isdir(f"{local}/tensorboard"):
        # rank 0's event file, uploaded once training is over (after a worker restart it holds
        # the steps from the resumed checkpoint on)
        Storage.open(run_root, settings.storage).put_dir(f"{local}/tensorboard", job["tensorboard"])
    shutil.rmtree(local, ignore_errors=True)
