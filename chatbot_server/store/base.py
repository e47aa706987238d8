"""The conversation store's two interfaces: the log of frames, and which process owns a conversation.

A conversation has at most one *owner* process at a time: the one whose socket holds it. The owner
appends without waiting (the Redis store writes behind, see store/redis.py); frames made elsewhere
(an agent's reply) are appended with `append_if_unowned` or, while an owner exists, sent to it
(chat/holding.py). Both built-in stores implement both interfaces in one class, ConversationStore.
"""

from __future__ import annotations

import abc
import asyncio
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..removed import gone

StoredFrame = dict[str, Any]


def new_conversation_id() -> str:
    """An unguessable conversation id: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


@dataclass
class StoreStats:
    """What the store had to repair, for /metrics (ops/metrics.py)."""

    #: Times the backend was found to have lost its data (Redis restarted without persistence, or
    #: flushed): the conversations held here were then written again whole.
    data_lost: int = 0
    #: Conversations written again whole after such a loss.
    rewritten: int = 0


class FrameLog(abc.ABC):
    """Each conversation's frames in order, numbered 1, 2, 3 ... (their "seq"), kept for a TTL,
    so a reconnecting client can catch up."""

    backend: str = "abstract"

    def __init__(self) -> None:
        self.stats = StoreStats()

    async def start(self) -> None:
        """Open connections; called once before use."""

    async def close(self) -> None:
        """Flush pending writes and close what `start` opened."""

    async def health(self) -> tuple[bool, str]:
        """Whether the store can keep frames right now, and why not."""
        return True, ""

    @abc.abstractmethod
    async def create(self) -> str:
        """Start a new conversation owned by this process and return its id."""

    @abc.abstractmethod
    async def exists(self, conversation: str) -> bool:
        """Whether a conversation is known and not expired."""

    @abc.abstractmethod
    def append(self, conversation: str, frame: StoredFrame) -> bytes:
        """Store a frame of a conversation this process owns, without waiting: set its "seq"
        and return it as JSON bytes, ready to send (frames are kept encoded, so encoded once).
        NotOwnedError if another process may own it: use append_if_unowned or its owner."""

    @abc.abstractmethod
    async def read_since(self, conversation: str, after_seq: int) -> list[StoredFrame]:
        """The frames with seq > after_seq, oldest first."""

    async def read_page(self, conversation: str, *, after_seq: int, before_seq: int, limit: int) -> list[StoredFrame]:
        """The newest `limit` frames with after_seq < seq < before_seq, oldest first (for paging
        through older history: ask for one more than a page to learn whether more remain)."""
        frames = [f for f in await self.read_since(conversation, after_seq) if f["seq"] < before_seq]
        return frames[max(0, len(frames) - limit) :]

    async def recent(self, conversation: str, count: int) -> list[StoredFrame]:
        """The newest `count` frames, oldest first."""
        last = await self.last_seq(conversation)
        return await self.read_since(conversation, max(0, last - count))

    async def transcript(self, conversation: str) -> list[StoredFrame]:
        """Every kept frame of a conversation, oldest first."""
        return await self.read_since(conversation, 0)

    @abc.abstractmethod
    async def last_seq(self, conversation: str) -> int:
        """The seq of the newest frame (0 for an empty or unknown conversation)."""

    async def claim_client_id(self, conversation: str, client_id: str) -> bool:
        """Record a client message id; False if this conversation has a user frame with it already."""
        return not any(
            f.get("id") == client_id and f.get("type") == "user" for f in await self.transcript(conversation)
        )

    async def reply_stored(self, conversation: str, client_id: str) -> bool:
        """Whether a frame answering the client message `client_id` (its reply_to) is stored."""
        return any(f.get("reply_to") == client_id for f in await self.transcript(conversation))

    async def flush(self) -> None:
        """Write out every pending frame now."""

    def write_soon(self) -> asyncio.Future[None] | None:
        """Start writing pending frames now instead of after the gathering interval (no wait):
        a future resolved once they are written, or None if nothing is pending here."""
        return None


class Ownership(abc.ABC):
    """Which process owns (is the single writer of) each conversation."""

    #: Names this process as a conversation's owner (the Redis store shares it across processes).
    process_id: str = "local"

    @abc.abstractmethod
    async def acquire(self, conversation: str) -> str | None:
        """Make this process the owner; return the previous owner if it was another process."""

    async def adopt(self, conversation: str) -> None:
        """Load an acquired conversation's state after its previous owner wrote it out."""

    def abandon(self, conversation: str) -> None:
        """A takeover that did not finish (the store did not answer in time): undo, in the
        background, any ownership `acquire` may still record, unless this process holds it."""

    @abc.abstractmethod
    async def release(self, conversation: str) -> None:
        """Write out pending frames and stop owning the conversation (if this process still does)."""

    @abc.abstractmethod
    def owns(self, conversation: str) -> bool:
        """Whether this process owns the conversation (appends need no round trip)."""

    async def has_owner(self, conversation: str) -> bool:
        """Whether any process owns the conversation (a socket holds it somewhere). The default
        suits a store of one process; a shared store asks its backend (StoreUnavailableError)."""
        return self.owns(conversation)

    @abc.abstractmethod
    async def append_if_unowned(self, conversation: str, frame: StoredFrame) -> int | None:
        """Append atomically if no process owns the conversation: its seq; None if one does (send it there)."""


class ConversationStore(FrameLog, Ownership):
    """A store with both interfaces: what the chat and the agents are given."""

    if not TYPE_CHECKING:  # names 0.2 removed: a clear error for old host code (removed.py)
        append_held = gone("append_held")
        append_encoded = gone("append_encoded")
        holders = gone("holders")
