"""The Generator of a run as one OpenAI-compatible Serve application, for people and benchmarks
(jobs.serve, the RayService's `jobs.serve:app_builder`, jobs.evaluate --round): which weights
(a round's export, the final model, or the base model) and the app that serves them. The loop's
own serving of both roles is actors/serving.py's `Serving`.
"""

from __future__ import annotations

from actors.serving import ADAPTERS_DIR, BASE_ID, llm_config, openai_app, publish_adapter
from cluster.layout import RunLayout
from cluster.settings import Settings
from cluster.storage import Storage
from runtime.preflight import generator_to_serve

SERVED_NAME = "generator"


def build_app(settings: Settings, round: int | str | None = None, api_key_env: str | None = None):
    """The Serve application and the model name clients must ask for; with `api_key_env`,
    requests need the key held by that environment variable of the replicas."""
    layout = RunLayout.create(Storage.open(settings.storage.root, settings.storage), settings.run.name)
    k, weights = generator_to_serve(settings, round)
    role = settings.serving.generator
    if settings.serving.mode == "lora" and k != 0:
        # the round's adapter, published under its own name next to the run's other adapters
        name = publish_adapter(layout.store, weights, f"generator-round-{k}", settings)
        config = llm_config(BASE_ID, settings.model.base, role, settings,
                            {"enable_lora": True, "max_lora_rank": settings.training.lora.r},
                            layout.store.uri(ADAPTERS_DIR))
        model = f"{BASE_ID}:{name}"
    else:
        config = llm_config(SERVED_NAME, weights, role, settings)
        model = SERVED_NAME
    return openai_app([config], settings, api_key_env), model, k
