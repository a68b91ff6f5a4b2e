"""The DeepSpeed config, from the training settings. "auto" values are filled by the
transformers Trainer from its own arguments, so batch size, accumulation, clipping and
precision are stated once."""

from __future__ import annotations

from cluster.settings import TrainingSection


def deepspeed_config(t: TrainingSection) -> dict:
    zero: dict = {"stage": t.zero_stage, "overlap_comm": True, "contiguous_gradients": True}
    if t.zero_stage == 3:
        # rank 0 writes consolidated 16-bit weights on save: what vLLM and transformers load
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if t.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": t.use_gpu}
    if t.offload_params and t.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": t.use_gpu}
    config = {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        # the Trainer's torch AdamW is used as a client optimizer, which spares the ~50 s
        # JIT build of DeepSpeed's fused Adam; CPU offload needs DeepSpeed's own CPU Adam
        "zero_allow_untested_optimizer": True,
        "wall_clock_breakdown": False,
    }
    if t.offload_optimizer:
        config["optimizer"] = {"type": "AdamW", "params": {"lr": "auto", "weight_decay": "auto",
                                                           "betas": "auto", "eps": "auto"}}
    return config
