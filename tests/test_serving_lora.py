"""LoRA mode: one engine holds the base model; each role is an adapter that Serve LLM loads
from S3 on first request. A new round's adapter answers within seconds, without a redeploy.
Runs on the shared Ray of tests/tiny_served.py, after the tests that use its served pair."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.client import LLMClient
from actors.serving import Serving
from cluster.layout import RunLayout
from cluster.settings import load_settings
from cluster.storage import Storage
from longform.model import user
from tests.weights import new_adapter

pytestmark = pytest.mark.cluster
PROMPT = "Write a detailed essay about rain."
TOKENS = 24


def greedy(model, tokenizer) -> str:
    ids = tokenizer.apply_chat_template(user(PROMPT), add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=TOKENS, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def ask(serving: Serving, model_id: str, via: str = "http") -> str:
    """Over HTTP, or through the deployment handle with the adapter as Serve's multiplexed model
    id (`serving.endpoint`, what the pipeline's workers use)."""
    client = LLMClient(serving.base_url if via == "http" else serving.endpoint, max_retries=2)

    async def go():
        try:
            return await client.chat(model_id, user(PROMPT), temperature=0.0, max_tokens=TOKENS)
        finally:
            await client.aclose()
    return asyncio.run(go())


@pytest.mark.replaces_served(3)
def test_adapters_per_role_and_a_new_adapter_in_seconds(repo, tiny_model, tmp_path, s3_server, s3_bucket, shared_ray):
    from ray import serve

    root = f"s3://{s3_bucket}/runs"
    settings = load_settings(repo / "configs/tiny.yaml", [
        f"model.base={tiny_model}", f"storage.root={root}", "run.name=lora",
        "serving.mode=lora", "training.method=lora", "serving.engine_kwargs.max_model_len=1024"])
    layout = RunLayout.create(Storage.open(root, settings.storage), "lora")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    expected = {}
    for role, seed in (("generator", 1), ("extender", 2)):
        model = new_adapter(tiny_model, tmp_path / role, seed)
        expected[role] = greedy(model, tokenizer)
        layout.store.put_dir(str(tmp_path / role), f"round-1/{role}")
    base_answer = greedy(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), tokenizer)
    assert len({base_answer, expected["generator"], expected["extender"]}) == 3

    try:
        serving = Serving(settings, run_store=layout.store)
        serving.release()  # the shared Ray's full-mode app, if one is up: lora mode deploys its own
        serving.deploy({"generator": settings.model.base, "extender": settings.model.base})
        assert ask(serving, serving.model_id("generator")) == base_answer  # no adapter yet: the base

        trained_at = time.time()  # the round's adapters exist
        serving.deploy({r: layout.store.uri(f"round-1/{r}") for r in ("generator", "extender")})
        answers = {r: ask(serving, serving.model_id(r)) for r in ("generator", "extender")}
        handoff = time.time() - trained_at
        print(f"\nhand-off (lora mode, two new adapters): answering {handoff:.2f} s after training finished")
        assert answers == expected
        assert {r: ask(serving, serving.model_id(r), via="handle") for r in answers} == expected
        assert serving.model_id("generator") != serving.model_id("extender")
        assert handoff < 30
    finally:
        serve.shutdown()
