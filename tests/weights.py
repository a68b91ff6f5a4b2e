"""New weights made from the tiny model, for tests (and bench/handoff.py) that need a model
whose greedy answers differ from the base model's: what a round of training would produce,
without the training.

* `perturbed_copy`: full weights, a copy of the model with its output layer perturbed.
* `new_adapter`: LoRA weights with non-zero B matrices (peft starts B at zero, which would
  change nothing).
"""

from __future__ import annotations

import shutil


def perturbed_copy(src, dst, seed: int):
    """A copy of the model at `src` written to `dst`, its output layer perturbed so that greedy
    answers differ; returns `dst`."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(f"{dst}/model.safetensors")
    head = weights["lm_head.weight"]
    g = torch.Generator().manual_seed(seed)
    weights["lm_head.weight"] = head + 0.5 * torch.randn(head.shape, generator=g) * head.std()
    save_file(weights, f"{dst}/model.safetensors", metadata={"format": "pt"})
    return dst


def new_adapter(base, out, seed: int):
    """New LoRA weights for the model at `base`, saved to `out`; returns the peft model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(out)
    return model
