"""A served role that takes new weights in place: Serve LLM's `LLMServer` (one vLLM engine per
replica) with three more methods, called on every replica at once through the deployment's
handle (`handle.broadcast`, see actors/serving.py):

* `load_weights(uri)`: new weights of the same architecture into the running engine. vLLM
  reloads them from a local folder (`collective_rpc("reload_weights")`); an s3:// folder is
  first copied onto this replica's node. Requests in flight finish on the old weights (the
  engine is paused with mode "wait"), then the prefix cache is reset: its cached keys and
  values were computed by the old weights, and reusing them gives answers that are neither
  model's.
* `weights()`: the weights this replica answers from now.
* `fingerprint()`: what the deployment was built with, less its first weights; a job that
  finds the app running compares it with its own to decide whether it may take the app over.
* `call(path, body)`: one OpenAI API call given as its path and JSON body, answered with the
  JSON reply the HTTP API would send. The pipeline's workers call the roles this way, through a
  deployment handle (actors/handles.py): no proxy, no HTTP front-end, no JSON over a socket.

A replica that Serve starts later (a restart after a crash, or autoscaling) is built from the
deployment's first weights. So the driver records every hand-off in a small named actor
(actors/weights_record.py), and a new replica loads the weights recorded for its role before it takes
requests: it never comes back on old weights.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time

# VLLMEngine and CallbackBase are not exported publicly (Ray 2.60): the two subclasses below
# depend on them (LLMConfig's `callback_config`, which takes the second, is public)
from ray.llm._internal.common.callbacks.base import CallbackBase
from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine
from ray.serve.llm import LLMConfig, LLMServer

from actors.engine_process import one_process
from actors.weights_record import record_key, recorded_weights

log = logging.getLogger(__name__)

WEIGHTS_CACHE = "self-lengthen-weights"  # under the node's temporary folder: s3:// weights copied for a reload


def source_uri(llm_config: LLMConfig) -> str:
    """The weights a deployment was built with: a local folder, or the s3:// URI Serve LLM mirrors."""
    source = llm_config.model_loading_config.model_source  # a path, or a CloudMirrorConfig
    return source if isinstance(source, str) else source.bucket_uri


def fingerprint(llm_config: LLMConfig) -> str:
    """A hash of everything the deployment was built with except its weights (and the callback,
    which follows where the weights are: `LocalFolderModel` for a folder)."""
    spec = llm_config.model_dump(exclude={"server_cls": True, "callback_config": True,
                                          "model_loading_config": {"model_source"}})
    cls = llm_config.server_cls
    spec["server_cls"] = f"{cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else str(cls)
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


# -- weights on this node -----------------------------------------------------------------
def local_copy(uri: str) -> str:
    """Where this node keeps its copy of the s3:// folder `uri`."""
    return os.path.join(tempfile.gettempdir(), WEIGHTS_CACHE, hashlib.sha256(uri.encode()).hexdigest()[:16])


