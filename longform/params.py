"""The method's knobs, with the reference's defaults. Validated by pydantic so that a bad value
is reported with its key (e.g. `method.min_growth: Input should be greater than 1`)."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    """Unknown keys are errors; so are inf and nan (`temperature: .inf` is valid YAML)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Decoding(Strict):
    """Sampling settings sent with every generation call (reference values)."""

    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(20, ge=-1)
    repetition_penalty: float = Field(1.1, gt=0)
    max_tokens: int | None = Field(
        16384, ge=1, description="None: up to the model's context window (the engine's default)"
    )
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None

    @field_validator("stop")
    @classmethod
    def no_markdown_rule_stop(cls, stop: list[str]) -> list[str]:
        if any(s.strip() == "---" for s in stop):
            raise ValueError('"---" must not be a stop string: it cuts texts at markdown rules')
        return stop

    def request_fields(self, key: str = "", priority: int | None = None) -> dict:
        """Fields for one request. With a base `seed`, each request gets its own seed derived
        from `key` (e.g. "r1/en-0003/d0/a2"), so a rerun repeats every call exactly. A
        `priority` (see `chain_priority`) is sent as vLLM's `priority` field."""
        fields = self.model_dump(exclude_none=True)
        if not fields.get("stop"):
            fields.pop("stop", None)
        if self.seed is not None:
            fields["seed"] = stable_seed(self.seed, key)
        if priority is not None:
            fields["priority"] = priority
        return fields


# Sampling knobs a hosted OpenAI-compatible API may not know, and the value that means "off".
NEUTRAL_SAMPLING = {"top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0}


def portable_fields(decoding: Decoding, key: str = "") -> dict:
    """`Decoding.request_fields` without the knobs left at their neutral value, so that an
    endpoint that rejects unknown fields (top_k, repetition_penalty) accepts the request. The
    server's defaults apply to what is left out (vLLM: the model's generation_config.json,
    as `generate` did in the references)."""
    fields = decoding.request_fields(key)
    return {k: v for k, v in fields.items() if NEUTRAL_SAMPLING.get(k, object()) != v}


# Where a call stands in its draft's chain: draft -> stage 1 -> stage 2 (then the next micro-step
# or attempt: stage 1 again).
DRAFT, STAGE1, STAGE2 = 0, 1, 2


def chain_priority(model: object, depth: int, tries: int = 0, words: int = 0) -> int | None:
    """The `priority` of one call of the method, for an engine that schedules by priority (vLLM's
    `scheduling_policy: priority` admits the waiting request with the LOWEST value first, first
    come first served among equals); None, i.e. no field at all, unless `model` says its engine
    does (`model.by_priority`, see actors/client.py).

    `depth` is DRAFT, STAGE1 or STAGE2; `tries` the calls of the same kind this chain made
    before (a draft's failed attempts; an extension's earlier attempts and micro-steps); `words`
    the length of the text an extension call extends. The order, longest remaining chain first:
    1. drafts, retries first: a draft's length is unknown until it is written, any one of them
       may start the longest chain, and its shard's extensions all wait for it;
    2. then extension calls on longer texts first (a longer text has the longer calls ahead of
       it), stage 2 before stage 1 on texts of the same length, then more `tries` first.
    bench/streaming.py measured the other order, every stage 2 before every stage 1 before every
    draft: it starves the drafts, and the longest draft then starts last (1.55x the makespan
    bound instead of fcfs's 1.36x; this order: 1.11-1.14x)."""
    if not getattr(model, "by_priority", False):
        return None
    if depth == DRAFT:
        return -(10**12 + min(tries, 999))
    return -(min(words, 10**7) * 10**4 + depth * 10**3 + min(tries, 999))


def stable_seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class MethodParams(Strict):
    """One round of Self-Lengthen: drafts, two-stage extension, filters, SFT sets."""

    responses_per_instruction: int = Field(2, ge=1)
    draft_attempts: int = Field(20, ge=1, description="tries per draft until it passes the rules")
    extensions_per_draft: int = Field(2, ge=1, description="independent extensions of each draft")
    extension_attempts: int = Field(20, ge=1, description="tries per extension until > min_growth")
    extension_steps: int = Field(3, ge=1, description="micro-steps of the two-stage extension")
    stage1_keep: float = Field(2 / 3, gt=0, le=1, description="share of stage-1 paragraphs kept")
    min_growth: float = Field(1.2, gt=1, description="keep an extension only above this ratio")
    length_biased_sampling: bool = True
    extender_line_keep: float = Field(
        0.8, gt=0, le=1, description="share of draft lines kept in the extender's SFT input"
    )
    control: bool = Field(
        False, description="control run: train on the drafts themselves, no extension"
    )
