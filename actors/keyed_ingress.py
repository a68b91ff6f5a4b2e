"""The API key in front of the OpenAI-compatible app (`actors.serving.openai_app(...,
api_key_env=NAME)`): the ingress replica reads the key from its own environment, so only the
variable's name travels in the app's options, and answers 401 to any request without
`Authorization: Bearer <key>`.
"""

from __future__ import annotations

import hmac
import json
import os

from ray.serve.llm.ingress import OpenAiIngress


class BearerKeyCheck:
    """ASGI middleware: an HTTP request without `Authorization: Bearer <key>` gets 401 in the
    OpenAI error format (a websocket is closed); only lifespan events pass unchecked."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    def allowed(self, scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan" or self.allowed(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        body = json.dumps({"error": {"message": "missing or wrong API key (Authorization: Bearer <key>)",
                                     "type": "invalid_request_error", "code": 401}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class KeyedIngress(OpenAiIngress):
    """Serve LLM's OpenAI ingress behind `BearerKeyCheck`. The key is read here, in the
    replica, from the environment variable `api_key_env`; a replica without it fails to start
    rather than serve without a key."""

    def __init__(self, llm_deployments, model_cards, *, api_key_env: str, **kwargs):
        key = os.environ.get(api_key_env, "")
        if not key.strip():
            raise RuntimeError(f"the API key variable {api_key_env} is not set in the ingress replica's environment")
        self._api_key = key.strip()
        super().__init__(llm_deployments, model_cards, **kwargs)

    def _set_asgi_app(self, app) -> None:
        # Serve's ingress wrapper hands the FastAPI app over through this method once the
        # constructor has run; the check wraps the whole app, every route included
        super()._set_asgi_app(BearerKeyCheck(app, self._api_key))

    async def check_health(self):
        # fail closed: should a Ray upgrade stop calling the hook above, the replica is unhealthy
        if not isinstance(getattr(self, "_asgi_app", None), BearerKeyCheck):
            raise RuntimeError("the API key check is not installed in front of the OpenAI app")
        await super().check_health()