def local_folder(uri: str) -> str:
    """A local folder holding the weights at `uri`: the folder itself, or a copy of an s3://
    folder on this node (made once per URI; the credentials are the node's AWS variables)."""
    if not uri.startswith("s3://"):
        return uri
    from cluster.settings import StorageSection
    from cluster.storage import Storage

    target = local_copy(uri)
    if not os.path.isdir(target):
        partial = f"{target}.part-{os.getpid()}"
        try:
            Storage.open(uri, StorageSection()).get_dir("", partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        try:
            os.rename(partial, target)
        except OSError:  # another replica on this node finished the same copy first
            shutil.rmtree(partial, ignore_errors=True)
    return target


def error_reply(code: int, message: str) -> dict:
    return {"error": {"message": message, "type": "BadRequestError" if code < 500 else "InternalServerError",
                      "param": None, "code": code}}


class LocalFolderModel(CallbackBase):
    """Serve LLM's node initialization, skipped for weights in a local folder. Before an engine
    starts, Serve LLM runs a task on each node of the replica's placement group to mirror the
    model there; for a local folder that task only returns the folder's path, but its process
    imports torch, transformers and ray.llm first: ~13 s of CPU a replica, and on two cores about
    a fifth of the tiny demo's engine start (44-47 -> 34-37 s, bench/RESULTS.md). The one other thing the task does, the
    torch kernels folder that torch cannot create itself, is done here."""

    async def on_before_node_init(self) -> None:
        import torch.hub

        os.makedirs(os.path.join(torch.hub._get_torch_home(), "kernels"), exist_ok=True)  # as Ray's task does
        self.ctx.run_init_node = False


class RoleEngine(VLLMEngine):
    """Serve LLM's vLLM engine, with a one-worker engine's worker run inside its engine-core
    process (vLLM's "uni" executor) unless `engine_kwargs.distributed_executor_backend` asks for
    another. Serve LLM always picks the "mp" executor on CPU, which spawns one more process per
    engine and imports vLLM in it again (bench/engine_start.py measures the difference). GPU
    engines get the "ray" executor (their worker holds the GPU bundle) and are left as they are."""

    def _prepare_engine_config(self, callback_ctx):
        engine_args, frontend_args, config = super()._prepare_engine_config(callback_ctx)
        if self.llm_config.engine_kwargs.get("distributed_executor_backend") in (None, "uni"):
            one_process(config, engine_args)
        return engine_args, frontend_args, config


class RoleServer(LLMServer):
    """LLMServer with in-place weight loading (the deployment is named `RoleServer:<role>`)."""

    _default_engine_cls = RoleEngine

    async def __init__(self, llm_config: LLMConfig, **kwargs):
        # read before the engine starts: Serve LLM may rewrite the config as it mirrors weights
        self._weights, self._fingerprint = source_uri(llm_config), fingerprint(llm_config)
        self._loading, self._broken = asyncio.Lock(), ""
        await super().__init__(llm_config, **kwargs)
        from ray import serve

        recorded = await recorded_weights(record_key(serve.get_replica_context().app_name, llm_config.model_id))
        if recorded and recorded != self._weights:  # started after a hand-off: catch up first
            await self.load_weights(recorded)

    async def load_weights(self, uri: str) -> str:
        async with self._loading:  # one load at a time (a driver's retry may overlap its first try)
            if uri == self._weights:
                return uri
            start = time.time()
            # off the event loop: a long copy must not starve Serve's health checks
            path = await asyncio.to_thread(local_folder, uri)
            await self.engine.pause(mode="wait")
            try:
                await self.collective_rpc("reload_weights", kwargs={"weights_path": path, "is_checkpoint_format": True})
                await self.engine.reset_prefix_cache()
            except BaseException:
                self._broken = f"loading {uri} failed midway"  # check_health: Serve replaces this replica
                raise
            finally:
                await self.engine.resume()
            previous, self._weights = self._weights, uri
        if previous.startswith("s3://"):  # at 7B a copy is ~15 GB: keep only the one in use
            await asyncio.to_thread(shutil.rmtree, local_copy(previous), True)
        log.info("%s: weights %s loaded in place in %.2f s", self._llm_config.model_id, uri, time.time() - start)
        return uri

    async def check_health(self) -> None:
        if self._broken:  # half of one model's weights and half of another's: never answer from it
            raise RuntimeError(f"{self._llm_config.model_id}: {self._broken}")
        await super().check_health()

    async def weights(self) -> str:
        return self._weights

    async def call(self, path: str, body: dict) -> dict:
        """`body` as the OpenAI API would take it at `path` (/chat/completions or /completions),
        answered as a plain dict: the reply, or `{"error": {"message", "code", ...}}` with the
        HTTP status the API would have answered with. The request classes are vLLM's, so its own
        fields (continue_final_message, priority, top_k, ...) are read as over HTTP."""
        from pydantic import ValidationError
        from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

        kinds = {"/chat/completions": (ChatCompletionRequest, self.chat),
                 "/completions": (CompletionRequest, self.completions)}
        if path not in kinds or body.get("stream"):
            return error_reply(404 if path not in kinds else 400, f"{path} {'stream ' if body.get('stream') else ''}"
                               "is not served through the deployment handle")
        kind, method = kinds[path]
        try:
            request = kind.model_validate(body)
        except ValidationError as err:
            return error_reply(400, str(err))
        async for reply in await method(request):  # not streamed: one reply, or one error
            return reply.model_dump(mode="json")
        return error_reply(500, f"{path}: the engine gave no reply")

    async def fingerprint(self) -> str:
        return self._fingerprint
