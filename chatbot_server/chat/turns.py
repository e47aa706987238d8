"""The bot turn: ask the bot, within its deadline, and turn what it says into frames.

How a bot answers is decided once per bot (bots.answer_style): a plain `def answer` is called
directly (it answers from memory and could not be interrupted anyway, so it gets no timer); an
`async def answer` is awaited under `asyncio.timeout(bot.timeout)`; a bot that overrides
`respond()` streams its events under the same timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..bots import Bot, Delta, HistoryEntry, Reply, Turn, Typing, answer_style
from ..protocol import Frame, frame, now_ms
from ..store.base import FrameLog


class TurnRunner:
    """Runs turns of one bot; one per application."""

    def __init__(self, bot: Bot, *, timeout: float, reply_timeout: float | None = None) -> None:
        self.bot = bot
        self.timeout = timeout
        # A streamed reply may take longer than the first piece may: it is being read meanwhile.
        self.reply_timeout = max(timeout, reply_timeout if reply_timeout is not None else timeout)
        self.style = answer_style(bot)

    async def run(
        self,
        turn: Turn,
        on_reply: Callable[[Reply], Awaitable[None]],
        on_typing: Callable[[], Awaitable[None]],
        on_delta: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """Ask a bot that may wait (style "async" or "stream"); `on_reply` for each reply,
        `on_typing` for each typing notice, `on_delta` for each piece of a reply being written.
        A "sync" bot is called directly by its caller: it needs neither this coroutine nor a timer.

        TimeoutError when no reply (nor its first piece) came within `bot.timeout`, or a reply
        being written did not end within `bot.reply_timeout` of the turn's start; the bot's own
        errors propagate.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(self.timeout) as deadline:
            if self.style == "async":
                await on_reply(await self.bot.answer(turn))  # type: ignore[misc]
                return
            writing = False
            async for event in self.bot.respond(turn):
                if isinstance(event, Delta):
                    if not writing:  # the first piece came in time: now the whole reply's deadline
                        writing = True
                        deadline.reschedule(started + self.reply_timeout)
                    if on_delta is not None and event.text:
                        await on_delta(event.text)
                elif isinstance(event, Typing):
                    await on_typing()
                else:
                    await on_reply(event)
                    if writing:  # the next reply has its first-piece deadline again
                        writing = False
                        deadline.reschedule(loop.time() + self.timeout)


def reply_frame(reply: Reply, reply_to: str | None = None) -> Frame:
    """The frame for a bot reply (`reply_to`: the client id of the message it answers)."""
    confidence = float(reply.confidence)
    if confidence != 1.0 and confidence != 0.0:
        confidence = round(confidence, 4)
    out: dict[str, Any] = {
        "type": "reply",
        "msg": reply.text,
        "talk": True,
        "ts": now_ms(),
        "intent": reply.intent,
        "confidence": confidence,
    }
    if reply_to is not None:
        out["reply_to"] = reply_to
    if reply.suggestions:
        out["suggestions"] = list(reply.suggestions[:3])
    return out  # type: ignore[return-value]


def apology_frame(text: str, intent: str, reply_to: str | None = None) -> Frame:
    """What the user sees when the bot fails or is too slow."""
    out = frame("reply", text, talk=True, intent=intent, confidence=0.0)
    if reply_to is not None:
        out["reply_to"] = reply_to
    return out


_ROLE_OF_FRAME = {"user": "user", "reply": "bot", "greeting": "bot", "agent": "agent", "system": "system"}


async def recent_history(store: FrameLog, conversation: str, wanted: int) -> list[HistoryEntry]:
    """The last `wanted` user/bot lines before the newest one (the turn itself), oldest first."""
    if wanted <= 0:
        return []
    entries = [
        HistoryEntry(role=_ROLE_OF_FRAME[f["type"]], text=f["msg"])  # type: ignore[arg-type]
        for f in await store.recent(conversation, 2 * wanted + 1)
        if f["type"] in _ROLE_OF_FRAME
    ]
    return entries[-wanted - 1 : -1] if entries else []
