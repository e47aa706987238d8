"""Satisfaction ratings after a human chat (CSAT, docs/agents.md "Ratings").

When an agent ends a chat the conversation gets one *pending* rating, naming the agent; the
customer's answer (a score, or a skip) takes it, so exactly one answer counts per ended chat.
Ratings are kept per day for `agents.rating_days`; pending ones as long as conversations are.
"""

from __future__ import annotations

import abc
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

#: Ratings kept per day at most (a bound on what customers can make the server hold).
MAX_PER_DAY = 100_000


@dataclass(frozen=True, slots=True)
class Rating:
    """One customer's answer: `score` 1..5 (the comment already masked)."""

    conversation: str
    agent: str
    score: int
    comment: str
    ts: int  # Unix ms

    def record(self) -> dict[str, Any]:
        """The JSON object stored."""
        return asdict(self)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Rating:
        return cls(
            str(data.get("conversation", "")),
            str(data.get("agent", "")),
            int(data.get("score", 0)),
            str(data.get("comment", "")),
            int(data.get("ts", 0)),
        )


def day_of(ts_ms: int) -> str:
    """The UTC day of a Unix-ms time, as a key part: 20261207."""
    return time.strftime("%Y%m%d", time.gmtime(ts_ms / 1000))


def days_back(now_ms: int, days: int) -> list[str]:
    """The last `days` UTC days up to `now_ms`, newest first."""
    return [day_of(now_ms - n * 86_400_000) for n in range(days)]


class RatingStore(abc.ABC):
    """Pending and given ratings."""

    backend: str = "abstract"

    @abc.abstractmethod
    async def ask(self, conversation: str, agent: str) -> None:
        """An agent ended the chat: the customer may answer once (a new end replaces an unanswered ask)."""

    @abc.abstractmethod
    async def take(self, conversation: str) -> str | None:
        """Take the pending rating (atomically): the agent's username, or None if there is none."""

    @abc.abstractmethod
    async def add(self, rating: Rating) -> None:
        """Keep a given rating."""

    @abc.abstractmethod
    async def recent(self, days: int) -> list[Rating]:
        """The ratings of the last `days` days, oldest first."""


class MemoryRatingStore(RatingStore):
    """One process's ratings (the memory store's companion)."""

    backend = "memory"

    def __init__(self, *, pending_ttl: float = 86400.0, days: int = 30) -> None:
        self.pending_ttl = pending_ttl
        self.days = days
        self._pending: dict[str, tuple[str, float]] = {}  # conversation -> (agent, expires)
        self._days: dict[str, deque[Rating]] = {}

    async def ask(self, conversation: str, agent: str) -> None:
        now = time.monotonic()
        for key in [k for k, (_, expires) in self._pending.items() if expires < now][:100]:
            del self._pending[key]
        self._pending[conversation] = (agent, now + self.pending_ttl)

    async def take(self, conversation: str) -> str | None:
        found = self._pending.pop(conversation, None)  # no await before: atomic on the loop
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    async def add(self, rating: Rating) -> None:
        day = day_of(rating.ts)
        self._days.setdefault(day, deque(maxlen=MAX_PER_DAY)).append(rating)
        keep = set(days_back(rating.ts, self.days))
        for old in [d for d in self._days if d not in keep]:
            del self._days[old]

    async def recent(self, days: int) -> list[Rating]:
        wanted = days_back(time.time_ns() // 1_000_000, days)
        return [r for day in reversed(wanted) for r in self._days.get(day, ())]
