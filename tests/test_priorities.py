"""Request priorities for engines that schedule by priority (vLLM's `scheduling_policy: priority`
admits the waiting request with the LOWEST `priority` first): the order they give a round's
calls (longform/params.py, `chain_priority`), that a model whose engine does not schedule by
priority gets no such field, and that the served client puts it into the request body only for
the roles whose engine_kwargs say `scheduling_policy: priority`."""

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from actors.client import LLMClient
from actors.synthesis import RoundPlan, priority_models
from actors.synthetic_text import synthetic_text
from cluster.settings import load_settings
from longform.drafts import write_draft
from longform.extension import extend, extension_step
from longform.params import Decoding, MethodParams
from longform.prompts import load_prompts
from longform.round import RoundSpec, run_shard
from tests import round_data
from tests.scripted import ScriptedModel

TINY = Path(__file__).resolve().parents[1] / "configs/tiny.yaml"
PROMPTS = load_prompts()
PLAN = RoundPlan(round=1, base_url="http://unused.invalid/v1",
                 model_ids={"generator": "gen-id", "extender": "ext-id"}, versions={})


def prioritized(model):
    model.by_priority = True  # what actors.client.RoleModel says when its engine schedules by priority
    return model


def priorities(model, kind=None) -> list[int]:
    return [c["sampling"]["priority"] for c in model.calls if kind in (None, c["kind"])]


def test_a_retried_draft_goes_before_first_attempts():
    answers = iter(["An answer cut off in the middle", "A complete answer ends here."])
    model = prioritized(ScriptedModel(chat=lambda prompt, sampling: next(answers)))
    draft = asyncio.run(write_draft("Write.", model, Decoding(), attempts=3, key="k"))
    assert draft.attempts == 2 and draft.rejections == ["no_final_punctuation"]
    first, retry = priorities(model)
    assert retry < first


def test_extension_calls_deeper_and_retried_first_longer_texts_first():
    draft = synthetic_text("en", 60)
    longer = synthetic_text("en", 120)
    tails = iter(["\n\nShort end.", "\n\n" + longer])  # attempt 1 does not grow 1.2x
    model = prioritized(ScriptedModel(chat=lambda prompt, s: synthetic_text("en", 30),
                                      cont=lambda prompt, prefix, s: next(tails)))
    params = MethodParams(extension_attempts=2, extension_steps=1)
    result = asyncio.run(extend("Write.", draft, "en", model, PROMPTS, params, Decoding(), "k"))
    assert result.attempts == 2 and result.text.endswith(longer.strip())  # the second attempt's
    (s1_a1, s1_a2), (s2_a1, s2_a2) = priorities(model, "chat"), priorities(model, "continue")
    assert s2_a1 < s1_a1 and s2_a2 < s1_a2  # stage 2 before stage 1 of the same text
    assert s1_a2 < s1_a1 and s2_a2 < s2_a1  # the second attempt before first attempts

    # a longer text's calls go before a shorter text's, whatever their depth
    longer = prioritized(ScriptedModel(chat=lambda p, s: synthetic_text("en", 30), cont=lambda p, prefix, s: " End."))
    asyncio.run(extension_step("Write.", synthetic_text("en", 300), "en", longer, PROMPTS, params, Decoding(), "k"))
    assert max(priorities(longer)) < min(priorities(model))


def round_calls(mark: bool) -> tuple[ScriptedModel, ScriptedModel]:
    generator, extender = round_data.models()
    if mark:
        prioritized(generator), prioritized(extender)
    spec = RoundSpec(round=1, seed=0, params=MethodParams(), decoding=Decoding(seed=7), prompts=PROMPTS)
    result = asyncio.run(run_shard("s0", round_data.INSTRUCTIONS, generator, extender, spec))
    assert result.tally["extensions.passed"] > 0
    return generator, extender


def test_in_a_round_every_draft_goes_before_every_extension_call():
    generator, extender = round_calls(mark=True)
    assert max(priorities(generator)) < min(priorities(extender))
    by_length = sorted((len(c["messages"][-1]["content"]), c["sampling"]["priority"])
                       for c in extender.calls if c["kind"] == "continue")  # stage 2 sees the whole text
    assert by_length[-1][1] < by_length[0][1]


def test_without_priority_scheduling_no_call_has_a_priority_and_nothing_else_changes():
    plain = round_calls(mark=False)
    marked = round_calls(mark=True)
    for plain_model, marked_model in zip(plain, marked):
        assert not any("priority" in c["sampling"] for c in plain_model.calls)
        assert [c["sampling"] for c in plain_model.calls] == [
            {k: v for k, v in c["sampling"].items() if k != "priority"} for c in marked_model.calls]


@pytest.fixture
def server():
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            data = json.dumps({"choices": [{"message": {"content": "A plain reply ends here."}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", bodies
    httpd.shutdown()


def test_the_client_sends_the_priority_field_only_to_models_scheduled_by_priority(server):
    url, bodies = server

    async def go():
        client = LLMClient(url, priority_models={"gen-id"})
        try:
            await write_draft("Write.", client.role("gen-id"), Decoding(), 1, "k")
            await extension_step("Write.", "One.\n\nTwo.\n\nThree.", "en", client.role("gen-id"), PROMPTS,
                                 MethodParams(), Decoding(), "k")
            await write_draft("Write.", client.role("ext-id"), Decoding(), 1, "k")
        finally:
            await client.aclose()

    asyncio.run(go())
    draft, stage1, stage2, other = bodies
    assert stage2["continue_final_message"] is True
    assert stage2["priority"] < stage1["priority"] and draft["priority"] < stage1["priority"]
    assert "priority" not in other


LORA = ["serving.mode=lora", "training.method=lora", "storage.root=s3://bucket/runs"]


@pytest.mark.parametrize("overrides, expected", [
    ([], {"gen-id", "ext-id"}),  # configs/tiny.yaml: every engine schedules by priority
    (["serving.engine_kwargs.scheduling_policy=fcfs"], set()),
    (["serving.extender.engine_kwargs={scheduling_policy: fcfs}"], {"gen-id"}),
    (["serving.engine_kwargs.scheduling_policy=fcfs", "serving.extender.engine_kwargs={scheduling_policy: priority}"],
     {"ext-id"}),
    # lora mode: one engine for both roles, built with the generator's engine_kwargs
    ([*LORA, "serving.engine_kwargs.scheduling_policy=fcfs", "serving.extender.engine_kwargs={scheduling_policy: priority}"],
     set()),
    ([*LORA, "serving.extender.engine_kwargs={scheduling_policy: fcfs}"], {"gen-id", "ext-id"}),
])
def test_which_roles_get_priorities_follows_their_engine_kwargs(overrides, expected):
    assert priority_models(load_settings(TINY, overrides), PLAN) == expected
