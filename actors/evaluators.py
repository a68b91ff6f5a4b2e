"""The models an evaluation talks to (jobs/evaluate.py): clients for the model under
evaluation and for the judge, and a Generator served for it on this cluster.

The judge is serving.judge: with source "endpoint" that endpoint (the settings make sure it has
a base_url and a model); with source "generator" the loop's served judge role, or, from the
command line, the model under evaluation itself.
"""

from __future__ import annotations

import os

from actors.client import LLMClient
from cluster.settings import Settings
from longform.model import ChatModel


def client_for(settings: Settings, base_url: str, api_key: str | None = None, own: bool = False) -> LLMClient:
    """A client of `base_url` with the evaluation's concurrency; `own`: an app this cluster
    serves, which wants the key of `serving.api_key_env` when it is set."""
    s = settings.serving
    return LLMClient(base_url, api_key=api_key, api_key_env=s.api_key_env if own else None,
                     timeout_s=s.request_timeout_s, max_retries=s.max_retries,
                     max_concurrency=settings.evaluation.concurrency)


def judge_for(settings: Settings, evaluated: ChatModel | None, clients: list[LLMClient],
              serving=None) -> ChatModel | None:
    """None without `evaluation.judge`; else the judge (see above). A client it opens is added
    to `clients` for the caller to close. With source "generator", no `serving` and nothing
    evaluated it is None too: the caller says why that cannot work."""
    if not settings.evaluation.judge:
        return None
    judge = settings.serving.judge
    if judge.source == "endpoint":
        client = client_for(settings, judge.base_url, os.environ.get(judge.api_key_env))
        clients.append(client)
        return client.role(judge.model)
    if serving is not None:
        client = client_for(settings, serving.endpoint, own=True)
        clients.append(client)
        return client.role(serving.model_id("judge"))
    return evaluated


def serve_app(settings: Settings, app, name: str) -> str:
    """Deploy `app` (actors.generator_app.build_app) as the Serve application `name` and wait until it
    answers; its base URL. A failed deployment stops the job (exit 1, the reason on stderr)."""
    from actors.serving import DeployError, run_app

    try:
        return run_app(app, name, settings)
    except DeployError as err:
        raise SystemExit(f"error: {err}") from None


def stop_app(name: str) -> None:
    from ray import serve

    serve.delete(name)
