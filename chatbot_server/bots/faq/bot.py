"""FaqBot: answers bank-card questions from a YAML knowledge base, reloading it when it changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ...errors import BotError, ConfigError
from ..base import Bot, BotContext, BotEvent, Reply, Turn, Typing
from .cascade import CascadeParams, Matcher
from .knowledge import KnowledgeBase, file_signature, load_knowledge_base
from .options import FaqOptions, parse_options
from .ranker import Index
from .reply import RANK_LIMIT, compose_reply, reply_for
from .semantic import Encoder, SemanticIndex, load_encoder, lower_priority

logger = logging.getLogger("chatbot_server.bots.faq")

# Longer messages are cut before matching: the question sits in the first lines, and an
# unbounded text would let one client make the ranker do unbounded work.
MAX_QUERY_CHARS = 500
# An unsure question asked while the semantic stage still warms up (about 2 s after start)
# waits for it this long, so that its answer does not depend on when it was asked.
SEMANTIC_WAIT = 10.0

T = TypeVar("T")


def build_index(path: Path) -> Index:
    """Load, validate and index the knowledge base at `path` (blocking: run it in a thread)."""
    return Index(load_knowledge_base(path))


def build_matcher(path: Path, params: CascadeParams, encoder: Encoder | None) -> Matcher:
    """The lexical index and, given an encoder, the semantic index."""
    index = build_index(path)
    return Matcher(index, SemanticIndex(index, encoder) if encoder is not None else None, params)


def warm_up(index: Index) -> SemanticIndex | None:
    """Load the encoder and embed the indexed base's questions; None without the semantic extra."""
    encoder = load_encoder()
    return None if encoder is None else SemanticIndex(index, encoder)


