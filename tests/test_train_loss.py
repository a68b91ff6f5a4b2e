"""The SFT loss weighs every label token the same, whichever micro-batch it is in.

training/sft_data.py says the Trainer averages the loss over all label tokens of the global
batch (all accumulation steps, all devices). Here one optimizer step is run through the
project's own path (training.worker.sft_trainer: build_dataset, the Collator, training_args
with its DeepSpeed ZeRO-3 config) on a tiny Qwen2 built from code, in this process, on the CPU,
with grad_accum=2 and two micro-batches that hold different numbers of label tokens. The
gradient DeepSpeed holds just before its optimizer step is compared with two references
computed by hand on the same micro-batches:

* the gradient of sum(token losses) / (label tokens of both micro-batches): it must match;
* the gradient of the mean of the two micro-batches' own means (what a Trainer that divides
  each micro-batch's mean by grad_accum gives): it must not.

How it works in transformers: the Trainer counts the label tokens of all micro-batches of the
step (`num_items_in_batch`, over labels[..., 1:] since the loss is shifted), the model divides
its summed token loss by that count, and under DeepSpeed the Trainer turns off DeepSpeed's own
division by the accumulation steps (`scale_wrt_gas=False`).

Across devices: with `average_tokens_across_devices=True` the Trainer sums the count over all
ranks and multiplies each rank's loss by the number of ranks, which cancels DeepSpeed's average
of the gradients over ranks, so the step's gradient is the sum of every rank's token losses over
every rank's label tokens. Running that takes a distributed launch of two processes; this file
checks that trainer_kwargs sets it and that it reaches the Trainer's arguments.

The first DeepSpeed run on a machine compiles its CPU communication op (about a minute, cached
in ~/.cache/torch_extensions, as the cluster tests also do); later runs take a few seconds.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.nn.functional as F

from cluster.settings import load_settings
from training.packed_attention import PACKED
from training.sft_data import IGNORE

QUESTION = {"role": "user", "content": "Write about bees."}


def chat(repeats: int) -> dict:
    return {"messages": [QUESTION, {"role": "assistant", "content": "Bees make honey. " * repeats}]}


# cutoff_len 80: the 8-repeat answer (72 tokens, 59 label tokens) fills one row alone and the
# two 1-repeat answers (23 tokens, 10 label tokens each) share the other: 59 against 20 labels.
# Without packing, the 8- and 1-repeat answers are one micro-batch each: 59 against 10.
CASES = {
    "packed": (["training.packing=true"], [chat(8), chat(1), chat(1)]),
    "padded": (["training.packing=false"], [chat(8), chat(1)]),
}


@pytest.fixture()
def one_process_group(monkeypatch):
    """A gloo process group of one rank, as Ray Train would set up for a worker; torch,
    DeepSpeed, accelerate and transformers are left as they were found afterwards."""
    import deepspeed.comm.comm as ds_comm
    import torch.distributed as dist
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from training.worker import no_optional_deepspeed_ops

    no_optional_deepspeed_ops()  # as the worker's train_func does: no JIT build of an op training never uses
    saved_env = dict(os.environ)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        if ds_comm.cdb is not None and ds_comm.cdb.is_initialized():
            ds_comm.destroy_process_group()
        ds_comm.cdb = None
        if dist.is_initialized():
            dist.destroy_process_group()
        AcceleratorState._reset_state(reset_partial_state=True)
        unset_hf_deepspeed_config()
        os.environ.clear()
        os.environ.update(saved_env)


def tiny_qwen2(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return Qwen2ForCausalLM(config)


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([grads[name].flatten().float() for name in sorted(grads)])


def first_step_gradient(monkeypatch, settings, model, tokenizer, examples, output_dir):
    """(gradient before the first optimizer step, the micro-batches that step saw, trainer)
    from training.worker.sft_trainer's Trainer."""
    import deepspeed
    import ray.train
    from deepspeed.utils import safe_get_full_grad

    from training import worker

    class OneRank:
        def get_world_size(self):
            return 1

    monkeypatch.setattr(ray.train, "get_context", lambda: OneRank())  # sft_trainer asks it for its metrics
    trainer, _ = worker.sft_trainer({}, settings, model, tokenizer, examples, output_dir)

    batches: list[dict] = []
    collate = trainer.data_collator  # the project's Collator; batches are recorded as they are made

    def recording(items):
        out = collate(items)
        batches.append({k: v.clone() for k, v in out.items()})
        return out

    trainer.data_collator = recording
    grads: dict[str, torch.Tensor] = {}
    step = deepspeed.runtime.engine.DeepSpeedEngine.step

    def capture_then_step(engine, *args, **kwargs):
        if not grads:  # after the last micro-batch's backward, before clipping and the update
            for name, param in engine.module.named_parameters():
                grads[name] = safe_get_full_grad(param).detach().clone()
        return step(engine, *args, **kwargs)

    monkeypatch.setattr(deepspeed.runtime.engine.DeepSpeedEngine, "step", capture_then_step)
    trainer.train()
    return grads, batches, trainer


