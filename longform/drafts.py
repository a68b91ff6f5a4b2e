"""Initial responses ("drafts"): the Generator answers an instruction; an answer that breaks a
quality rule is asked for again, up to `draft_attempts` times. Every failed attempt is
recorded with its rule, and a draft that never passes is reported, not silently dropped."""

from __future__ import annotations

from dataclasses import dataclass, field

from longform.model import ChatModel, ModelCallError, user
from longform.params import DRAFT, Decoding, chain_priority
from longform.quality import check_quality
from longform.words import count_words


@dataclass
class Draft:
    text: str | None
    words: int = 0
    attempts: int = 0
    rejections: list[str] = field(default_factory=list)
    error: str | None = None
    failed: tuple[str, str] | None = None  # (text, rule) of the last attempt a quality rule turned down

    @property
    def reason(self) -> str | None:
        if self.text is not None:
            return None
        return self.error or "attempts_exhausted"


async def write_draft(
    instruction: str, model: ChatModel, decoding: Decoding, attempts: int, key: str
) -> Draft:
    draft = Draft(text=None)
    for attempt in range(attempts):
        draft.attempts = attempt + 1
        try:
            fields = decoding.request_fields(f"{key}/a{attempt}", chain_priority(model, DRAFT, attempt))
            text = (await model.chat(user(instruction), **fields)).strip()
        except ModelCallError as err:
            draft.error = f"model_error: {err}"
            return draft
        rejection = check_quality(text)
        if rejection is None:
            draft.text, draft.words = text, count_words(text)
            return draft
        draft.rejections.append(rejection.rule)
        draft.failed = (text, rejection.rule)
    return draft
