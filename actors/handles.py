"""Calling the served roles inside the cluster: through their Serve deployment handles instead of
the HTTP proxy and the OpenAI front-end.

An endpoint `serve://<app>` (actors/client.py picks this transport for it) names a Serve
application of this Ray cluster. A request for model `m` goes to the deployment `RoleServer:m`
of that app (in lora mode, `base:adapter` goes to `RoleServer:base` with the adapter as Serve's
multiplexed model id, as Serve LLM's own ingress routes it), as `RoleServer.call(path, body)`:
the same body and the same reply as over HTTP, minus the proxy hop, the ingress replica, the
SSE/JSON encoding and the HTTP client (measured: bench/round_efficiency.py, bench/RESULTS.md).

Errors keep the HTTP semantics, so the retry loop in `LLMClient.post` treats both paths alike:
an error reply carries the status the API would have answered with (retried when transient);
a replica that died or was restarted, a deployment not taking requests (back-pressure, being
replaced), an app or deployment not found (nobody listening, over HTTP) and an exception inside
the replica (a 500 over HTTP) are transient; a call that outlasts the client's timeout is
cancelled and is transient too.
"""

from __future__ import annotations

import asyncio
import atexit
from typing import Any

from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError

from actors.client import TransientError, status_error

DEPLOYMENT_CLASS = "RoleServer"  # actors/role_server.py; Serve LLM names a deployment <class>:<model id>
RETRYABLE = (RayActorError, RayTaskError, BackPressureError, DeploymentUnavailableError, RequestCancelledError)

_opened: dict[int, Any] = {}  # every deployment handle this process used: stopped at exit
_adapters: dict[tuple[str, str], tuple[Any, Any]] = {}  # (app, base:adapter) -> (base handle, adapter's)


def deployment_name(model_id: str) -> str:
    return f"{DEPLOYMENT_CLASS}:{model_id}"


def deployment_handle(app: str, model_id: str):
    """The handle of the deployment serving `model_id` in `app`. Serve's client keeps one per
    deployment (each has its routing state and a timer that reports to Serve's controller) and
    makes new ones after Serve is restarted; `close_handles` stops the ones used here at exit."""
    handle = serve.get_deployment_handle(deployment_name(model_id), app)
    if not _opened:
        atexit.register(close_handles)  # registered after Ray's own exit handler: runs before it
    _opened[id(handle)] = handle
    return handle


def role_handle(app: str, model: str):
    """The handle that reaches `model` in `app`; a LoRA adapter `base:name` goes through its
    base's deployment, with the adapter as Serve's multiplexed model id."""
    base_id, _, adapter = model.partition(":")
    base = deployment_handle(app, base_id)
    if not adapter:
        return base
    made = _adapters.get((app, model))
    if made is None or made[0] is not base:  # first use, or Serve was restarted since
        made = _adapters[(app, model)] = (base, base.options(multiplexed_model_id=model))
    return made[1]


def close_handles() -> None:
    """Stop the routers of the handles this process used. A router still running when the job's
    Ray shuts down at exit calls Ray from its thread (a traceback, or with Ray's auto-init on, a
    new local Ray started from that thread)."""
    _adapters.clear()
    while _opened:
        _, handle = _opened.popitem()
        try:
            handle.shutdown()
        except Exception:  # noqa: BLE001 - at exit, Serve or Ray may be gone already: nothing to stop
            pass


class HandleTransport:
    """One attempt through a deployment handle: the reply's JSON object, or TransientError /
    ModelCallError (see the module's docstring)."""

    def __init__(self, app: str, timeout_s: float):
        self.app, self.timeout_s = app, timeout_s

    async def send(self, path: str, body: dict[str, Any]) -> dict:
        model = str(body.get("model"))
        try:
            handle = role_handle(self.app, model)
        except Exception as err:  # no such app or deployment (yet): HTTP would find nobody listening
            raise TransientError(f"{deployment_name(model)} of {self.app!r}: {type(err).__name__}: {err}") from None
        response = handle.call.remote(path, body)
        try:
            data = await asyncio.wait_for(response, self.timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise TransientError(f"no reply from {self.app} within {self.timeout_s:.0f} s") from None
        except RETRYABLE as err:
            raise TransientError(f"{type(err).__name__}: {str(err)[:300]}") from None
        error = data.get("error") if isinstance(data, dict) else None
        if error:
            raise status_error(int(error.get("code") or 500), str(error.get("message"))[:300])
        return data

    async def aclose(self) -> None:
        pass  # the handles are shared by every client of the process
