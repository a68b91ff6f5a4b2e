"""The served roles on Ray Serve LLM (vLLM engine, OpenAI-compatible HTTP).

`Serving` turns the settings into `LLMConfig`s, builds the app with `build_openai_app` and
deploys it; nothing here wraps vLLM by hand. Two ways to hold the roles (`serving.mode`):

* full: one engine per role, each with its own weights. New weights are handed over by
  deploying the app again with the new `model_source`: Serve replaces the replicas without a
  Ray restart (on a 2-core CPU machine with the tiny model: ~40-70 s for both roles).
* lora: one engine holding the base model once, and a LoRA adapter per role, loaded by Serve
  LLM from object storage when first requested (`dynamic_lora_loading_path`, which Serve LLM
  accepts only as an s3:// / gs:// URI). New weights are handed over by publishing new
  adapters under new names; no replica restarts (measured: the new adapter answers in < 1 s).

`release()` takes the app down while training runs so that its GPUs are free; the next
`deploy()` brings it back.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import ray
from ray import serve
from ray.serve.llm import LLMConfig, build_openai_app

from cluster.settings import RoleServing, Settings
from cluster.storage import Storage

log = logging.getLogger(__name__)

APP_NAME = "self-lengthen"
BASE_ID = "base"  # the served base model's id in lora mode; adapters are "base:<name>"
ADAPTERS_DIR = "adapters"  # under the run folder: one subfolder per published adapter
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


def engine_env(settings: Settings) -> dict[str, str]:
    """Environment of the engine processes: vLLM-CPU knobs, and S3 access for model and
    adapter downloads (Ray redacts env values in its logs)."""
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"} if not settings.training.use_gpu else {}
    env["VLLM_LOGGING_LEVEL"] = settings.serving.log_level
    env.update(settings.serving.engine_env)
    storage = settings.storage
    if storage.endpoint_url:
        env["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL_S3"] = storage.endpoint_url
    if storage.access_key_id and storage.secret_access_key:
        env["AWS_ACCESS_KEY_ID"] = storage.access_key_id.get_secret_value()
        env["AWS_SECRET_ACCESS_KEY"] = storage.secret_access_key.get_secret_value()
    for name in AWS_ENV:  # the driver's standard variables, where the settings leave them out
        if name in os.environ:
            env.setdefault(name, os.environ[name])
    return env


def serve_logging(settings: Settings) -> dict:
    """A line per request is Serve's default: thousands of lines a round that bury progress."""
    level = settings.serving.log_level
    return {"log_level": level, "enable_access_log": level in ("DEBUG", "INFO")}


# Ray LLM modules that log a deployment's whole option dict (runtime_env included) at INFO
OPTION_DUMPERS = ("core.server.builder", "core.ingress.builder", "core.ingress.dev_ingress",
                  "serving_patterns.data_parallel.builder")


def quiet_ray_llm() -> None:
    """Those option dumps would print the S3 credentials the engines get in their environment.
    Ray LLM names its loggers `ray.serve.<module>` and sets INFO on one only if it has no
    handler yet, so each is made here first, with a handler that passes records up and a
    WARNING level; loggers of Ray LLM that exist already are set to WARNING too."""
    names = {f"ray.serve.ray.llm._internal.serve.{m}" for m in OPTION_DUMPERS}
    names |= {n for n in logging.root.manager.loggerDict if "ray.llm" in n}
    for name in names:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
        logger.setLevel(logging.WARNING)


def wait_until_running(app_name: str, start: float, timeout: float) -> None:
    """Until Serve reports `app_name` RUNNING; DeployError if it fails or `timeout` passes."""
    time.sleep(1)  # let the controller register the new version before polling
    while True:
        app = serve.status().applications.get(app_name)
        if app is not None and app.status == "RUNNING":
            return
        if app is not None and app.status == "DEPLOY_FAILED":
            raise DeployError(f"Serve application {app_name!r} failed to deploy: {app.message}")
        if time.time() - start > timeout:
            state = app.status if app else "absent"
            raise DeployError(f"Serve application {app_name!r} not running after {timeout:.0f} s (state {state})")
        time.sleep(1)


def llm_config(model_id: str, source: str, role: RoleServing, settings: Settings,
               engine_extra: dict | None = None, lora_path: str | None = None) -> LLMConfig:
    return LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": model_source(source)},
        engine_kwargs={**settings.serving.engine_kwargs, **role.engine_kwargs, **(engine_extra or {})},
        lora_config={"dynamic_lora_loading_path": lora_path} if lora_path else None,
        placement_group_config={"bundles": [dict(role.resources)]},
        deployment_config={
            "autoscaling_config": {
                "min_replicas": role.min_replicas,
                "max_replicas": role.max_replicas,
                "target_ongoing_requests": role.target_ongoing_requests,
                "upscale_delay_s": role.upscale_delay_s,
                "downscale_delay_s": role.downscale_delay_s,
            },
            "max_ongoing_requests": role.max_ongoing_requests,
            "logging_config": serve_logging(settings),
        },
        runtime_env={"env_vars": engine_env(settings)},
    )


