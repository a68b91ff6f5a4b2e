"""Engines that stand in for the served model, for measuring the pipeline around it: each is
a client factory `actors.synthesis.run_synthesis` takes in place of the served roles (see
`ClientFactory` there), answering with synthetic text (actors/synthetic_text.py).

* `InstantClientFactory`: a zero-cost engine. Every call answers at once, in the shard
  worker's own process, so a run measures nothing but the pipeline around the model
  (bench/orchestration.py).
* `SimulatedEngine` + `SimulatedClientFactory`: a SIMULATED continuous-batching engine, one
  Ray actor shared by every shard worker. It has a fixed number of batch slots; every engine
  step takes a fixed time and advances each sequence holding a slot by one token; waiting
  requests are admitted first come first served or, like vLLM's priority policy, lowest
  `priority` first. Output lengths come from a seeded heavy-tailed distribution
  (`LengthModel`). Nothing here is a language model (bench/streaming.py).

Extensions come out well above 1.2x the draft, so every stage of a round runs. Factories and
everything they build are module-level classes, so they pickle for Ray Data's actors.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections import Counter
from typing import Any, NamedTuple

from actors.synthetic_text import extend_input, first_sentence, rough_words, synthetic_text
from longform.words import count_words

# --------------------------------------------------------------------------------------------
# zero-cost engine
# --------------------------------------------------------------------------------------------

class InstantClient:
    """Answers every call at once, in process. Lengths: drafts 40-120 words; stage 1 returns the
    half-draft it was given at 1.5x; stage 2 continues with as many words as the whole draft, so a
    candidate comes out at about 1.5x the draft. Completion tokens are counted as words."""

    def __init__(self):
        self.calls: Counter = Counter()
        self._lengths = itertools.count()

    def role(self, model: str) -> "InstantRole":
        return InstantRole(self, model)

    def answer(self, model: str, words: int, lang: str) -> str:
        self.calls[f"{model}.requests"] += 1
        self.calls[f"{model}.completion_tokens"] += words
        return synthetic_text(lang, words)

    async def aclose(self) -> None:
        pass


class InstantRole:
    def __init__(self, client: InstantClient, model: str):
        self.client, self.model = client, model

    async def chat(self, messages: list[dict], **sampling: Any) -> str:
        text, lang = extend_input(messages[-1]["content"])
        if text is None:  # a draft
            words = 40 + (next(self.client._lengths) * 37) % 81
        else:  # stage 1: enrich the first half
            words = int(rough_words(text, lang) * 1.5) + 10
        return self.client.answer(self.model, words, lang)

    async def continue_chat(self, messages: list[dict], prefix: str, **sampling: Any) -> str:
        text, lang = extend_input(messages[-1]["content"])  # the whole draft, as the outline
        return "\n\n" + self.client.answer(self.model, rough_words(text or prefix, lang), lang)


class InstantClientFactory:
    def __call__(self, settings, plan) -> InstantClient:
        return InstantClient()


# --------------------------------------------------------------------------------------------
# simulated continuous-batching engine
# --------------------------------------------------------------------------------------------

class Call(NamedTuple):
    """One request as the simulated engine saw it (`SimulatedEngine.trace`): steps are counted
    from the first request after a reset; `admitted` is the first step that advanced it."""

    kind: str
    anchor: str
    tokens: int
    priority: int
    arrived: int
    admitted: int
    done: int


class SimulatedEngine:
    """A SIMULATED continuous-batching engine (run as a Ray async actor; nothing is generated).

    `slots` sequences decode at once; each engine step takes `step_s` seconds of wall time and
    advances every sequence in a slot by one token, so a request of n tokens holds a slot for n
    steps. Waiting requests take free slots at the start of a step in the order of
    `scheduling_policy`, as vLLM's scheduler admits them: "fcfs", first come first served;
    "priority", the lowest `priority` value first, first come first served among equals. As in
    vLLM, a running request keeps its slot: vLLM's priority policy preempts a running request
    only when the KV cache runs out of blocks, which this engine has no model of (its slots are
    vLLM's `max_num_seqs`, which a waiting request never preempts for). Steps are paced against
    the clock (a late step is run at once, not skipped), so engine time follows wall time as
    long as one step's bookkeeping is shorter than `step_s`.

    `stage_barrier=True` makes the two extension stages take turns the way the reference's
    per-stage passes do: a stage-1 request waits while any stage-2 request is in the engine and
    the other way round, so every request of one wave ends before the next wave starts (the
    micro-steps and retries of an extension come as later waves)."""

    POLICIES = ("fcfs", "priority")

    def __init__(self, slots: int, step_s: float, stage_barrier: bool = False, scheduling_policy: str = "fcfs"):
        if scheduling_policy not in self.POLICIES:
            raise ValueError(f"scheduling_policy: one of {self.POLICIES}, not {scheduling_policy!r}")
        self.slots, self.step_s, self.stage_barrier = slots, step_s, stage_barrier
        self.by_priority = scheduling_policy == "priority"
        self.waiting: list[tuple] = []  # a heap of (priority or 0, arrival number, request)
        self.active: list[list] = []  # [tokens left, future, trace index]
        self.in_engine: Counter = Counter()  # extension requests admitted past the barrier, by stage
        self._turns: asyncio.Condition | None = None
        self._arrivals = itertools.count()
        self.reset()
        self._runner = None

    def reset(self) -> None:
        self._trace: list[list] = []  # Call fields, admitted and done filled in as they happen
        self.steps = 0  # ticks since the first request after reset
        self.last_done_step = 0
        self.tokens = 0
        self.requests = 0
        self.first_at = self.last_done_at = None
        self.max_waiting = 0

    async def generate(self, tokens: int, kind: str = "", anchor: str = "", priority: int = 0) -> int:
        """Returns when `tokens` steps have run for this request. `priority` orders the waiting
        requests under the "priority" policy (lower first, as in vLLM) and is ignored under
        "fcfs". `kind` and `anchor` only go into the trace the benchmark reads back."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
            self._turns = asyncio.Condition()
        if self.first_at is None:
            self.first_at = time.time()
        gated = self.stage_barrier and kind in ("stage1", "stage2")
        if gated:
            other = "stage2" if kind == "stage1" else "stage1"
            async with self._turns:
                await self._turns.wait_for(lambda: self.in_engine[other] == 0)
                self.in_engine[kind] += 1
        future = asyncio.get_running_loop().create_future()
        tokens = max(1, int(tokens))
        self._trace.append([kind, anchor, tokens, priority, self.steps, None, None])
        key = priority if self.by_priority else 0
        heapq.heappush(self.waiting, (key, next(self._arrivals), [tokens, future, len(self._trace) - 1]))
        self.requests += 1
        self.max_waiting = max(self.max_waiting, len(self.waiting))
        await future
        if gated:
            async with self._turns:
                self.in_engine[kind] -= 1
                self._turns.notify_all()
        return tokens

    def trace(self) -> list[Call]:
        """Every request since the last reset, in the order they arrived."""
        return [Call(*row) for row in self._trace]

    async def _run(self) -> None:
        tick = time.monotonic()
        while True:
            tick += self.step_s
            delay = tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # behind the clock: run this step at once, let callers in
            while self.waiting and len(self.active) < self.slots:
                seq = heapq.heappop(self.waiting)[2]
                self._trace[seq[2]][5] = self.steps + 1
                self.active.append(seq)
            if self.first_at is None:
                continue
            self.steps += 1
            still = []
            for seq in self.active:
                seq[0] -= 1
                self.tokens += 1
                if seq[0] > 0:
                    still.append(seq)
                elif not seq[1].done():
                    self._trace[seq[2]][6] = self.steps
                    seq[1].set_result(None)
                    self.last_done_at, self.last_done_step = time.time(), self.steps
            self.active = still

    def stats(self) -> dict:
        busy = self.last_done_at - self.first_at if self.first_at and self.last_done_at else 0.0
        steps_in_window = busy / self.step_s if busy else 0
        return {"requests": self.requests, "tokens": self.tokens,
                "engine_steps": self.last_done_step,  # first request to last completion
                "slot_utilisation": round(self.tokens / (self.slots * steps_in_window), 3) if busy else None,
                "slot_utilisation_per_step": round(self.tokens / (self.slots * self.last_done_step), 3) if self.last_done_step else None,
                "busy_seconds": round(busy, 2), "step_s_achieved": round(busy / self.last_done_step, 5) if self.last_done_step else None,
                "max_waiting": self.max_waiting}


class LengthModel:
    """Seeded heavy-tailed output lengths, in tokens (one token is one word of the synthetic text).

    drafts:  lognormal(ln draft_median, sigma), capped at `cap`
    stage 1: (enrich the first half) the half's words x lognormal(ln 1.3, sigma/2)
    stage 2: (continue after the kept 2/3 of stage 1) `min_continue` x the whole draft's words
             x lognormal(0, sigma/2), plus 12
Extension calls are capped at 2 x `cap`. With the defaults a candidate comes out at about 1.4x
its draft (median), so most extensions pass the 1.2x rule at the first attempt and some need a
retry, as with a real model."""

    def __init__(self, draft_median: float, sigma: float, cap: int, min_continue: float = 1.0):
        self.draft_median, self.sigma, self.cap, self.min_continue = draft_median, sigma, cap, min_continue

    def draft(self, rng: random.Random) -> int:
        return min(self.cap, max(12, int(rng.lognormvariate(0, self.sigma) * self.draft_median)))

    def enrich(self, rng: random.Random, half_words: int) -> int:
        return min(2 * self.cap, max(12, int(half_words * rng.lognormvariate(0.26, self.sigma / 2))))

    def cont(self, rng: random.Random, draft_words: int) -> int:
        return min(2 * self.cap, max(12, int(self.min_continue * draft_words * rng.lognormvariate(0, self.sigma / 2)) + 12))

    def describe(self) -> dict:
        return {"draft": f"lognormal(median {self.draft_median}, sigma {self.sigma}), cap {self.cap}",
                "stage1": f"half-draft words x lognormal(ln 1.3, {self.sigma / 2}), cap {2 * self.cap}",
                "stage2": f"{self.min_continue} x draft words x lognormal(0, {self.sigma / 2}) + 12, cap {2 * self.cap}"}


class SimulatedClient:
    """Calls the shared SimulatedEngine for the time a request takes and writes the text here.
    A request's length is drawn from an RNG seeded by the request's own `seed` (set
    synthesis.decoding.seed: every request then carries a seed derived from its record), so the
    same request has the same length in every run and mode.

    Each request also tells the engine which draft it belongs to (the draft's first sentence,
    unique by construction), so the benchmark can rebuild every draft's chain of calls. Its roles
    say `by_priority` for the models in `priority_models`, as the served client's do
    (actors/client.py), and pass each request's `priority` field on to the engine."""

    def __init__(self, engine, lengths: LengthModel, priority_models: frozenset[str] = frozenset()):
        self.engine, self.lengths, self.priority_models = engine, lengths, priority_models
        self.calls: Counter = Counter()

    def role(self, model: str) -> "SimulatedRole":
        return SimulatedRole(self, model)

    async def answer(self, model: str, words: int, lang: str, kind: str, anchor: str | None, sampling: dict) -> str:
        text = synthetic_text(lang, words)
        await self.engine.generate.remote(words, kind, first_sentence(text) if anchor is None else anchor,
                                          sampling.get("priority", 0))
        self.calls[f"{model}.requests"] += 1
        self.calls[f"{model}.completion_tokens"] += words
        return text

    async def aclose(self) -> None:
        pass


def _rng(sampling: dict, *salt: object) -> random.Random:
    if "seed" not in sampling:
        raise ValueError("the simulated engine needs per-request seeds: set synthesis.decoding.seed")
    return random.Random(":".join(str(p) for p in (sampling["seed"], *salt)))


class SimulatedRole:
    def __init__(self, client: SimulatedClient, model: str):
        self.client, self.model = client, model
        self.by_priority = model in client.priority_models  # as actors.client.RoleModel

    async def chat(self, messages: list[dict], **sampling: Any) -> str:
        text, lang = extend_input(messages[-1]["content"])
        rng = _rng(sampling, "chat")
        if text is None:  # a draft: its anchor is its own first sentence
            return await self.client.answer(self.model, self.client.lengths.draft(rng), lang, "draft", None, sampling)
        words = self.client.lengths.enrich(rng, count_words(text))
        return await self.client.answer(self.model, words, lang, "stage1", first_sentence(text), sampling)

    async def continue_chat(self, messages: list[dict], prefix: str, **sampling: Any) -> str:
        text, lang = extend_input(messages[-1]["content"])
        words = self.client.lengths.cont(_rng(sampling, "continue"), count_words(text or prefix))
        return "\n\n" + await self.client.answer(self.model, words, lang, "stage2", first_sentence(text or prefix),
                                                 sampling)


class SimulatedClientFactory:
    def __init__(self, engine_name: str, lengths: LengthModel, namespace: str | None = None):
        self.engine_name, self.lengths, self.namespace = engine_name, lengths, namespace

    def __call__(self, settings, plan) -> SimulatedClient:
        import ray

        from actors.synthesis import priority_models  # what the served client would send priorities to

        return SimulatedClient(ray.get_actor(self.engine_name, namespace=self.namespace), self.lengths,
                               frozenset(priority_models(settings, plan)))

