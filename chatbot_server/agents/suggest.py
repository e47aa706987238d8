"""The bot's suggestion: for a conversation an agent holds, what the bot would answer the customer's
last question, shown in the console with a 使用 button (docs/agents.md, "The bot's suggestion").

Asked off the socket's receive loop (one task per conversation, the newest question wins) under
bot.timeout, so a slow bot never holds up the console's other frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypedDict

from ..bots import Bot, Delta, Reply, Turn
from ..bots.echo import EchoBot
from ..bots.faq import FaqBot
from ..masking import mask_sensitive

log = logging.getLogger("chatbot_server.agents")


class SuggestionFrame(TypedDict):
    """Server → console: the bot's answer to the customer's last line."""

    type: Literal["suggestion"]
    conversation: str
    question: str
    intent: str
    answer: str
    score: float


def suggests(bot: Bot, setting: Literal["auto", True, False]) -> bool:
    """agents.suggestions: "auto" asks the built-in bots that answer offline (faq, echo; not the llm
    bot, a model behind an API: one more paid call per customer line, nor a custom bot, which may
    count or bill its calls), true every bot, false none."""
    if setting == "auto":
        return isinstance(bot, (FaqBot, EchoBot))
    return bool(setting)


async def ask(bot: Bot, conversation: str, question: str) -> Reply | None:
    """The bot's reply to `question` (a streaming bot's deltas joined); the caller sets the deadline."""
    pieces: list[str] = []
    async for event in bot.respond(Turn(conversation, question)):
        if isinstance(event, Reply):
            return event
        if isinstance(event, Delta):
            pieces.append(event.text)
    return Reply("".join(pieces)) if pieces else None


class Suggester:
    """One console's suggestions: asks the bot when a customer line is seen, sends the answer."""

    def __init__(self, bot: Bot, send: Callable[[SuggestionFrame], Awaitable[None]], *, timeout: float) -> None:
        self.bot = bot
        self.send = send
        self.timeout = timeout
        self._asked: dict[str, int] = {}  # conversation -> seq of the question asked last
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def seen(self, conversation: str, frames: list[dict[str, Any]]) -> None:
        """Frames of a held conversation (a transcript, or one new frame): ask about its last user
        line unless that one was asked about already (a transcript comes twice)."""
        last = next((f for f in reversed(frames) if f.get("type") == "user"), None)
        if last is None or not isinstance(seq := last.get("seq"), int) or not isinstance(last.get("msg"), str):
            return
        if self._asked.get(conversation, -1) >= seq:
            return
        self._asked[conversation] = seq
        if (running := self._tasks.get(conversation)) is not None:
            running.cancel()  # its question is no longer the last one
        task = asyncio.create_task(self._suggest(conversation, last["msg"]), name=f"suggest-{conversation[:8]}")
        self._tasks[conversation] = task
        task.add_done_callback(lambda done: self._forget(conversation, done))

    def _forget(self, conversation: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(conversation) is task:
            del self._tasks[conversation]

    def drop(self, conversation: str) -> None:
        """The agent let the conversation go."""
        self._asked.pop(conversation, None)
        if (task := self._tasks.pop(conversation, None)) is not None:
            task.cancel()

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    async def _suggest(self, conversation: str, question: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                reply = await ask(self.bot, conversation, question)
        except TimeoutError:
            log.info("agent.suggestion_timeout conversation=%s", conversation[:8])
            return
        except Exception:  # a bot's fault must not take the console down; the customer's turn logs it too
            log.exception("agent.suggestion_failed conversation=%s", conversation[:8])
            return
        if reply is None or not reply.text or reply.handoff:  # "为您转人工" is no answer for the agent
            return
        await self.send(
            {
                "type": "suggestion",
                "conversation": conversation,
                "question": mask_sensitive(question),
                "intent": reply.intent,
                "answer": mask_sensitive(reply.text),
                "score": round(float(reply.confidence), 4),
            }
        )
