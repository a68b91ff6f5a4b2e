"""The served roles on Ray Serve LLM (vLLM engine, OpenAI-compatible HTTP).

`Serving` turns the settings into `LLMConfig`s, builds the app with `build_openai_app` and
deploys it; nothing here wraps vLLM by hand. Two ways to hold the roles (`serving.mode`):

* full: one engine per role, each with its own weights. New weights of the same architecture
  are handed over in place (`serving.handoff: in_place`, actors/role_server.py): every replica
  of the role loads them into its running engine, resets its prefix cache and answers from
  them (tiny model, 2-core CPU: about a second for both roles, where deploying the app again
  took 40-70 s). A job that finds the app running with its own settings takes it over the same
  way. The app is deployed again instead, and the reason printed, when nothing is running yet,
  when the settings ask for it, when the new weights' architecture or shapes differ, or when
  the app was built with other settings.
* lora: one engine holding the base model once, and a LoRA adapter per role, loaded by Serve
  LLM from object storage when first requested (`dynamic_lora_loading_path`, which Serve LLM
  accepts only as an s3:// / gs:// URI). New weights are handed over by publishing new
  adapters under new names; no replica restarts (measured: the new adapter answers in < 1 s).
  A job publishes into a running app only if it would have built it (same base model,
  settings and adapter folder); otherwise it deploys its own and says why.

`release()` takes the app down while training runs so that its GPUs are free; the next
`deploy()` brings it back (a deploy, not a hand-off).

Secrets stay out of what Ray's dashboard shows. A deployment's `runtime_env` is returned in
plain text by the Serve REST API, so the engines get no S3 credentials through it: the replica
processes read the standard AWS variables from the environment they inherit from their node
(pods: from the Secret self-lengthen-s3; an embedded Ray: from the driver, which puts the
settings' keys there before starting it, see cluster/ray_cluster.py). An app exposed beyond
loopback requires an API key (`openai_app(..., api_key_env=NAME)`): the ingress replica reads
the key from its environment and answers 401 to any request without `Authorization: Bearer
<key>`; only the variable's name travels in the app's options (actors/keyed_ingress.py).
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import ray
from ray import serve
from ray.serve.llm import LLMConfig, build_openai_app

from actors.client import SERVE_SCHEME
from actors.handles import deployment_handle, deployment_name
from actors.keyed_ingress import KeyedIngress
from actors.role_server import LocalFolderModel, RoleServer, fingerprint
from actors.weights_record import weights_record
from cluster import logs
from cluster.layout import ROLES
from cluster.settings import RoleServing, Settings
from cluster.storage import Storage

log = logging.getLogger(__name__)

APP_NAME = "self-lengthen"
BASE_ID = "base"  # the served base model's id in lora mode; adapters are "base:<name>"
ADAPTERS_DIR = "adapters"  # under the run folder: one subfolder per published adapter
# config.json keys that must be equal for new weights to go into a running engine
ARCHITECTURE = ("architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings")
# the standard AWS variables that say where S3 is, not who may use it: the only ones passed on
AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")


class DeployError(RuntimeError):
    pass


def model_source(uri: str) -> str | dict:
    """Local folders are passed as they are; object-store URIs are mirrored by Serve LLM onto
    the node of every replica before the engine starts."""
    if uri.startswith(("s3://", "gs://")):
        return {"bucket_uri": uri}
    return os.path.abspath(uri)


def engine_env(settings: Settings) -> dict[str, str]:
    """Environment of the engine processes, set in their `runtime_env`, which the dashboard
    shows to anyone: vLLM-CPU knobs and where S3 is (endpoint, region). No credential: the
    replicas inherit those from their node's environment (see the module's docstring)."""
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"} if not settings.training.use_gpu else {}
    env["VLLM_LOGGING_LEVEL"] = settings.serving.log_level
    env.update(settings.serving.engine_env)
    storage = settings.storage
    if storage.endpoint_url:
        env["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL_S3"] = storage.endpoint_url
    if storage.region:
        env["AWS_DEFAULT_REGION"] = storage.region
    for name in AWS_ENV:  # the driver's standard variables, where the settings leave them out
        if name in os.environ:
            env.setdefault(name, os.environ[name])
    return env


def openai_app(configs: list[LLMConfig], settings: Settings, api_key_env: str | None = None):
    """The OpenAI-compatible app of `configs`; with `api_key_env`, every request needs that key."""
    quiet_ray_llm()
    logs.quiet_driver_loggers()
    args = {"llm_configs": configs,
            # the router does no compute: let it share a node with anything
            "ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0},
                                          "logging_config": serve_logging(settings)}}
    if api_key_env:
        args["ingress_cls_config"] = {"ingress_cls": KeyedIngress,
                                      "ingress_extra_kwargs": {"api_key_env": api_key_env}}
    return build_openai_app(args)


def serve_logging(settings: Settings) -> dict:
    """A line per request is Serve's default: thousands of lines a round that bury progress.
    Called before every serve.start: the driver's own Serve logger is quieted here too."""
    logs.quiet_driver_loggers()
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


