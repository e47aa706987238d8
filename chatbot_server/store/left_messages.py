"""Messages customers leave while no agent serves (outside business hours, or nobody online).

Bounded, because an anonymous client makes them: at most `per_ip` per client address per hour
(a fixed window) and `max_open` open messages in all. Listed oldest first; an agent closes one.
Callers mask card and ID numbers before add(). The Redis one is in left_messages_redis.py.
"""

from __future__ import annotations

import abc
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from ..messages import LeftMessageItem

#: The per-address window, in seconds.
WINDOW = 3600.0

Refusal = Literal["ip_limit", "full"]


@dataclass(frozen=True)
class LeftMessage:
    """One message left for the agents; `ts` in Unix ms."""

    id: str
    ts: int
    contact: str
    text: str
    conversation: str

    def item(self) -> LeftMessageItem:
        return {
            "id": self.id,
            "ts": self.ts,
            "contact": self.contact,
            "text": self.text,
            "conversation": self.conversation,
        }


@dataclass(frozen=True)
class Added:
    """What add() did: the stored message, or why it was refused."""

    message: LeftMessage | None = None
    refused: Refusal | None = None


def new_id() -> str:
    return secrets.token_hex(8)


class LeftMessages(abc.ABC):
    """Open left messages, shared by every process on the same backend."""

    backend = "abstract"

    def __init__(self, *, per_ip: int = 3, max_open: int = 1000) -> None:
        self.per_ip = per_ip
        self.max_open = max_open

    @abc.abstractmethod
    async def add(self, contact: str, text: str, *, conversation: str, ip: str, now: float | None = None) -> Added:
        """Keep a message (already masked); refused past the address's hourly cap or the total cap."""

    @abc.abstractmethod
    async def open(self) -> list[LeftMessage]:
        """The open messages, oldest first."""

    @abc.abstractmethod
    async def close(self, message_id: str) -> bool:
        """Close a message; False if it was not open (closed already, elsewhere)."""


class MemoryLeftMessages(LeftMessages):
    """The left messages of one process."""

    backend = "memory"

    def __init__(self, *, per_ip: int = 3, max_open: int = 1000) -> None:
        super().__init__(per_ip=per_ip, max_open=max_open)
        self._open: dict[str, LeftMessage] = {}  # insertion order is arrival order
        self._windows: dict[str, tuple[float, int]] = {}  # address -> (window start, count)

    async def add(self, contact: str, text: str, *, conversation: str, ip: str, now: float | None = None) -> Added:
        now = time.time() if now is None else now
        # Forget ended windows, so the table is bounded by the addresses of the last hour.
        self._windows = {a: w for a, w in self._windows.items() if now - w[0] < WINDOW}
        start, count = self._windows.get(ip, (now, 0))
        if count >= self.per_ip:
            return Added(refused="ip_limit")
        if len(self._open) >= self.max_open:
            return Added(refused="full")
        self._windows[ip] = (start, count + 1)
        message = LeftMessage(new_id(), int(now * 1000), contact, text, conversation)
        self._open[message.id] = message
        return Added(message)

    async def open(self) -> list[LeftMessage]:
        return list(self._open.values())

    async def close(self, message_id: str) -> bool:
        return self._open.pop(message_id, None) is not None
