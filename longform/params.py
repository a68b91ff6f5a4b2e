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

    def request_fields(self, key: str = "") -> dict:
        """Fields for one request. With a base `seed`, each request gets its own seed derived
        from `key` (e.g. "r1/en-0003/d0/a2"), so a rerun repeats every call exactly."""
        fields = self.model_dump(exclude_none=True)
        if not fields.get("stop"):
            fields.pop("stop", None)
        if self.seed is not None:
            fields["seed"] = stable_seed(self.seed, key)
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
