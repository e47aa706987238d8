"""The handoff queue: conversations waiting for a human, and which agent holds which conversation.

Claims are atomic: in memory by running without an await, in Redis by one Lua script, so when
two agents claim the same conversation at once exactly one wins. Entries lapse once nobody waits
for them (handoff_base.py); the Redis queue is in handoff_redis.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from .handoff_base import (
    DEADLINE,
    Enqueued,
    HandoffQueue,
    Mode,
    Publisher,
    QueueEntry,
    QueueUnavailableError,
    Waiter,
    now_ms,
)
from .handoff_redis import RedisHandoffQueue

__all__ = [
    "DEADLINE",
    "Enqueued",
    "HandoffQueue",
    "MemoryHandoffQueue",
    "Mode",
    "Publisher",
    "QueueEntry",
    "QueueUnavailableError",
    "RedisHandoffQueue",
    "Waiter",
]


class MemoryHandoffQueue(HandoffQueue):
    """The queue of one process (no await inside a change: each is atomic)."""

    backend = "memory"

    def __init__(self, *, grace: float = 120.0, max_per_ip: int = 2) -> None:
        super().__init__(grace=grace, max_per_ip=max_per_ip)
        self._waiting: dict[str, QueueEntry] = {}  # insertion order is arrival order
        self._deadline: dict[str, int] = {}
        self._ip: dict[str, str] = {}
        self._claims: dict[str, str] = {}
        self._claim_ids: dict[str, str] = {}

    def _lapsed(self, conversation: str, now: int) -> bool:
        return self._deadline.get(conversation, now) < now

    def _drop(self, conversation: str) -> None:
        self._waiting.pop(conversation, None)
        self._deadline.pop(conversation, None)
        self._ip.pop(conversation, None)

    def _sweep(self) -> list[str]:
        now = now_ms()
        gone = [c for c in self._waiting if self._lapsed(c, now)]
        for conversation in gone:
            self._drop(conversation)
        return gone

    async def enqueue(self, conversation: str, preview: str, *, ip: str = "", since: int | None = None) -> Enqueued:
        expired = tuple(self._sweep())
        if conversation in self._claims:
            return Enqueued("claimed", expired=expired)
        deadline = now_ms() + int(self.grace * 1000)
        entry = self._waiting.get(conversation)
        if entry is not None:
            self._deadline[conversation] = max(deadline, self._deadline.get(conversation, 0))
            changed = bool(preview) and preview != entry.preview
            if changed:
                entry = self._waiting[conversation] = QueueEntry(conversation, entry.since, preview)
            position = list(self._waiting).index(conversation) + 1
            return Enqueued("waiting", position, entry, changed, expired)
        if ip and sum(1 for a in self._ip.values() if a == ip) >= self.max_per_ip:
            return Enqueued("refused", expired=expired)
        entry = self._waiting[conversation] = QueueEntry(conversation, since or now_ms(), preview)
        if since is not None:  # back in its old place (insertion order is arrival order)
            self._waiting = dict(sorted(self._waiting.items(), key=lambda item: item[1].since))
        self._deadline[conversation] = deadline
        if ip:
            self._ip[conversation] = ip
        return Enqueued("added", list(self._waiting).index(conversation) + 1, entry, False, expired)

    async def touch(self, conversations: Sequence[str]) -> list[str]:
        deadline = now_ms() + int(self.grace * 1000)
        missing = []
        for conversation in conversations:
            if conversation in self._deadline:
                self._deadline[conversation] = max(deadline, self._deadline[conversation])
            elif conversation not in self._claims:
                missing.append(conversation)
        return missing

    async def sweep(self) -> list[str]:
        return self._sweep()

    async def position(self, conversation: str) -> int | None:
        if conversation not in self._waiting:
            return None
        now = now_ms()
        ahead = 0
        for waiting in self._waiting:
            if waiting == conversation:
                return ahead + 1
            if not self._lapsed(waiting, now):
                ahead += 1
        return None  # pragma: no cover - found above

    async def waiting(self) -> list[QueueEntry]:
        now = now_ms()
        return [e for c, e in self._waiting.items() if not self._lapsed(c, now)]

    async def claim(self, conversation: str, agent: str, request_id: str = "") -> bool:
        if conversation not in self._waiting:
            # The same claim again (a retry) keeps its answer; any other claim lost.
            mine = self._claims.get(conversation) == agent
            return mine and bool(request_id) and self._claim_ids.get(conversation) == request_id
        self._drop(conversation)
        self._claims[conversation] = agent
        if request_id:
            self._claim_ids[conversation] = request_id
        return True

    async def agent_of(self, conversation: str) -> str | None:
        return self._claims.get(conversation)

    async def active(self, agent: str) -> list[str]:
        return [c for c, a in self._claims.items() if a == agent]

    async def finish(self, conversation: str, agent: str) -> bool:
        if self._claims.get(conversation) != agent:
            return False
        del self._claims[conversation]
        self._claim_ids.pop(conversation, None)
        return True

    async def cancel(self, conversation: str) -> bool:
        if conversation not in self._waiting:
            return False
        self._drop(conversation)
        return True
