"""FaqBot: answers bank-card questions from a YAML knowledge base, reloading it when it changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ...errors import BotError, ConfigError
from ..base import Bot, BotContext, BotEvent, Reply, Turn, Typing
from .knowledge import KnowledgeBase, file_signature, load_knowledge_base
from .options import FaqOptions, parse_options
from .ranker import Index
from .reply import compose_reply

logger = logging.getLogger("chatbot_server.bots.faq")

# Longer messages are cut before matching: the question sits in the first lines, and an
# unbounded text would let one client make the ranker do unbounded work.
MAX_QUERY_CHARS = 500


def build_index(path: Path) -> Index:
    """Load, validate and index the knowledge base at `path` (blocking: run it in a thread)."""
    return Index(load_knowledge_base(path))


class FaqBot(Bot):
    """Retrieval FAQ bot: jieba words + synonyms + character n-grams ranked with BM25."""

    uses_history: ClassVar[bool] = False  # each question is answered on its own

    def __init__(self, options: FaqOptions | None = None, *, agents: bool = False) -> None:
        self.options = options or FaqOptions()
        self.agents = agents  # whether the fallback may offer 转人工 (BotContext.agents)
        self._index: Index | None = None
        self._reload_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        # The (mtime, size) of a file that failed to load, so the watcher logs it only once.
        self._rejected: tuple[int, int] | None = None
        self._generation = 0
        self._attempts = 0
        self._swapped = asyncio.Condition()

    @classmethod
    def from_options(cls, options: Mapping[str, Any], context: BotContext) -> FaqBot:
        """Build the bot from `bot.options`; raise ConfigError naming the bad key."""
        return cls(parse_options(options, context.base_dir), agents=context.agents)

    @property
    def knowledge_base(self) -> KnowledgeBase:
        """The knowledge base currently answering; BotError before start()."""
        return self._require_index().kb

    @property
    def generation(self) -> int:
        """How many knowledge bases have been installed: 1 after start(), +1 per successful reload."""
        return self._generation

    @property
    def reload_attempts(self) -> int:
        """How many reloads (manual or by the watcher) have finished, successful or not."""
        return self._attempts

    @property
    def watching(self) -> bool:
        """True while the file watcher task runs."""
        return self._watcher is not None and not self._watcher.done()

    async def wait_for_generation(self, generation: int) -> None:
        """Wait until knowledge base number `generation` is installed (bound it with a timeout)."""
        async with self._swapped:
            await self._swapped.wait_for(lambda: self._generation >= generation)

    async def wait_for_reload_attempts(self, attempts: int) -> None:
        """Wait until `attempts` reloads have finished, whatever their outcome."""
        async with self._swapped:
            await self._swapped.wait_for(lambda: self._attempts >= attempts)

    async def _install(self, index: Index) -> None:
        async with self._swapped:
            self._index = index
            self._generation += 1
            self._swapped.notify_all()

    async def _attempted(self) -> None:
        async with self._swapped:
            self._attempts += 1
            self._swapped.notify_all()

    async def start(self) -> None:
        """Load jieba and the knowledge base in a worker thread, then start the file watcher."""
        if self._index is not None:
            return
        index = await asyncio.to_thread(build_index, self.options.knowledge_base)
        await self._install(index)
        logger.info("faq knowledge base %s loaded: %d entries", self.options.knowledge_base, len(index.kb.entries))
        if self.options.watch:
            self._watcher = asyncio.create_task(self._watch(), name="faq-knowledge-base-watcher")

    async def close(self) -> None:
        """Stop the watcher and drop the index."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self._index = None

    async def check(self) -> None:
        """Validate the knowledge base file without starting the bot; raise ConfigError."""
        await asyncio.to_thread(load_knowledge_base, self.options.knowledge_base)

    async def reload(self) -> None:
        """Re-read the knowledge base; on errors log them and keep answering from the old one."""
        async with self._reload_lock:
            path = self.options.knowledge_base
            try:
                index = await asyncio.to_thread(build_index, path)
            except ConfigError as exc:
                with contextlib.suppress(OSError):
                    self._rejected = file_signature(path)
                logger.error("faq knowledge base not reloaded, keeping the previous one: %s", exc)
            else:
                await self._install(index)
                self._rejected = None
                logger.info("faq knowledge base %s reloaded: %d entries", path, len(index.kb.entries))
            finally:
                await self._attempted()

    async def respond(self, turn: Turn) -> AsyncIterator[BotEvent]:
        """Yield Typing, then the answer computed in a worker thread."""
        yield Typing()
        yield await self.answer(turn)

    async def answer(self, turn: Turn) -> Reply:
        """Return the reply for one turn (ranking runs off the event loop)."""
        index = self._require_index()
        text = turn.text[:MAX_QUERY_CHARS]
        return await asyncio.to_thread(compose_reply, index, text, self.options.threshold, agents=self.agents)

    def _require_index(self) -> Index:
        if self._index is None:
            raise BotError("FaqBot.start() must be awaited before use")
        return self._index

    async def _watch(self) -> None:
        """Poll the file's mtime and size; reload when they change."""
        path = self.options.knowledge_base
        while True:
            await asyncio.sleep(self.options.watch_interval)
            index = self._index
            if index is None:
                continue
            try:
                signature = file_signature(path)
            except OSError as exc:
                if self._rejected != (0, 0):
                    logger.error("faq knowledge base %s is unreadable: %s", path, exc)
                    self._rejected = (0, 0)
                continue
            if signature != index.kb.signature and signature != self._rejected:
                await self.reload()
