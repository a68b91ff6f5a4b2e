"""What the method needs from a language model, and nothing more.

`ChatModel` is implemented by `actors.client.RoleModel` (a served role over HTTP) and, in unit
tests, by small scripted models. A call that cannot be completed raises `ModelCallError`; the
method records the error on the record and never treats it as text.
"""

from __future__ import annotations

from typing import Any, Protocol

Message = dict[str, str]


class ModelCallError(Exception):
    """A call that failed for good, after the client's own retries."""


class ChatModel(Protocol):
    async def chat(self, messages: list[Message], **sampling: Any) -> str:
        """The assistant's reply to `messages` (chat template applied by the server)."""

    async def continue_chat(self, messages: list[Message], prefix: str, **sampling: Any) -> str:
        """Raw completion of an assistant turn that already starts with `prefix`.

        Returns only the text generated after `prefix`."""


def user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]