def reference_gradients(model, batches):
    """Gradients of the token mean over all micro-batches and of the mean of micro-batch means,
    with the cross-entropy written out here rather than taken from transformers."""
    model.train()
    sums, counts = [], []
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float()
        targets = batch["labels"][:, 1:]  # position t predicts token t+1
        sums.append(F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                    reduction="sum"))
        counts.append(int((targets != IGNORE).sum()))

    def gradient(loss):
        model.zero_grad()
        loss.backward(retain_graph=True)
        return {name: p.grad.detach().clone() for name, p in model.named_parameters()}

    token_mean = gradient(sum(sums) / sum(counts))
    mean_of_means = gradient(sum(s / c for s, c in zip(sums, counts)) / len(counts))
    return token_mean, mean_of_means, counts


@pytest.mark.parametrize("case", list(CASES))
def test_one_step_weighs_every_label_token_the_same(case, repo, tiny_model, tmp_path, monkeypatch,
                                                     one_process_group):
    from transformers import AutoTokenizer

    overrides, examples = CASES[case]
    settings = load_settings(repo / "configs/tiny.yaml", [
        "model.base=unused", "training.method=full", "training.zero_stage=3", "training.micro_batch_size=1",
        "training.grad_accum=2", "training.cutoff_len=80", "training.epochs=1", "training.warmup_ratio=0",
        "training.bf16=false", "training.gradient_checkpointing=false", "training.report_to=[]", *overrides])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = tiny_qwen2(tokenizer)
    reference = tiny_qwen2(tokenizer)
    reference.load_state_dict(model.state_dict())
    model.config.use_cache = False  # as load_model does: packed rows need the block-diagonal mask
    reference.config.use_cache = False

    trained, batches, trainer = first_step_gradient(monkeypatch, settings, model, tokenizer, examples,
                                                    str(tmp_path / "out"))

    assert trainer.args.gradient_accumulation_steps == 2 and trainer.args.deepspeed
    # packed rows train with the per-sample attention (training/packed_attention.py), while the
    # reference below keeps transformers' block-diagonal mask: their gradients must agree
    assert (model.config._attn_implementation == PACKED) == (case == "packed")
    assert trainer.args.average_tokens_across_devices is True
    assert trainer.state.global_step == 1 and len(batches) == 2
    token_mean, mean_of_means, counts = reference_gradients(reference, batches)
    assert counts[0] != counts[1] and min(counts) > 0, counts
    assert sorted(trained) == sorted(token_mean)

    got, want, other = flat(trained), flat(token_mean), flat(mean_of_means)
    assert (want - other).norm() > 0.05 * want.norm()  # the two weightings do differ here
    assert (got - want).norm() <= 1e-4 * want.norm(), "the step's gradient is not the mean over all label tokens"
    assert (got - other).norm() > 0.05 * other.norm()


def test_tokens_are_counted_across_devices(repo, tmp_path, one_process_group):
    """average_tokens_across_devices: from trainer_kwargs to the TrainingArguments the SFT and
    DPO Trainers get (see the module docstring for what it does with several ranks)."""
    from training.worker import trainer_kwargs, training_args

    settings = load_settings(repo / "configs/tiny.yaml", ["model.base=unused", "training.report_to=[]"])
    assert trainer_kwargs(settings, str(tmp_path))["average_tokens_across_devices"] is True
    args = training_args(settings, str(tmp_path))
    assert args.average_tokens_across_devices is True
