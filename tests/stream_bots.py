"""A bot that streams like a model writing (importable by path from server subprocesses and the bench),
and what a page makes of the frames it gets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from chatbot_server import Bot, Delta, Reply, Turn, Typing
from chatbot_server.bots import BotEvent
from chatbot_server.chat.streams import utf16_length


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


class Page:
    """What a page shows of streamed replies, by the rules of docs/protocol.md: text by offset."""

    def __init__(self) -> None:
        self.writing: dict[str, str] = {}  # reply id -> text so far
        self.done: dict[str, dict[str, Any]] = {}  # reply id -> final frame
        self.streamed: dict[str, str] = {}  # reply id -> the text its deltas made, when it ended
        self.replying_to: dict[str, str | None] = {}  # reply id -> the message it answers

    def see(self, f: dict[str, Any]) -> None:
        kind = f["type"]
        if kind == "reply_start":
            # As the chat page does: a new start for the same question takes the place of the old.
            for reply in [r for r, to in self.replying_to.items() if to == f.get("reply_to") and r != f["id"]]:
                self.writing.pop(reply, None)
                del self.replying_to[reply]
            self.writing.setdefault(f["id"], "")
            self.replying_to[f["id"]] = f.get("reply_to")
        elif kind == "reply_delta":
            have = self.writing.get(f["id"], "")
            units, offset = utf16_length(have), f["offset"]
            assert offset <= units, f"a gap: have {units} units, delta at {offset}"
            new = f["text"]
            skip = units - offset  # what this delta repeats (a catch-up after a reconnect)
            if skip < utf16_length(new):
                self.writing[f["id"]] = have + new.encode("utf-16-le")[2 * skip :].decode("utf-16-le")
        elif kind == "reply" and "id" in f:
            self.done[f["id"]] = f
            self.streamed[f["id"]] = self.writing.pop(f["id"], "")
