"""A pytest plugin (`pytest_plugins = ["tests.tiny_served"]`): the tiny model served once, as
the Generator on Ray Serve LLM, for every test that asks for `served_tiny` (AgentWrite,
evaluation). An engine takes about a minute to start on a small CPU machine, so the tests of
several modules share one. It starts when the first such test runs and stops after the last
one, so that modules that start a Ray of their own later in the session find none running."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

FIXTURE = "served_tiny"


@dataclass
class ServedTiny:
    serving: object  # actors.serving.Serving
    base_url: str
    model: str
    gcs_address: str  # for jobs run as subprocesses: --address joins this Ray
    set_args: list[str]  # --set arguments that make a job's settings match the served model


_served: ServedTiny | None = None


def start(repo, tiny_model) -> ServedTiny:
    import ray

    from actors.serving import Serving
    from cluster.settings import load_settings

    overrides = [f"model.base={tiny_model}"]
    settings = load_settings(repo / "configs/tiny.yaml", overrides)
    ray.init(address="local", num_cpus=8)
    serving = Serving(settings)
    try:
        serving.deploy({"generator": str(tiny_model)})
    except BaseException:
        ray.shutdown()
        raise
    return ServedTiny(serving, serving.base_url, serving.model_id("generator"),
                      ray.get_runtime_context().gcs_address, [a for o in overrides for a in ("--set", o)])


def stop() -> None:
    global _served
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    _served = None


@pytest.fixture
def served_tiny(repo, tiny_model) -> ServedTiny:
    global _served
    if _served is None:
        _served = start(repo, tiny_model)
    return _served


def pytest_runtest_teardown(item, nextitem):
    if _served is None:
        return
    items = item.session.items
    later = items[items.index(item) + 1:]
    if not any(FIXTURE in getattr(i, "fixturenames", ()) for i in later):
        stop()
