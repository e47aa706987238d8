"""Bots for bench/bench_stream.py: they answer at once, so what is measured is the server's own cost."""

from __future__ import annotations

from collections.abc import AsyncIterator

from chatbot_server import Bot, Delta, Reply, Turn
from chatbot_server.bots import BotEvent


class PlainAsyncBot(Bot):
    """An `async def answer` bot: one finished reply (the path every bot took before #18)."""

    uses_history = False

    async def answer(self, turn: Turn) -> Reply:
        return Reply(text="好的," + turn.text, intent="bench")


class InstantStreamBot(Bot):
    """Streams `pieces` pieces of 4 characters with no wait, then the Reply (0: the Reply alone)."""

    uses_history = False

    def __init__(self, pieces: int = 1) -> None:
        self.pieces = pieces

    async def respond(self, turn: Turn) -> AsyncIterator[BotEvent]:
        text = ""
        for _ in range(self.pieces):
            text += "银联卡好"
            yield Delta("银联卡好")
        yield Reply(text=text or "好的," + turn.text, intent="bench")
