"""Exporting trained weights for serving, and checking that the export is the trained model.

Full fine-tuning exports consolidated safetensors (ZeRO-3 gathers the 16-bit weights onto rank
0); LoRA exports the adapter. Either way the folder also holds the tokenizer and the config,
so vLLM and transformers load it as it is. Before the folder is uploaded, rank 0 reloads it
with transformers (plus peft for an adapter) and compares its logits on a fixed prompt with
the logits of the model that was just trained (computed by all ranks under ZeRO-3): an export
that does not reproduce them is an error, not a silent bad checkpoint. The marker file written
last holds the file list, the training metrics and that comparison.

Weights are read as safetensors only, here and wherever training loads a model or an adapter
(`from_pretrained(..., use_safetensors=True)`, `require_safetensors_adapter`): a folder that
holds only pickled weights (pytorch_model.bin, adapter_model.bin) is refused, not unpickled.
"""

from __future__ import annotations

import os

import torch
from transformers import AutoModelForCausalLM
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from cluster.layout import EXPORT_MARKER
from cluster.settings import Settings
from cluster.storage import Storage

VERIFY_CHAT = [{"role": "user", "content": "Write a detailed essay about rain."}]
TOP_K = 32  # logits kept in the marker, so anyone can check the export later


class ExportMismatch(RuntimeError):
    pass


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def require_safetensors_adapter(folder: str) -> str:
    """`folder`, if its LoRA adapter is in safetensors (peft would fall back to a pickled
    adapter_model.bin)."""
    if not os.path.isfile(os.path.join(folder, ADAPTER_WEIGHTS)):
        found = ", ".join(sorted(os.listdir(folder))) if os.path.isdir(folder) else "no such folder"
        raise ValueError(f"{folder}: no {ADAPTER_WEIGHTS} (found: {found}); pickled weights are not loaded")
    return folder


def verify_ids(tokenizer) -> torch.Tensor:
    text = tokenizer.apply_chat_template(VERIFY_CHAT, tokenize=False, add_generation_prompt=True)
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


@torch.no_grad()
def last_logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device), use_cache=False).logits[0, -1].float().cpu()


def reload(folder: str, base: str, lora: bool):
    # Training is over: stop transformers from wrapping this load in deepspeed.zero.Init,
    # which would wait for the other ranks to take part in a load only rank 0 does.
    unset_hf_deepspeed_config()
    if not lora:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
    return PeftModel.from_pretrained(model, require_safetensors_adapter(folder))


def export_weights(trainer, tokenizer, settings: Settings, run_root: str, export_rel: str,
                   base_dir: str, local: str, rank: int, metrics: dict, bf16: bool) -> None:
    """Called on every rank (gathering ZeRO-3 weights is collective); rank 0 writes."""
    ids = verify_ids(tokenizer)
    trained = last_logits(trainer.model, ids)  # all ranks: ZeRO-3 gathers parameters per layer
    out = f"{local}/export"
    trainer.model.config.use_cache = True  # for people who generate with transformers
    trainer.save_model(out)
    if rank != 0:
        return
    tokenizer.save_pretrained(out)
    if os.path.exists(f"{out}/training_args.bin"):  # a pickle: serving folders hold safetensors and JSON
        os.remove(f"{out}/training_args.bin")
    reloaded = last_logits(reload(out, base_dir, settings.training.method == "lora"), ids)
    diff = (reloaded - trained).abs().max().item()
    # the reload computes in fp32; a bf16-trained model's own logits carry bf16 rounding
    tolerance = (5e-2 if bf16 else 1e-3) * max(1.0, trained.abs().max().item())
    if not diff <= tolerance:
        raise ExportMismatch(f"the exported weights in {out} do not reproduce the trained model: "
                             f"max |logit difference| {diff:.3g}")
    top = torch.topk(trained, TOP_K)
    check = {"prompt": VERIFY_CHAT, "max_abs_logit_diff": diff,
             "top_ids": top.indices.tolist(), "top_logits": top.values.tolist()}
    store = Storage.open(run_root, settings.storage)
    store.delete(export_rel)
    store.put_dir(out, export_rel)
    store.write_json(f"{export_rel}/{EXPORT_MARKER}",
                     {"files": sorted(os.listdir(out)), "metrics": metrics, "export_check": check})
