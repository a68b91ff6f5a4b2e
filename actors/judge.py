"""Where the judge's answers come from: a served role of this run (the default: the
Generator's deployment) or any OpenAI-compatible endpoint. The endpoint's key is read from the
environment variable named in `serving.judge.api_key_env` and is never logged or stored."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from actors.client import LLMClient, RoleModel
from cluster.settings import Settings

if TYPE_CHECKING:  # vLLM loads with it: only when something is served
    from actors.serving import Serving


def judge_model(settings: Settings, serving: Serving | None = None) -> RoleModel:
    j, s = settings.serving.judge, settings.serving
    if j.source == "endpoint":
        if not j.base_url or not j.model:
            raise ValueError("serving.judge.source 'endpoint' needs serving.judge.base_url and serving.judge.model")
        client = LLMClient(j.base_url, api_key=os.environ.get(j.api_key_env),
                           timeout_s=s.request_timeout_s, max_retries=s.max_retries)
        return client.role(j.model)
    if serving is None:
        raise ValueError("the judge is a served role, but nothing is being served")
    client = LLMClient(serving.endpoint, timeout_s=s.request_timeout_s, max_retries=s.max_retries,
                       api_key_env=s.api_key_env)
    return client.role(serving.model_id("judge"))
