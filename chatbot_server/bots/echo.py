"""The seed's bot: it only says it is thinking about the question."""

from __future__ import annotations

from typing import ClassVar

from .base import Bot, Reply, Turn


class EchoBot(Bot):
    """Answers every turn like the original tutorial: 我正在思考你的问题{...}."""

    uses_history: ClassVar[bool] = False

    def __init__(self, template: str = "我正在思考你的问题{{{text}}}") -> None:
        self.template = template

    async def answer(self, turn: Turn) -> Reply:
        return Reply(text=self.template.format(text=turn.text), intent="echo", confidence=1.0)
