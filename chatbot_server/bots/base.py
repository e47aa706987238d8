"""The Bot interface: what a bot gets (a Turn) and what it gives back (Replies, Typing notices)."""

from __future__ import annotations

import abc
import inspect
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

Role = Literal["user", "bot", "agent", "system"]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One earlier line of the conversation, oldest first in Turn.history."""

    role: Role
    text: str


# Turn and Reply are made once per message: plain (not frozen) slotted dataclasses, whose __init__
# is cheaper than a frozen one's (bench/README.md). Treat them as values all the same.
@dataclass(slots=True)
class Turn:
    """One user message for the bot to answer."""

    conversation_id: str
    text: str
    history: Sequence[HistoryEntry] = ()


@dataclass(slots=True)
class Reply:
    """A bot answer. `intent` is a knowledge-base id or "out_of_scope"; `confidence` is 0..1."""

    text: str
    intent: str = "unknown"
    confidence: float = 1.0
    suggestions: tuple[str, ...] = ()
    # True when the bot thinks a human agent should take over (the customer asked for one).
    handoff: bool = False
    # True when the bot could not match the question and answered with a fallback.
    fallback: bool = False
    # The intents the bot came closest to, best first, with their confidence (the FAQ bot's
    # ranking, already computed): shown to supervisors on the unanswered-questions page.
    candidates: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Typing:
    """Tell the user the bot is working on an answer (shown as a thinking indicator)."""


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of a reply being written, shown to the user as it comes (a streamed answer).

    A bot that streams yields Deltas, then one Reply: the Reply's text is the reply's final text
    (usually the Deltas joined; a bot that gives up midway, e.g. a model that failed, may say
    something else instead, which replaces what was shown) and carries the metadata (intent,
    suggestions, handoff...). Deltas after that Reply start another reply."""

    text: str


BotEvent = Reply | Typing | Delta


@dataclass(frozen=True)
class BotContext:
    """What the server hands a bot when it builds it: where relative paths in options resolve, and
    whether human agents are configured (only then may a bot offer 转人工: the page shows no button
    otherwise, and a handoff reply is answered by the server with the hotline instead)."""

    base_dir: Path = field(default_factory=Path.cwd)
    agents: bool = False


class Bot(abc.ABC):
    """Answers user turns. Implement `answer`, or `respond` to stream several events.

    `answer` may be `async def` (it may wait: a model over HTTP, a thread) or a plain `def` that
    answers at once from memory; which one is decided once per bot class, and only an async bot
    runs under `bot.timeout` (a plain function cannot be interrupted anyway). Bots are built once
    per application by `from_options` with the `bot.options` mapping from config, started before
    the first socket and closed on shutdown. CPU-heavy work belongs in an executor
    (`asyncio.to_thread`), never on the event loop.
    """

    #: Whether Turn.history is read; a bot that ignores it saves the server a store read per turn.
    uses_history: ClassVar[bool] = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any], context: BotContext) -> Bot:
        """Build the bot from its config options; raise ConfigError for bad options."""
        from ..errors import ConfigError

        try:
            return cls(**options)
        except TypeError as exc:
            raise ConfigError(f"bad options for bot {cls.__name__}: {exc}", key="bot.options") from exc

    async def start(self) -> None:
        """Load models or knowledge; called once before the first turn."""

    async def close(self) -> None:
        """Release what `start` opened."""

    async def reload(self) -> None:
        """Reload knowledge without a restart (SIGHUP); keep the old state if the new one is bad."""

    async def check(self) -> None:
        """Validate the bot's files without starting it (for --check-config); raise ConfigError."""

    def counters(self) -> Mapping[str, int]:
        """The bot's own event counts by name (e.g. a model endpoint's faults), read at each scrape
        and shown in /metrics as chatbot_bot_events_total{event="<name>"}; none by default."""
        return {}

    def answer(self, turn: Turn) -> Reply | Awaitable[Reply]:
        """Return one reply for a turn (or, from an `async def`, an awaitable of it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement answer() or respond()")

    async def respond(self, turn: Turn) -> AsyncIterator[BotEvent]:
        """Yield the events for a turn: by default the single answer()."""
        reply = self.answer(turn)
        yield await reply if inspect.isawaitable(reply) else reply


AnswerStyle = Literal["sync", "async", "stream"]


def answer_style(bot: Bot) -> AnswerStyle:
    """How a bot answers, decided once per bot: "stream" if it overrides respond(), else "async"
    or "sync" by whether its answer() is a coroutine function."""
    cls = type(bot)
    if cls.respond is not Bot.respond:
        return "stream"
    return "async" if inspect.iscoroutinefunction(cls.answer) else "sync"