@dataclass
class Serving:
    settings: Settings
    run_store: Storage | None = None  # the run folder; needed in lora mode for adapters
    sources: dict[str, str] | None = None  # role -> weights deployed (full) or adapter folder (lora)
    adapters: dict[str, str] = field(default_factory=dict)  # lora mode: role -> published name

    @property
    def lora(self) -> bool:
        return self.settings.serving.mode == "lora"

    @property
    def base_url(self) -> str:
        """Where pipeline workers send requests: the HTTP proxy on the driver's node (the
        head, under `ray job submit`), which always runs one; Serve starts proxies on other
        nodes only where replicas live. On loopback this is a single-node setup."""
        serving = self.settings.serving
        host = "127.0.0.1" if serving.host in ("127.0.0.1", "localhost") else ray.util.get_node_ip_address()
        return f"http://{host}:{serving.port}/v1"

    def model_id(self, role: str) -> str:
        if role == "judge":
            return self.settings.serving.judge.model or self.model_id("generator")
        if self.lora:
            return f"{BASE_ID}:{self.adapters[role]}" if role in self.adapters else BASE_ID
        return role

    # -- building the app ---------------------------------------------------------------
    def configs(self, sources: dict[str, str]) -> list[LLMConfig]:
        s = self.settings
        if not self.lora:
            roles = {"generator": s.serving.generator, "extender": s.serving.extender}
            return [llm_config(r, sources[r], roles[r], s) for r in sources]
        lora = {"enable_lora": True, "max_lora_rank": s.training.lora.r, "max_loras": 4}
        adapters = self.run_store.uri(ADAPTERS_DIR)
        return [llm_config(BASE_ID, s.model.base, s.serving.generator, s, lora, adapters)]

    def build(self, sources: dict[str, str]):
        quiet_ray_llm()
        return build_openai_app({
            "llm_configs": self.configs(sources),
            # the router does no compute: let it share a node with anything
            "ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0},
                                          "logging_config": serve_logging(self.settings)},
        })

    # -- deploying ----------------------------------------------------------------------
    def deploy(self, sources: dict[str, str]) -> float:
        """Serve `sources` (role -> weights); returns seconds until the roles answer.
        In lora mode a source other than the base model is an adapter folder to publish."""
        start = time.time()
        if self.lora:
            self.publish_adapters(sources)
            if self.running():
                self.sources = dict(sources)
                return time.time() - start
        serving = self.settings.serving
        serve.start(http_options={"host": serving.host, "port": serving.port},
                    logging_config=serve_logging(self.settings))
        serve.run(self.build(sources), name=APP_NAME, route_prefix="/", blocking=False)
        self.wait_running(start)
        self.sources = dict(sources)
        return time.time() - start

    def running(self) -> bool:
        app = serve.status().applications.get(APP_NAME)
        return app is not None and app.status == "RUNNING"

    def wait_running(self, start: float) -> None:
        wait_until_running(APP_NAME, start, self.settings.serving.deploy_timeout_s)

    def release(self) -> None:
        """Take the models down (frees their CPUs/GPUs); `deploy` brings them back."""
        if APP_NAME in serve.status().applications:
            serve.delete(APP_NAME)
        self.sources = None

    # -- lora adapters ------------------------------------------------------------------
    def publish_adapters(self, sources: dict[str, str]) -> None:
        """Publish each role's new adapter under a name never used before (Serve LLM keeps
        serving the old weights for a re-used name)."""
        for role, source in sources.items():
            if source == self.settings.model.base or (self.sources or {}).get(role) == source:
                continue
            name = f"{role}-{len(self.run_store.list(ADAPTERS_DIR)) + 1}"
            publish_adapter(self.run_store, source, name, self.settings)
            self.adapters[role] = name


def publish_adapter(run_store: Storage, source: str, name: str, settings: Settings) -> str:
    """Copy an exported adapter to <run>/adapters/<name>/, adapter_config.json last: Serve LLM
    treats a folder with that file as complete, so a half-uploaded adapter never looks ready."""
    src = Storage.open(source, settings.storage)
    for f in sorted(src.list(""), key=lambda f: f == "adapter_config.json"):
        if not f.startswith("_"):
            run_store.write_bytes(f"{ADAPTERS_DIR}/{name}/{f}", src.read_bytes(f))
    return name
