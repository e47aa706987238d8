"""A bot that streams like a model writing: importable by path from server subprocesses and the bench."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from chatbot_server import Bot, Delta, Reply, Turn, Typing
from chatbot_server.bots import BotEvent


class PacedBot(Bot):
    """Streams a reply scripted from the question, one piece every `interval` seconds."""

    uses_history = False

    def __init__(self, interval: float = 0.02, pieces: int = 20) -> None:
        self.interval = interval
        self.pieces = pieces

    def script(self, question: str) -> list[str]:
        """The pieces of the reply to `question` (the same on every process, for checking)."""
        return [f"{question}·第{n}段😀;" for n in range(self.pieces)]

    async def respond(self, turn: Turn) -> AsyncIterator[BotEvent]:
        yield Typing()
        for piece in self.script(turn.text):
            await asyncio.sleep(self.interval)  # the model writing (the bot's behaviour, not a test's wait)
            yield Delta(piece)
        yield Reply(text="".join(self.script(turn.text)), intent="paced", confidence=1.0)