def wait_for_route(url: str, start: float, timeout: float) -> None:
    """Until the HTTP proxy answers `url`. RUNNING is the controller's view; the proxy learns the
    route a moment later, and on a loaded machine a request sent in between got a 404 (which
    the client rightly does not retry), failing every call of a job started right then."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as err:
            if err.code == 401:  # a keyed app: the route is there
                return
        except (urllib.error.URLError, OSError):
            pass
        if time.time() - start > timeout:
            raise DeployError(f"{url} did not answer within {timeout:.0f} s of the deploy")
        time.sleep(0.5)


def run_app(app, name: str, settings: Settings, host: str | None = None, port: int | None = None) -> str:
    """Deploy a built Serve application as `name` and wait until it answers; its base URL. The
    one deploy path: the loop's roles (`Serving`), jobs.serve and jobs.evaluate all come here."""
    serving, start = settings.serving, time.time()
    host, port = host or serving.host, port or serving.port
    serve.start(http_options={"host": host, "port": port}, logging_config=serve_logging(settings))
    serve.run(app, name=name, route_prefix="/", blocking=False)
    wait_until_running(name, start, serving.deploy_timeout_s)
    url = base_url(host, port)
    wait_for_route(f"{url}/models", start, serving.deploy_timeout_s)
    return url


def base_url(host: str, port: int) -> str:
    """Where pipeline workers send requests: the HTTP proxy on the driver's node (the head,
    under `ray job submit`), which always runs one; Serve starts proxies on other nodes only
    where replicas live. On loopback this is a single-node setup."""
    address = "127.0.0.1" if host in ("127.0.0.1", "localhost") else ray.util.get_node_ip_address()
    return f"http://{address}:{port}/v1"


def endpoint(settings: Settings, app: str, url: str) -> str:
    """Where this cluster's own clients of `app` send requests: its deployments' handles
    (`serving.data_path: handle`, actors/handles.py), or its HTTP `url`."""
    return f"{SERVE_SCHEME}{app}" if settings.serving.data_path == "handle" else url


def llm_config(model_id: str, source: str, role: RoleServing, settings: Settings,
               engine_extra: dict | None = None, lora_path: str | None = None) -> LLMConfig:
    weights = model_source(source)
    return LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": weights},
        server_cls=RoleServer,  # an LLMServer that also takes new weights in place
        # safetensors only: a pickled checkpoint in the bucket would run code in the engine
        engine_kwargs={**settings.serving.engine_kwargs, **role.engine_kwargs, **(engine_extra or {}),
                       **({"enable_sleep_mode": True} if settings.serving.sleep_during_training and settings.training.use_gpu
                          else {}),  # vLLM-CPU refuses the flag, and ignores sleep without it
                       "load_format": "safetensors"},
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
        # a local folder needs no mirroring onto the replica's node: Serve LLM's task for it is skipped
        **({"callback_config": {"callback_class": LocalFolderModel}} if isinstance(weights, str) else {}),
    )


