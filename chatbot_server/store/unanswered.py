"""Customer questions the bot could not answer well (docs/agents.md "Unanswered questions").

A question is kept when the bot fell back or answered below `agents.unanswered_below`, already
masked and cut to MAX_TEXT characters, with the intents the bot came closest to. Kept per UTC day,
at most `agents.unanswered_per_day` a day, for `agents.unanswered_days` days.
"""

from __future__ import annotations

import abc
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .ratings import day_of, days_back

#: Characters of a question kept.
MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class Unanswered:
    """One question: masked text, when, the bot's intent and confidence, its closest intents."""

    text: str
    ts: int  # Unix ms
    intent: str
    confidence: float
    fallback: bool
    candidates: tuple[tuple[str, float], ...] = ()

    def record(self) -> dict[str, Any]:
        """The JSON object stored."""
        return {
            "text": self.text,
            "ts": self.ts,
            "intent": self.intent,
            "confidence": self.confidence,
            "fallback": self.fallback,
            "candidates": [list(c) for c in self.candidates],
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Unanswered:
        candidates = tuple(
            (str(c[0]), float(c[1])) for c in data.get("candidates") or () if isinstance(c, list) and len(c) == 2
        )
        return cls(
            str(data.get("text", ""))[:MAX_TEXT],
            int(data.get("ts", 0)),
            str(data.get("intent", "")),
            float(data.get("confidence", 0.0)),
            bool(data.get("fallback", False)),
            candidates,
        )


class UnansweredStore(abc.ABC):
    """Unanswered questions by day."""

    backend: str = "abstract"

    @abc.abstractmethod
    async def add(self, item: Unanswered) -> None:
        """Keep one question (the day's oldest go past the day's cap)."""

    @abc.abstractmethod
    async def recent(self, days: int) -> list[Unanswered]:
        """The questions of the last `days` days (today included), oldest first."""


class MemoryUnansweredStore(UnansweredStore):
    """One process's questions."""

    backend = "memory"

    def __init__(self, *, days: int = 30, per_day: int = 5000) -> None:
        self.days = days
        self.per_day = per_day
        self._days: dict[str, deque[Unanswered]] = {}

    async def add(self, item: Unanswered) -> None:
        self._days.setdefault(day_of(item.ts), deque(maxlen=self.per_day)).append(item)
        keep = set(days_back(item.ts, self.days))
        for old in [d for d in self._days if d not in keep]:
            del self._days[old]

    async def recent(self, days: int) -> list[Unanswered]:
        wanted = days_back(time.time_ns() // 1_000_000, min(days, self.days))
        return [q for day in reversed(wanted) for q in self._days.get(day, ())]
