"""Note the questions the bot could not answer well, for supervisors (docs/agents.md).

Called on every reply, so the test is a few attribute reads; the write runs in a task of its own
(fire and forget, at most MAX_PENDING at once): a slow or failing store never delays or fails a
reply, it is logged and counted (`chatbot_errors_total{code="unanswered_unavailable"}`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..bots import Reply
from ..errors import ChatbotServerError
from ..masking import mask_sensitive
from ..protocol import now_ms
from ..store.unanswered import MAX_TEXT, Unanswered, UnansweredStore

log = logging.getLogger("chatbot_server.chat")

#: Writes in flight at most; beyond, questions are dropped (and counted) rather than queued.
MAX_PENDING = 100


class UnansweredNotes:
    """One per application: `note` is Answering.notes."""

    def __init__(self, store: UnansweredStore, *, below: float, stats: Any) -> None:
        self.store = store
        self.below = below
        self.stats = stats
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, asked: str, reply: Reply) -> None:
        """Keep `asked` if the bot fell back, matched "out_of_scope" (Reply's "not ours") or answered
        below `below` (a request for a human is no question)."""
        if reply.handoff or not (reply.fallback or reply.confidence < self.below or reply.intent == "out_of_scope"):
            return
        if len(self._tasks) >= MAX_PENDING:
            self.stats.error("unanswered_dropped")
            return
        item = Unanswered(
            mask_sensitive(asked)[:MAX_TEXT], now_ms(), reply.intent, reply.confidence, reply.fallback, reply.candidates
        )
        task = asyncio.get_running_loop().create_task(self._add(item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _add(self, item: Unanswered) -> None:
        try:
            await self.store.add(item)
        except (ChatbotServerError, OSError) as exc:
            log.warning("unanswered.unavailable error=%s", exc)
            self.stats.error("unanswered_unavailable")

    async def settle(self) -> None:
        """Wait for the writes in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
