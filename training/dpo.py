"""DPO inside a Ray Train worker: TRL's DPOTrainer on `prompt` / `chosen` / `rejected` messages.

Why TRL's trainer: it is transformers' Trainer underneath, so everything the SFT path relies on
holds unchanged - DeepSpeed ZeRO-3 from `training.*`, checkpoints saved by the Trainer and
reported to Ray Train (`ReportToRay`), resume through `resume_from_checkpoint`, the export and
its logit check (training/export.py). What it adds is the part worth not writing twice: the
chat-template tokenisation of pairs, the losses (`dpo.loss_type`, LD-DPO's `dpo.ld_alpha`), and
the reference model:
    LoRA   the reference is the model with the adapter switched off (a fresh adapter), or a
           frozen copy of the adapter it continues (`init_adapter`, e.g. the final SFT's)
    full   a frozen copy of the starting weights, loaded again and sharded by ZeRO-3 like the
           policy (prepare_deepspeed), so it costs memory per rank, not a whole model
Pairs longer than `training.cutoff_len` tokens are cut at the end (TRL keeps the start).
"""

from __future__ import annotations

import datasets
from trl import DPOConfig, DPOTrainer

from cluster.settings import Settings
from training.worker import trainer_kwargs, warmup_steps

HISTORY = ("rewards/margins", "rewards/accuracies")  # logged per step besides the loss


class DPOArguments(DPOConfig):
    """TRL's arguments with the warmup rounded as the SFT path rounds it (training/worker.py)."""

    def get_warmup_steps(self, num_training_steps: int) -> int:
        return warmup_steps(self.warmup_steps, num_training_steps)


def dpo_arguments(settings: Settings, output_dir: str) -> DPOArguments:
    t, d = settings.training, settings.dpo
    kwargs = trainer_kwargs(settings, output_dir)
    kwargs.update(learning_rate=d.lr or t.lr, num_train_epochs=d.epochs or t.epochs,
                  gradient_checkpointing=t.gradient_checkpointing)  # TRL's own default is True
    return DPOArguments(**kwargs, beta=d.beta, loss_type=[d.loss_type], ld_alpha=d.ld_alpha,
                        max_length=t.cutoff_len, precompute_ref_log_probs=False)


def dpo_trainer(cfg: dict, settings: Settings, model, tokenizer, examples: list[dict], output_dir: str):
    """(DPOTrainer, metrics of the data) for the pairs in `examples`."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [{"prompt": e["prompt"], "chosen": e["chosen"], "rejected": e["rejected"]} for e in examples]
    if not rows:
        raise ValueError("no preference pairs to train on")
    trainer = DPOTrainer(model=model, args=dpo_arguments(settings, output_dir),
                         train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer)

    def data_metrics(seconds: float) -> dict:
        history = [{"step": log["step"], **{k: round(log[k], 4) for k in HISTORY if k in log}}
                   for log in trainer.state.log_history if "loss" in log]
        return {"pairs": len(rows), "beta": settings.dpo.beta, "loss_type": settings.dpo.loss_type,
                "pairs_per_s": round(len(rows) * trainer.args.num_train_epochs / max(seconds, 1e-9), 3),
                "reward_history": history}
    return trainer, data_metrics
