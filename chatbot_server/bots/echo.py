"""The seed's bot: it only says it is thinking about the question."""

from __future__ import annotations

from typing import ClassVar

from .base import Bot, Reply, Turn


class EchoBot(Bot):
    """Answers every turn like the original tutorial: 我正在思考你的问题{...}."""

    uses_history: ClassVar[bool] = False

    def __init__(self, template: str = "我正在思考你的问题{{{text}}}") -> None:
        self.template = template
        # A template with one {text} is answered by concatenation, not str.format per message.
        marker = "\x00"
        filled = template.format(text=marker)
        self._parts = filled.split(marker) if filled.count(marker) == 1 and marker not in template else None

    def answer(self, turn: Turn) -> Reply:  # answers at once: no coroutine, no timeout
        parts = self._parts
        text = parts[0] + turn.text + parts[1] if parts is not None else self.template.format(text=turn.text)
        return Reply(text, "echo", 1.0)