@dataclass
class Serving:
    settings: Settings
    run_store: Storage | None = None  # the run folder; needed in lora mode for adapters
    sources: dict[str, str] | None = None  # role -> weights deployed (full) or adapter folder (lora)
    adapters: dict[str, str] = field(default_factory=dict)  # lora mode: role -> published name
    last_handoff: str = ""  # how the last deploy() went: "in place", "deployed (why)", ...
    asleep: bool = False  # sleep(): the engines hold no GPU memory until the next deploy()

    @property
    def lora(self) -> bool:
        return self.settings.serving.mode == "lora"

    @property
    def base_url(self) -> str:
        return base_url(self.settings.serving.host, self.settings.serving.port)

    @property
    def endpoint(self) -> str:
        """What the pipeline's clients of the roles are given (the HTTP URL stays for users)."""
        return endpoint(self.settings, APP_NAME, self.base_url)

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
        return openai_app(self.configs(sources), self.settings, self.settings.serving.api_key_env)

    # -- deploying ----------------------------------------------------------------------
    def deploy(self, sources: dict[str, str]) -> float:
        """Serve `sources` (role -> weights); returns seconds until the roles answer from them.
        Full mode: in place when the running app allows it (`last_handoff` says how it went).
        Lora mode: a source other than the base model is an adapter folder to publish."""
        start, refusal = time.time(), ""
        self.wake()
        if self.lora:
            self.publish_adapters(sources)
            running = self.running()
            refusal = self.lora_app_differs() if running else ""
            if running and not refusal:
                self.sources = dict(sources)
                self.last_handoff = "adapters published"
                return time.time() - start
        else:
            served, refusal = self.in_place(sources)
            if served is not None:
                try:
                    changed = self.hand_off(served, sources)
                    self.last_handoff = "in place" if changed else "already served by the running app"
                    return time.time() - start
                except Exception as err:  # noqa: BLE001 - a redeploy below replaces every replica
                    refusal = f"the in-place hand-off failed: {err}"
                    log.warning("%s; deploying again", refusal)
        if not self.lora:  # replicas that start later load what the record says: these weights
            ray.get(weights_record().set.remote(APP_NAME, sources, replace=True))
        run_app(self.build(sources), APP_NAME, self.settings)
        self.sources, self.asleep = dict(sources), False
        self.last_handoff = f"deployed ({refusal})" if refusal else "deployed"
        return time.time() - start

    # -- new weights into the running engines (full mode) ---------------------------------
    def in_place(self, sources: dict[str, str]) -> tuple[dict[str, str] | None, str]:
        """(role -> weights served now, "") when `sources` can go into the running app in place,
        else (None, why not; "" when nothing is running)."""
        if not self.running():
            return None, ""
        if self.settings.serving.handoff != "in_place":
            return None, "serving.handoff is redeploy"
        try:  # asked of the replicas, not remembered: another job (or Serving) may have deployed it
            served, why = self.running_app()
            if served is None:
                return None, why
            for role, weights in sources.items():
                if role not in served:
                    return None, f"the running app does not serve the {role}"
                if served[role] is None:
                    return None, f"the replicas of the {role} serve different weights"
                if weights != served[role]:
                    why = self.architecture_change(served[role], weights)
                    if why:
                        return None, f"{role}: {why}"
        except Exception as err:  # noqa: BLE001 - whatever the running app is, a deploy replaces it
            return None, f"could not compare with the running app ({type(err).__name__}: {err})"
        return served, ""

    def running_app(self) -> tuple[dict[str, str | None] | None, str]:
        """What the running app's replicas serve, if it was built as this job would build it
        (so that a resumed job takes over the app its first run left up)."""
        roles = self.running_roles()
        if not roles:
            return None, "the running app was not deployed by this project's Serving"
        keyed = self.running_asks_key()
        if keyed != bool(self.settings.serving.api_key_env):  # the front end, not the engines: no fingerprint
            return None, ("the running app asks for an API key and these settings give none" if keyed else
                          "the running app asks for no API key and these settings want one (serving.api_key_env)")
        built = {c.model_id: fingerprint(c) for c in self.configs({role: self.settings.model.base for role in ROLES})}
        served = {}
        for role in roles:
            handle, timeout = self.handle(role), self.settings.serving.deploy_timeout_s
            if role not in built:  # a lora app met by a full-mode job, or the other way round
                return None, f"the running app serves a {role!r} deployment, which these settings do not build"
            if set(handle.broadcast("fingerprint").results(timeout_s=timeout)) != {built[role]}:
                return None, f"the running app's {role} was deployed with other settings"
            weights = set(handle.broadcast("weights").results(timeout_s=timeout))
            served[role] = weights.pop() if len(weights) == 1 else None
        return served, ""

    def architecture_change(self, old: str, new: str) -> str:
        """Why weights `new` cannot replace `old` in a running engine ("" when they can)."""
        config = {uri: Storage.open(uri, self.settings.storage).read_json("config.json") for uri in (old, new)}
        for key in ARCHITECTURE:
            if config[old].get(key) != config[new].get(key):
                return f"config.json differs in {key} ({config[old].get(key)} -> {config[new].get(key)})"
        if config[new].get("tie_word_embeddings"):
            return "tied input and output embeddings (a reload may keep the old output layer)"
        return ""

    def hand_off(self, served: dict[str, str], sources: dict[str, str]) -> dict[str, str]:
        """Every replica of each changed role loads its new weights; replicas that start later
        load them too (the record is written first). Returns the roles that changed."""
        changed = {role: weights for role, weights in sources.items() if served.get(role) != weights}
        ray.get(weights_record().set.remote(APP_NAME, {**served, **sources}, replace=True))
        timeout = self.settings.serving.deploy_timeout_s
        for role, weights in changed.items():
            self.handle(role).broadcast("load_weights", weights).results(timeout_s=timeout)
            # a replica that was still starting missed the broadcast and may have read the record
            # before it was written: ask every replica, and load once more where one lags
            if set(self.handle(role).broadcast("weights").results(timeout_s=timeout)) != {weights}:
                self.handle(role).broadcast("load_weights", weights).results(timeout_s=timeout)
                loaded = set(self.handle(role).broadcast("weights").results(timeout_s=timeout))
                if loaded != {weights}:
                    raise DeployError(f"{role}: replicas report {sorted(loaded)} after loading {weights}")
        self.sources = {**served, **sources}
        return changed

    def running(self) -> bool:
        app = serve.status().applications.get(APP_NAME)
        return app is not None and app.status == "RUNNING"

    def sleep(self) -> None:
        """While training runs on the same GPUs: every replica frees its GPU memory (vLLM sleep
        level 1: weights to host memory, KV cache dropped) and keeps its Ray resources; the next
        `deploy()` wakes it. vLLM-CPU has no sleep mode and ignores the call (a warning in the
        engine's log)."""
        for name in self.deployed():
            self.handle(name).broadcast("sleep", level=1).results(timeout_s=self.settings.serving.deploy_timeout_s)
        self.asleep = bool(self.deployed())

    def wake(self) -> None:
        """Before anything is served or loaded. With sleep_during_training a resumed job cannot
        know whether the app it takes over was left asleep: it wakes every replica (an awake
        engine only logs a warning)."""
        names = self.deployed() if self.asleep else []
        if not names and self.settings.serving.sleep_during_training and self.running():
            names = self.running_roles()
        for name in names:
            self.handle(name).broadcast("wakeup").results(timeout_s=self.settings.serving.deploy_timeout_s)
        self.asleep = False

    def deployed(self) -> list[str]:
        """The model ids of this app's deployments: the roles, or in lora mode the base model."""
        return [] if not self.sources else [BASE_ID] if self.lora else list(self.sources)

    def running_roles(self) -> list[str]:
        """The model ids of the running app's role deployments (whoever deployed it)."""
        prefix = deployment_name("")
        return [n[len(prefix):] for n in serve.status().applications[APP_NAME].deployments if n.startswith(prefix)]

    def running_asks_key(self) -> bool:
        """Whether the running app's front end is the keyed one (its deployment is named after
        its class)."""
        return KeyedIngress.__name__ in serve.status().applications[APP_NAME].deployments

    def handle(self, model_id: str):
        return deployment_handle(APP_NAME, model_id)

    def release(self) -> None:
        """Take the models down (frees their CPUs/GPUs); `deploy` brings them back."""
        if APP_NAME in serve.status().applications:
            serve.delete(APP_NAME)
        self.sources, self.asleep = None, False

    # -- lora adapters ------------------------------------------------------------------
    def lora_app_differs(self) -> str:
        """Why the running app cannot serve this run's adapters ("" when it can): a full-mode
        app, other settings or adapter folder (the fingerprint), another base model."""
        try:
            served, why = self.running_app()
        except Exception as err:  # noqa: BLE001 - whatever the running app is, a deploy replaces it
            return f"could not compare with the running app ({type(err).__name__}: {err})"
        if served is None:
            return why
        return "" if served.get(BASE_ID) == self.settings.model.base else "the running app serves another base model"

    def publish_adapters(self, sources: dict[str, str]) -> None:
        """Publish each role's new adapter under a name never used before (Serve LLM keeps
        serving the old weights for a re-used name)."""
        for role, source in sources.items():
            if source == self.settings.model.base:
                self.adapters.pop(role, None)  # the base model again: model_id() names it, not an old adapter
                continue
            if (self.sources or {}).get(role) == source:
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
