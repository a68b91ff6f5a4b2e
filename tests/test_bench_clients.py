"""bench/round_efficiency.py measures the round through its own recording client
(bench/clients.py): that client must send what the product's shard client sends, or the
benchmark measures another pipeline. It once left out the priorities, so "priority against
fcfs on the real round" compared two fcfs rounds. And its timeline must split the round's wall
time where the recorded send and answer times say."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.synthesis import RoundPlan, served_client
from bench.clients import RecordingClientFactory
from bench.round_efficiency import timeline
from cluster.settings import load_settings

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
PLAN = RoundPlan(round=1, base_url="serve://roles", model_ids={"generator": "gen", "extender": "ext"},
                 versions={"generator": "base", "extender": "base"})


@pytest.mark.parametrize("policy, expected", [("priority", {"gen", "ext"}), ("fcfs", set())])
def test_the_recording_client_sends_what_the_served_client_sends(tmp_path, policy, expected):
    settings = load_settings(CONFIG, [f"serving.engine_kwargs.scheduling_policy={policy}",
                                      "serving.api_key_env=SOME_KEY_VAR"])
    recording, served = RecordingClientFactory(str(tmp_path))(settings, PLAN), served_client(settings, PLAN)
    assert recording.priority_models == served.priority_models == expected
    for field in ("base_url", "api_key_env", "timeout_s", "max_retries", "max_concurrency"):
        assert getattr(recording, field) == getattr(served, field), field
    # the method adds each call's priority only for a role whose engine schedules by it
    assert recording.role("gen").by_priority is (policy == "priority")


def test_the_timeline_splits_the_round_at_the_first_request_and_the_last_answer():
    # a round from t=0 to t=10: the workers' first request at t=2, the last answer at t=9.5;
    # 40 requests in flight from 2 to 6, then 4 of them until 9.5
    requests = [{"sent": 2.0, "done": 6.0, "completion_tokens": 10} for _ in range(36)]
    requests += [{"sent": 2.0, "done": 9.5, "completion_tokens": 100} for _ in range(4)]
    found = timeline(requests, started=0.0, ended=10.0)
    assert found["first_request_after_s"] == 2.0
    assert found["after_last_answer_s"] == 0.5
    assert found["requests_span_s"] == 7.5
    assert found["span_tokens_per_s"] == round((36 * 10 + 4 * 100) / 7.5, 1)
    assert found["span_s_under_8_in_flight"] == 3.5  # 4 in flight from 6 to 9.5
    assert found["span_s_under_32_in_flight"] == 3.5
    assert timeline([], 0.0, 1.0) == {}
