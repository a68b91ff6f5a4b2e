"""A scripted `ChatModel` for unit tests of the method: answers come from a function of the
request, every call is recorded. Named for what it is: a test double for the served model."""

from __future__ import annotations

from longform.model import ModelCallError


class ScriptedModel:
    def __init__(self, chat=None, cont=None, fail_on: str | None = None):
        self._chat, self._cont, self.fail_on = chat, cont, fail_on
        self.calls: list[dict] = []

    async def chat(self, messages, **sampling):
        self.calls.append({"kind": "chat", "messages": messages, "sampling": sampling})
        prompt = messages[-1]["content"]
        if self.fail_on and self.fail_on in prompt:
            raise ModelCallError("HTTP 400: scripted failure")
        return self._chat(prompt, sampling)

    async def continue_chat(self, messages, prefix, **sampling):
        self.calls.append({"kind": "continue", "messages": messages, "prefix": prefix, "sampling": sampling})
        return self._cont(messages[-1]["content"], prefix, sampling)


def text_of(extend_prompt: str) -> str:
    """The text an English or Chinese extend prompt carries (after 'Draft:' / '草稿：')."""
    for marker in ("Draft:\n\n", "草稿：\n\n"):
        if marker in extend_prompt:
            return extend_prompt.split(marker, 1)[1]
    raise AssertionError(f"not an extend prompt: {extend_prompt[:80]!r}")
