"""LoRA mode: one engine holds the base model; each role is an adapter that Serve LLM loads
from S3 on first request. A new round's adapter answers within seconds, without a redeploy,
and the loop itself runs in this mode on the same engine: a round, then the run resumed at
round 2. Runs on the shared Ray of tests/tiny_served.py, after the tests that use its served
pair."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.client import LLMClient
from actors.serving import ADAPTERS_DIR, Serving
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


@dataclass
class LoraApp:
    serving: Serving
    layout: RunLayout
    overrides: list[str]  # --set arguments that give a job this app's settings and run


@pytest.fixture(scope="module")
def lora_app(repo, tiny_model, s3_server, shared_ray):
    """The tiny model served in lora mode on the shared Ray, for the run `lora` on S3 (whose
    adapters folder Serve LLM loads from); Serve is shut down after the module."""
    import boto3
    from ray import serve

    bucket = "t-lora-app"
    boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name="us-east-1").create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/runs"
    overrides = [f"model.base={tiny_model}", f"storage.root={root}", "run.name=lora",
                 "serving.mode=lora", "training.method=lora", "serving.engine_kwargs.max_model_len=1024"]
    settings = load_settings(repo / "configs/tiny.yaml", overrides)
    layout = RunLayout.create(Storage.open(root, settings.storage), "lora")
    serving = Serving(settings, run_store=layout.store)
    try:
        serving.release()  # the shared Ray's full-mode app, if one is up: lora mode deploys its own
        serving.deploy({"generator": settings.model.base, "extender": settings.model.base})
        yield LoraApp(serving, layout, overrides)
    finally:
        serve.shutdown()


@pytest.mark.replaces_served(3)
def test_adapters_per_role_and_a_new_adapter_in_seconds(lora_app, tiny_model, tmp_path):
    serving, layout = lora_app.serving, lora_app.layout
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    base_answer = greedy(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), tokenizer)
    expected, seed = {}, 0
    for role in ("generator", "extender"):
        # a random adapter may leave the greedy answer as it was: new ones until this role's
        # answer is neither the base's nor the other role's, so that an answer tells which
        # weights gave it (which seed gets there depends on the tiny model's build)
        for seed in range(seed + 1, seed + 11):
            answer = greedy(new_adapter(tiny_model, tmp_path / role, seed), tokenizer)
            if answer not in (base_answer, *expected.values()):
                break
        expected[role] = answer
        layout.store.put_dir(str(tmp_path / role), f"handmade/{role}")
    assert len({base_answer, expected["generator"], expected["extender"]}) == 3

    assert ask(serving, serving.model_id("generator")) == base_answer  # no adapter yet: the base

    trained_at = time.time()  # the round's adapters exist
    serving.deploy({r: layout.store.uri(f"handmade/{r}") for r in ("generator", "extender")})
    answers = {r: ask(serving, serving.model_id(r)) for r in ("generator", "extender")}
    handoff = time.time() - trained_at
    print(f"\nhand-off (lora mode, two new adapters): answering {handoff:.2f} s after training finished")
    assert answers == expected
    assert {r: ask(serving, serving.model_id(r), via="handle") for r in answers} == expected
    assert serving.model_id("generator") != serving.model_id("extender")
    assert serving.last_handoff == "adapters published"  # into the running app, not a redeploy


@pytest.mark.replaces_served(3)
def test_the_lora_loop_runs_a_round_then_resumes_at_the_second(lora_app, repo, tmp_path, capsys):
    """The loop in lora mode, on the engine above, small: one round; then the same run with
    two rounds, which resumes at round 2. Round 2 draws from a pool that round 1's self-instruct
    grew, trains each role on from round 1's adapter, and its adapters are what answer."""
    from safetensors.torch import load

    from jobs.self_lengthen import main

    inputs = {"seeds": ("tiny_seeds.jsonl", 4), "probes": ("tiny_probes.jsonl", 2)}
    for name, (source, n) in inputs.items():
        lines = (repo / "configs/seeds" / source).read_text(encoding="utf-8").splitlines()[:n]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["--config", str(repo / "configs/tiny.yaml")]
    for override in [*lora_app.overrides, f"synthesis.seeds={tmp_path / 'seeds.jsonl'}",
                     f"probe.file={tmp_path / 'probes.jsonl'}", "synthesis.shard_size=4",
                     "synthesis.self_instruct.new_per_round=2",
                     "synthesis.self_instruct.max_candidates=64", "training.epochs=1", "training.num_workers=1",
                     "training.grad_accum=16",  # a round's few packed rows: one optimizer step
                     # every text that passes the rules is trained on: length-biased sampling always
                     # drops a shard's shortest text, so with a handful of texts a round could keep none,
                     # train nothing, and round 2 would start from the base (seen once in CI)
                     "synthesis.method.length_biased_sampling=false",
                     "final.enabled=false"]:
        args += ["--set", override]
    store = lora_app.layout.store

    assert main([*args, "--set", "run.rounds=1"]) == 0
    first = store.read_json("summary.json")
    round1_files = {f"round-1/{kind}/{name}": store.read_bytes(f"round-1/{kind}/{name}")
                    for kind in ("instructions", "drafts", "extensions") for name in store.list(f"round-1/{kind}")}
    capsys.readouterr()
    assert main([*args, "--set", "run.rounds=2"]) == 0
    out = capsys.readouterr().out
    summary = store.read_json("summary.json")

    assert "resuming run 'lora' at round 2" in out and "round 1: synthesizing" not in out, out[-3000:]
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["rounds"][0] == first["rounds"][0]
    assert round1_files and {f: store.read_bytes(f) for f in round1_files} == round1_files  # not run again
    # the pool grew: round 2 drafted from the seeds and what both rounds' self-instruct added
    added = [(r.get("self_instruct") or {}).get("self_instruct.accepted", 0) for r in summary["rounds"]]
    tallies = [r["synthesis"]["tally"]["instructions"] for r in summary["rounds"]]
    print(f"\nself-instruct per round: {[r.get('self_instruct') for r in summary['rounds']]}")
    # (the tiny model's judge says yes to few candidates: up to 64 a round, so that some pass)
    assert tallies == [4 + added[0], 4 + added[0] + added[1]] and sum(added) > 0, \
        (tallies, [r.get("self_instruct") for r in summary["rounds"]])
    lr = load_settings(repo / "configs/tiny.yaml", lora_app.overrides).training.lr
    for role in ("generator", "extender"):
        first_uri, second_uri = (store.uri(f"round-{k}/{role}") for k in (1, 2))
        assert f"round 2: {role} trained from {first_uri} on" in out, out[-3000:]
        # and it did: an Adam step moves a weight by at most about lr, and a new adapter's B
        # matrices start at zero. Round 2's B lies within its own steps of round 1's, and
        # farther from zero than those steps reach.
        steps = summary["rounds"][1]["training"][role]["metrics"]["steps"]
        assert steps == summary["rounds"][0]["training"][role]["metrics"]["steps"] == 1
        b = [torch.cat([t.flatten() for name, t in sorted(load(store.read_bytes(
            f"round-{k}/{role}/adapter_model.safetensors")).items()) if "lora_B" in name]) for k in (1, 2)]
        moved, reach = float((b[1] - b[0]).abs().max()), float(b[1].abs().max())
        assert moved <= 1.05 * steps * lr < reach, (role, steps, moved, reach)
        # round 2's adapter is what the role serves now: published under a new name, byte for byte
        published = [store.read_bytes(f"{ADAPTERS_DIR}/{name}/adapter_model.safetensors")
                     for name in store.list(ADAPTERS_DIR) if name.startswith(role)]
        assert store.read_bytes(f"round-2/{role}/adapter_model.safetensors") in published
        assert f"{role}={second_uri}" in out
    assert out.count("adapters published") == 2  # the resumed job's first deploy and round 2's
