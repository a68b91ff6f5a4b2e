"""One run context, built once from settings, that every job begins with:

    settings = settings_from_args(args)
    inputs = check_loop_inputs(settings)            # no cluster yet: a bad file exits 2 here
    ctx = RunContext.open(settings, "loop", tag=None)  # join/start Ray, check capacity, run folder
    ctx.serve({"generator": base, "extender": base})
    model = ctx.model("generator")                  # a ChatModel on the served role
    result = ctx.stage(1, "synthesis", lambda: ...) # recorded once, read back on resume

Each piece is made the first time it is asked for: a job that serves nothing never imports
vLLM, one that trains nothing never imports DeepSpeed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from cluster.layout import RunLayout
from cluster.settings import Settings
from cluster.storage import Storage
from runtime.log import Log, logger

if TYPE_CHECKING:  # vLLM and Ray Serve load with these: only when something is served
    from actors.client import LLMClient, RoleModel
    from actors.serving import Serving

T = TypeVar("T", bound=dict)


@dataclass
class RunContext:
    settings: Settings
    layout: RunLayout
    log: Log
    _serving: Serving | None = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: Settings, workload: str, tag: str | None = None, connect: bool = True) -> RunContext:
        """Start or join Ray and check that `workload` fits it (cluster.capacity: exit 2 when it
        never can), then open the run folder. `connect=False` for what needs no cluster."""
        log = logger(tag)
        if connect:
            from cluster.capacity import connect_checked
            from runtime.preflight import check_storage_root

            check_storage_root(settings)  # before the cluster: exit 2 when the bucket is not there
            connect_checked(settings, workload, log)
        layout = RunLayout.create(Storage.open(settings.storage.root, settings.storage), settings.run.name)
        return cls(settings, layout, log)

    @property
    def store(self) -> Storage:
        return self.layout.store

    # -- served models -------------------------------------------------------------------
    @property
    def serving(self) -> Serving:
        if self._serving is None:
            from actors.serving import Serving

            self._serving = Serving(self.settings, run_store=self.layout.store)
        return self._serving

    @property
    def served(self) -> dict[str, str]:
        """Role -> weights being served now (empty when nothing is)."""
        return dict((self._serving and self._serving.sources) or {})

    def serve(self, sources: dict[str, str]) -> float:
        """Serve these weights (role -> folder or URI) unless they are served already; returns
        the seconds until they answered (0 when nothing changed). Handed over in place, roles
        served but not named here stay as they are; a redeploy serves the named ones only."""
        served = self.served
        if all(served.get(role) == weights for role, weights in sources.items()):
            self.serving.wake()  # after training with sleep_during_training, even when nothing changed
            return 0.0
        seconds = self.serving.deploy(sources)
        changed = " ".join(f"{role}={weights}" for role, weights in sources.items() if served.get(role) != weights)
        self.log(f"serving {changed}: answering after {seconds:.1f}s, {self.serving.last_handoff}")
        return seconds

    def release(self) -> None:
        """Before training: take the models down (`serving.release_during_training`) or let them
        free their GPU memory (`serving.sleep_during_training`); otherwise they stay as they are."""
        s = self.settings.serving
        if self.served and s.release_during_training:
            self.serving.release()
        elif self.served and s.sleep_during_training:
            self.serving.sleep()

    def client(self, concurrency: bool = True) -> LLMClient:
        """A client of the served roles, with the serving settings' timeouts and retries."""
        from actors.client import LLMClient

        s = self.settings.serving
        limit = {"max_concurrency": s.max_concurrency} if concurrency else {}
        return LLMClient(self.serving.endpoint, timeout_s=s.request_timeout_s, max_retries=s.max_retries,
                         api_key_env=s.api_key_env, **limit)

    def model(self, role: str, client: LLMClient | None = None) -> RoleModel:
        """The served `role` (generator, extender) as a ChatModel."""
        return (client or self.client()).role(self.serving.model_id(role))

    def judge(self) -> RoleModel:
        """The judge: a served role of this run, or the endpoint `serving.judge` names."""
        from actors.judge import judge_model

        served = self.settings.serving.judge.source != "endpoint"
        return judge_model(self.settings, self.serving if served else None)

    # -- resumable stages ----------------------------------------------------------------
    def stage(self, k: int | str, name: str, fn: Callable[[], T]) -> T:
        """Run a stage once: its result is stored, and a resumed job reads it back."""
        done = self.layout.stage_done(k, name)
        if done is not None:
            self.log(f"{self.layout.label(k)}: {name} already finished, skipping")
            return done
        result = fn()
        self.layout.mark_done(k, name, result)
        return result
