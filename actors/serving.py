"""The served roles on Ray Serve LLM (vLLM engine, OpenAI-compatible HTTP).

`Serving` builds one Serve application holding the Generator and the Extender (and, when the
judge is a served role, that role too) from the settings, deploys it, and redeploys it when a
round has trained new weights. Nothing here wraps vLLM by hand: each role is an `LLMConfig`
and `build_openai_app` makes the app.

Hand-off of new weights (full mode): the app is deleted before training when
`serving.release_during_training` is set (the default; it frees the accelerators) and deployed
again from the new weights afterwards; otherwise Serve rolls the replicas over to the new
`model_source` while the old ones keep answering. Measured on a 2-core CPU machine with the
tiny model: deploy after delete ~40-50 s for both roles, rolling update ~40-75 s.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from ray import serve
from ray.serve.llm import LLMConfig, build_openai_app

from cluster.settings import RoleServing, ServingSection, Settings

log = logging.getLogger(__name__)

APP_NAME = "self-lengthen"
AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
           "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION")


class DeployError(RuntimeError):
    pass


def model_source(uri: str) -> str | dict:
    """Local folders are passed as they are; object-store URIs are mirrored by Serve LLM onto
    the node of every replica before the engine starts."""
    if uri.startswith(("s3://", "gs://")):
        return {"bucket_uri": uri}
    return os.path.abspath(uri)


def engine_env(serving: ServingSection, settings: Settings) -> dict[str, str]:
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"} if not settings.training.use_gpu else {}
    env.update(serving.engine_env)
    storage = settings.storage
    if storage.endpoint_url:
        env["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL_S3"] = storage.endpoint_url
    if storage.access_key_id and storage.secret_access_key:
        env["AWS_ACCESS_KEY_ID"] = storage.access_key_id.get_secret_value()
        env["AWS_SECRET_ACCESS_KEY"] = storage.secret_access_key.get_secret_value()
    for name in AWS_ENV:  # the standard variables of the driver, when the settings leave them out
        if name in os.environ:
            env.setdefault(name, os.environ[name])
    return env


def role_config(model_id: str, source: str, role: RoleServing, settings: Settings) -> LLMConfig:
    serving = settings.serving
    return LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": model_source(source)},
        engine_kwargs={**serving.engine_kwargs, **role.engine_kwargs},
        placement_group_config={"bundles": [dict(role.resources)]},
        deployment_config={
            "autoscaling_config": {
                "min_replicas": role.min_replicas,
                "max_replicas": role.max_replicas,
                "target_ongoing_requests": role.target_ongoing_requests,
            },
            "max_ongoing_requests": role.max_ongoing_requests,
        },
        runtime_env={"env_vars": engine_env(serving, settings)},
    )


@dataclass
class Serving:
    settings: Settings
    sources: dict[str, str] | None = None  # role -> weights currently deployed

    @property
    def base_url(self) -> str:
        # Serve runs an HTTP proxy on every node, so every worker calls its own node.
        return f"http://127.0.0.1:{self.settings.serving.port}/v1"

    def model_id(self, role: str) -> str:
        if role == "judge":
            return self.settings.serving.judge.model or "generator"
        return role

    def build(self, sources: dict[str, str]):
        roles = {"generator": self.settings.serving.generator, "extender": self.settings.serving.extender}
        configs = [role_config(r, sources[r], roles[r], self.settings) for r in sources]
        return build_openai_app({
            "llm_configs": configs,
            # the router does no compute: let it share a node with anything
            "ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0}},
        })

    def deploy(self, sources: dict[str, str]) -> float:
        """Serve `sources` (role -> model folder or URI); returns seconds until all answer."""
        start = time.time()
        serve.start(http_options={"host": self.settings.serving.host, "port": self.settings.serving.port})
        serve.run(self.build(sources), name=APP_NAME, route_prefix="/", blocking=False)
        self.wait_running(start)
        self.sources = dict(sources)
        return time.time() - start

    def wait_running(self, start: float) -> None:
        timeout = self.settings.serving.deploy_timeout_s
        time.sleep(1)  # let the controller register the new version before polling
        while True:
            app = serve.status().applications.get(APP_NAME)
            if app is not None and app.status == "RUNNING":
                return
            if app is not None and app.status == "DEPLOY_FAILED":
                raise DeployError(f"Serve application {APP_NAME!r} failed to deploy: {app.message}")
            if time.time() - start > timeout:
                state = app.status if app else "absent"
                raise DeployError(f"Serve application {APP_NAME!r} not running after {timeout:.0f} s (state {state})")
            time.sleep(1)

    def release(self) -> None:
        """Take the models down (frees their CPUs/GPUs); `deploy` brings them back."""
        if APP_NAME in serve.status().applications:
            serve.delete(APP_NAME)
        self.sources = None
