"""LlmBot (`bot.name: llm`): answers with a model behind an OpenAI-compatible endpoint, grounded in
the FAQ knowledge base, and falls back to the FAQ answer whenever the model fails (issue #18).

A turn: the FAQ bot ranks the question first. Out of scope, a handoff, a greeting or a goodbye is
answered with the FAQ reply itself and no model call (the polite refusal stays the refusal). Else
the model gets the entry the FAQ matched and those its suggestions point to (`top_k` in all), the
recent turns and the question, all masked; its text streams to the user as Deltas, and the final
Reply adds a citation of the entry. If the endpoint cannot be reached, errs, is too slow or sends
something that is not a chat-completion stream, the final Reply is the FAQ answer instead (it
replaces any Deltas already shown) and the fault is counted (`counters()`, in /metrics).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import BotError, ConfigError
from .base import Bot, BotContext, BotEvent, Delta, Reply, Turn, Typing
from .faq import FaqBot
from .llm_client import CompletionClient
from .llm_options import KEY_PREFIX, LlmOptions, parse_options
from .llm_prompt import GroundingEntry, build_messages, citation
from .llm_sse import FAULT_KINDS, LlmError

logger = logging.getLogger("chatbot_server.bots.llm")

#: FAQ intents answered as they are, without the model: pleasantries, the handoff, the refusal.
DIRECT_INTENTS = frozenset({"out_of_scope", "human_agent", "greeting", "thanks_goodbye"})
#: Events counted besides the faults: answers the model gave, and FAQ replies given without asking it.
EVENT_KINDS = ("llm_answered", "llm_direct", *FAULT_KINDS)


class LlmBot(Bot):
    """A model's answers grounded in the FAQ knowledge base, with the FAQ bot as its fallback."""

    uses_history: ClassVar[bool] = True  # the recent turns go to the model as context

    def __init__(self, options: LlmOptions, faq: FaqBot) -> None:
        self.options = options
        self.faq = faq
        self._client: CompletionClient | None = None
        # Every kind from the start, at 0: a rate over a series that appears late misses its start.
        self._counts: Counter[str] = Counter(dict.fromkeys(EVENT_KINDS, 0))
        self._questions: tuple[object, dict[str, GroundingEntry]] | None = None

    def __repr__(self) -> str:
        return f"<LlmBot model={self.options.model} endpoint={self.options.endpoint}>"

    @classmethod
    def from_options(cls, options: Mapping[str, Any], context: BotContext) -> LlmBot:
        """Build the bot and its FAQ bot (from the `faq` mapping); ConfigError naming the bad key."""
        parsed = parse_options(options)
        with _faq_keys():
            faq = FaqBot.from_options(parsed.faq, context)
        return cls(parsed, faq)

    async def start(self) -> None:
        """Start the FAQ bot and open the HTTP session; read the key from its variable now."""
        if self._client is not None:
            return
        with _faq_keys():
            await self.faq.start()
        name = self.options.api_key_env
        key = os.environ.get(name) if name else None
        if name and not key:
            logger.warning("llm bot: environment variable %s is not set; requests go without a key", name)
        self._client = CompletionClient(self.options, key)
        logger.info("llm bot: model %s at %s", self.options.model, _where(self.options.endpoint))

    async def close(self) -> None:
        """Close the HTTP session and the FAQ bot."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        await self.faq.close()

    async def reload(self) -> None:
        """Reload the FAQ bot's knowledge base (the grounding entries come from it)."""
        await self.faq.reload()

    async def check(self) -> None:
        """Validate the FAQ bot's knowledge base without starting anything."""
        with _faq_keys():
            await self.faq.check()

    def counters(self) -> Mapping[str, int]:
        """Answers, direct FAQ replies and faults by kind (chatbot_bot_events_total)."""
        return dict(self._counts)

    async def answer(self, turn: Turn) -> Reply:
        """The final Reply of respond(), for callers that do not stream."""
        final: Reply | None = None
        async for event in self.respond(turn):
            if isinstance(event, Reply):
                final = event
        assert final is not None  # respond() always ends with a Reply
        return final

    async def respond(self, turn: Turn) -> AsyncIterator[BotEvent]:
        """Typing, then the model's text as Deltas, then the final Reply (or the FAQ reply)."""
        client = self._client
        if client is None:
            raise BotError("LlmBot.start() must be awaited before use")
        yield Typing()
        faq_reply = await self._faq_answer(turn)
        entries = self._grounding(faq_reply)
        if not entries:
            self._counts["llm_direct"] += 1
            yield faq_reply
            return
        messages = build_messages(self.options.system_prompt, entries, turn.history, turn.text)
        started = time.monotonic()
        pieces: list[str] = []
        try:
            async with contextlib.aclosing(client.stream(messages)) as stream:
                async for piece in stream:
                    if not pieces:
                        piece = piece.lstrip()  # models often open with a newline or two
                        if not piece:
                            continue
                    pieces.append(piece)
                    yield Delta(piece)
            text = "".join(pieces).rstrip()
            if not text:
                raise LlmError("llm_empty")
        except LlmError as fault:
            self._counts[fault.kind] += 1
            logger.warning(
                "llm.fault kind=%s%s conversation=%s after=%.2fs shown=%d",
                fault.kind,
                f" detail={fault.detail}" if fault.detail else "",
                turn.conversation_id[:8],
                time.monotonic() - started,
                len(pieces),
            )
            yield faq_reply
            return
        self._counts["llm_answered"] += 1
        cite = citation(entries[0])
        yield Delta(cite)
        yield Reply(
            text=text + cite,
            intent=entries[0].id,
            confidence=faq_reply.confidence,
            suggestions=faq_reply.suggestions,
        )

    async def _faq_answer(self, turn: Turn) -> Reply:
        # Only FaqBot's public answer(): it may be a coroutine function or a plain one.
        reply = self.faq.answer(turn)
        return await reply if inspect.isawaitable(reply) else reply

    def _grounding(self, reply: Reply) -> list[GroundingEntry]:
        """The entries to ground the answer in: the matched one, then those its suggestions name
        (up to top_k); none when the FAQ reply is to be given as it is."""
        if reply.fallback or reply.handoff or reply.intent in DIRECT_INTENTS:
            return []
        kb = self.faq.knowledge_base
        try:
            entries: list[GroundingEntry] = [kb.entry(reply.intent)]
        except KeyError:
            return []  # not a knowledge-base answer: nothing to ground a model in
        by_question = self._by_question()
        for question in reply.suggestions:
            if len(entries) >= self.options.top_k:
                break
            entry = by_question.get(question)
            if entry is not None and entry.id not in DIRECT_INTENTS and all(e.id != entry.id for e in entries):
                entries.append(entry)
        return entries

    def _by_question(self) -> dict[str, GroundingEntry]:
        """Entries by their questions (suggestions are questions), built once per knowledge base."""
        kb = self.faq.knowledge_base
        cached = self._questions
        if cached is not None and cached[0] is kb:
            return cached[1]
        table: dict[str, GroundingEntry] = {}
        for entry in kb.entries:
            for question in entry.questions:
                table.setdefault(question, entry)
        self._questions = (kb, table)
        return table


@contextlib.contextmanager
def _faq_keys() -> Iterator[None]:
    """Re-key the FAQ bot's ConfigErrors under bot.options.faq: its options live there for this bot."""
    try:
        yield
    except ConfigError as exc:
        if not exc.key.startswith(KEY_PREFIX) or exc.key.startswith(KEY_PREFIX + "faq."):
            raise
        message = str(exc).removeprefix(f"{exc.source}: " if exc.source else "").removeprefix(f"{exc.key}: ")
        raise ConfigError(
            message, key=KEY_PREFIX + "faq." + exc.key.removeprefix(KEY_PREFIX), source=exc.source
        ) from exc


def _where(endpoint: str) -> str:
    """The endpoint without any user:password@ in it, for the log."""
    parts = urlsplit(endpoint)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