async def run_niced(function: Callable[..., T], *args: Any) -> T:
    """Run `function` in its own niced thread: a warm-up must not slow the answers meanwhile.

    Not the default executor: a niced pool thread would stay niced for the answers it runs later.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():  # cancelled by close(): nobody waits for the outcome
            setter(value)

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, setter, value)

    def run() -> None:
        lower_priority()
        try:
            result = function(*args)
        except BaseException as exc:  # handed to the awaiting task, which decides
            deliver(future.set_exception, exc)
        else:
            deliver(future.set_result, result)

    threading.Thread(target=run, name="faq-semantic-warm-up", daemon=True).start()
    return await future


class FaqBot(Bot):
    """Retrieval FAQ bot: BM25 over jieba words, synonyms and character n-grams, and for what that
    is unsure of, sentence-embedding similarity (the optional semantic stage)."""

    uses_history: ClassVar[bool] = False  # each question is answered on its own

    def __init__(self, options: FaqOptions | None = None, *, agents: bool = False) -> None:
        self.options = options or FaqOptions()
        self.agents = agents  # whether the fallback may offer 转人工 (BotContext.agents)
        self._matcher: Matcher | None = None
        self._warm_up: asyncio.Task[None] | None = None
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
        return self._require_matcher().kb

    @property
    def matcher(self) -> Matcher:
        """The matcher currently answering; BotError before start()."""
        return self._require_matcher()

    @property
    def semantic_ready(self) -> bool:
        """True once the semantic stage answers (never without its extra or with `semantic: false`)."""
        return self._matcher is not None and self._matcher.semantic is not None

    async def wait_semantic(self) -> bool:
        """Wait for the semantic stage's warm-up to finish; return whether the stage is on."""
        warm_up = self._warm_up
        if warm_up is not None and not warm_up.done():
            await asyncio.wait([warm_up])  # never raises: the warm-up logs its own failure
        return self.semantic_ready

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

    async def _install(self, matcher: Matcher, *, new_base: bool = True) -> None:
        async with self._swapped:
            self._matcher = matcher
            self._generation += new_base  # the warm-up adds a stage, not a knowledge base
            self._swapped.notify_all()

    async def _attempted(self) -> None:
        async with self._swapped:
            self._attempts += 1
            self._swapped.notify_all()

    async def start(self) -> None:
        """Load jieba and the knowledge base in a worker thread, start the file watcher and the
        semantic stage's warm-up (the bot answers lexically meanwhile)."""
        if self._matcher is not None:
            return
        params = self.options.cascade()
        matcher = await asyncio.to_thread(build_matcher, self.options.knowledge_base, params, None)
        await self._install(matcher)
        logger.info("faq knowledge base %s loaded: %d entries", self.options.knowledge_base, len(matcher.kb.entries))
        if self.options.semantic:
            self._warm_up = asyncio.create_task(self._warm_up_semantic(), name="faq-semantic-warm-up")
        if self.options.watch:
            self._watcher = asyncio.create_task(self._watch(), name="faq-knowledge-base-watcher")

    async def _warm_up_semantic(self) -> None:
        """Load the encoder and embed the current base off the event loop, then install it."""
        try:
            async with self._reload_lock:  # a reload meanwhile would embed a base already replaced
                matcher = self._require_matcher()
                semantic = await run_niced(warm_up, matcher.index)
                if semantic is not None:
                    await self._install(matcher.with_semantic(semantic), new_base=False)
                    logger.info(
                        "faq semantic stage ready: %d questions embedded in %.1f s",
                        len(semantic.texts),
                        semantic.seconds,
                    )
        except Exception:  # the lexical stage goes on answering; say why the other one is off
            logger.exception("faq semantic stage off: warm-up failed")

    async def close(self) -> None:
        """Stop the watcher and the warm-up and drop the indexes."""
        for task in (self._watcher, self._warm_up):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher = self._warm_up = None
        self._matcher = None

    async def check(self) -> None:
        """Validate the knowledge base file without starting the bot; raise ConfigError."""
        await asyncio.to_thread(load_knowledge_base, self.options.knowledge_base)

    async def reload(self) -> None:
        """Re-read the knowledge base; on errors log them and keep answering from the old one."""
        async with self._reload_lock:
            path = self.options.knowledge_base
            previous = self._matcher
            # The warm-up holds this lock until it installs its encoder, so a reload never misses it.
            encoder = previous.semantic.encoder if previous is not None and previous.semantic is not None else None
            try:
                matcher = await asyncio.to_thread(build_matcher, path, self.options.cascade(), encoder)
            except ConfigError as exc:
                with contextlib.suppress(OSError):
                    self._rejected = file_signature(path)
                logger.error("faq knowledge base not reloaded, keeping the previous one: %s", exc)
            else:
                await self._install(matcher)
                self._rejected = None
                logger.info("faq knowledge base %s reloaded: %d entries", path, len(matcher.kb.entries))
            finally:
                await self._attempted()

    async def respond(self, turn: Turn) -> AsyncIterator[BotEvent]:
        """Yield Typing, then the answer computed in a worker thread."""
        yield Typing()
        yield await self.answer(turn)

    async def answer(self, turn: Turn) -> Reply:
        """Return the reply for one turn (ranking runs off the event loop)."""
        matcher = self._require_matcher()
        text = turn.text[:MAX_QUERY_CHARS]
        warm_up = self._warm_up
        if warm_up is not None and not warm_up.done():
            ranking = await asyncio.to_thread(matcher.lexical, text, RANK_LIMIT)
            if matcher.is_sure(ranking):
                return reply_for(matcher, ranking, agents=self.agents)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(warm_up), SEMANTIC_WAIT)
            matcher = self._require_matcher()
        return await asyncio.to_thread(compose_reply, matcher, text, agents=self.agents)

    def _require_matcher(self) -> Matcher:
        if self._matcher is None:
            raise BotError("FaqBot.start() must be awaited before use")
        return self._matcher

    async def _watch(self) -> None:
        """Poll the file's mtime and size; reload when they change."""
        path = self.options.knowledge_base
        while True:
            await asyncio.sleep(self.options.watch_interval)
            matcher = self._matcher
            if matcher is None:
                continue
            try:
                signature = file_signature(path)
            except OSError as exc:
                if self._rejected != (0, 0):
                    logger.error("faq knowledge base %s is unreadable: %s", path, exc)
                    self._rejected = (0, 0)
                continue
            if signature != matcher.kb.signature and signature != self._rejected:
                await self.reload()
