"""The record of what each served role answers from: a small named Ray actor, written by the
driver before every deploy and hand-off (actors/serving.py) and read by every replica of
actors/role_server.py as it starts, so that a replica Serve starts after a hand-off loads the
new weights, not its deployment's first ones. Kept apart from role_server.py so that this
actor's process does not import vLLM.
"""

from __future__ import annotations

import asyncio

import ray

RECORD_NAME, RECORD_NAMESPACE = "self-lengthen-weights", "self-lengthen"


def record_key(app: str, role: str) -> str:
    return f"{app}/{role}"


@ray.remote(num_cpus=0)
class WeightsRecord:
    """"<app>/<role>" -> the weights its replicas must answer from. Written by the driver before
    every deploy and hand-off; read by every replica as it starts."""

    def __init__(self):
        self.weights: dict[str, str] = {}

    def set(self, app: str, weights: dict[str, str], replace: bool = False) -> None:
        """The roles of `app` that now answer from new weights; `replace`: these are all its roles."""
        if replace:
            self.weights = {k: v for k, v in self.weights.items() if not k.startswith(f"{app}/")}
        self.weights.update({record_key(app, role): uri for role, uri in weights.items()})

    def get(self, key: str) -> str | None:
        return self.weights.get(key)


def weights_record():
    """The record, made the first time (detached: it outlives the job, as the Serve app does)."""
    return WeightsRecord.options(name=RECORD_NAME, namespace=RECORD_NAMESPACE, lifetime="detached",
                                 get_if_exists=True).remote()


async def recorded_weights(key: str) -> str | None:
    try:
        record = ray.get_actor(RECORD_NAME, namespace=RECORD_NAMESPACE)
    except ValueError:  # nothing deployed through `Serving` on this cluster yet
        return None
    return await asyncio.wait_for(record.get.remote(key), timeout=60)
