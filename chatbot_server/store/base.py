"""Conversation store: append a frame → its seq; read frames after a seq; transcripts with a TTL.

A conversation has at most one *owner* process at a time: the one whose socket holds it. The owner
appends locally (the Redis store writes behind, see history_redis.py); frames made elsewhere (an
agent's reply) are appended with `append_if_unowned` or, while an owner exists, sent to it.
"""

from __future__ import annotations

import abc
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..jsonutil import dumpb, loads

StoredFrame = dict[str, Any]


def new_conversation_id() -> str:
    """An unguessable conversation id: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


class ConversationStore(abc.ABC):
    """Keeps each conversation's frames in order, so a reconnecting client can catch up."""

    backend: str = "abstract"
    #: Names this process as a conversation's owner (the Redis store shares it across processes).
    process_id: str = "local"

    def __init__(self) -> None:
        # The socket (consumer) of this process that holds each conversation, for local takeovers.
        self.holders: dict[str, Any] = {}

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
    async def append(self, conversation: str, frame: StoredFrame) -> int:
        """Store a frame, set its "seq" (1, 2, 3, ...) and return that seq."""

    async def append_encoded(self, conversation: str, frame: StoredFrame) -> bytes:
        """append(), returning the frame (with its seq) as JSON bytes, ready to send.

        The built-in stores keep frames encoded, so a frame is encoded once for both.
        """
        await self.append(conversation, frame)
        return dumpb(frame)

    def append_held(self, conversation: str, frame: StoredFrame) -> bytes | None:
        """append_encoded() without waiting, where the store can: always in memory, for the
        conversations this process owns in Redis. None where it cannot (nothing was stored then):
        await append_encoded() instead.

        Each message appends twice; a coroutine each cost ~1.5k CPU instructions more (measured).
        """
        return None

    @abc.abstractmethod
    async def read_since(self, conversation: str, after_seq: int) -> list[StoredFrame]:
        """The frames with seq > after_seq, oldest first."""

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

    # ------------------------------------------------------------- ownership
    @abc.abstractmethod
    async def acquire(self, conversation: str) -> str | None:
        """Make this process the owner; return the previous owner if it was another process."""

    @abc.abstractmethod
    async def release(self, conversation: str) -> None:
        """Write out pending frames and stop owning the conversation (if this process still does)."""

    @abc.abstractmethod
    def owns(self, conversation: str) -> bool:
        """Whether this process owns the conversation (appends need no round trip)."""

    @abc.abstractmethod
    async def append_if_unowned(self, conversation: str, frame: StoredFrame) -> int | None:
        """Append atomically if no process owns the conversation; None if one does (send it there)."""

    async def adopt(self, conversation: str) -> None:
        """Load an acquired conversation's state after its previous owner wrote it out."""

    async def flush(self) -> None:
        """Write out every pending frame now."""

    def write_soon(self) -> None:
        """Start writing pending frames now instead of after the gathering interval (no wait)."""


@dataclass(slots=True)
class _Conversation:
    # A list, not a deque: an idle conversation holds one greeting, and a deque's first block
    # alone costs ~600 bytes (times 10,000 idle sockets).
    frames: list[bytes]  # encoded (JSON with seq): a third of a dict's memory, and one object
    client_ids: OrderedDict[str, None] | None = None  # made on the first client id
    seq: int = 0
    touched: float = field(default_factory=time.monotonic)
    owned: bool = False


class MemoryConversationStore(ConversationStore):
    """Conversations in this process's memory, expired `ttl` seconds after their last frame."""

    backend = "memory"

    def __init__(self, *, ttl: float = 86400, max_frames: int = 500, max_conversations: int = 100_000) -> None:
        super().__init__()
        self.ttl = ttl
        self.max_frames = max_frames
        self._trim_at = max_frames + max(16, max_frames // 8)
        self.max_conversations = max_conversations
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()

    def _get(self, conversation: str) -> _Conversation | None:
        conv = self._conversations.get(conversation)
        if conv is None:
            return None
        if time.monotonic() - conv.touched > self.ttl:
            del self._conversations[conversation]
            return None
        return conv

    def _evict(self) -> None:
        now = time.monotonic()
        conversations = self._conversations
        # Oldest-touched first: drop expired ones, and the oldest beyond the size cap.
        while conversations:
            oldest_id, oldest = next(iter(conversations.items()))
            if len(conversations) > self.max_conversations or now - oldest.touched > self.ttl:
                del conversations[oldest_id]
            else:
                break

    async def create(self) -> str:
        conversation = new_conversation_id()
        self._conversations[conversation] = _Conversation(frames=[], owned=True)
        self._evict()
        return conversation

    async def exists(self, conversation: str) -> bool:
        return self._get(conversation) is not None

    async def append(self, conversation: str, frame: StoredFrame) -> int:
        await self.append_encoded(conversation, frame)
        return frame["seq"]  # type: ignore[no-any-return]

    async def append_encoded(self, conversation: str, frame: StoredFrame) -> bytes:
        return self._append_now(conversation, frame)

    def append_held(self, conversation: str, frame: StoredFrame) -> bytes | None:
        return self._append_now(conversation, frame)

    def _append_now(self, conversation: str, frame: StoredFrame) -> bytes:
        conversations = self._conversations
        conv = conversations.get(conversation)
        now = time.monotonic()
        if conv is None or now - conv.touched > self.ttl:
            conv = conversations[conversation] = _Conversation(frames=[])
        seq = conv.seq = conv.seq + 1
        frame["seq"] = seq
        # A right-sized copy (bytes formatting, ~60 ns): orjson writes into a large buffer and
        # shrinks it in place, and a kept result pins that allocation (+3.8 KiB per idle socket).
        encoded = b"%b" % dumpb(frame)
        frames = conv.frames
        frames.append(encoded)
        if len(frames) > self._trim_at:
            # Trimmed in batches: dropping one frame off the front of a full list moves all the
            # others, on every append. Reads never return more than max_frames.
            del frames[: len(frames) - self.max_frames]
        if "id" in frame and frame.get("type") == "user":
            ids = conv.client_ids
            if ids is None:
                ids = conv.client_ids = OrderedDict()
            ids[frame["id"]] = None
            if len(ids) > self.max_frames:
                ids.popitem(last=False)
        conv.touched = now
        conversations.move_to_end(conversation)
        return encoded

    async def read_since(self, conversation: str, after_seq: int) -> list[StoredFrame]:
        conv = self._get(conversation)
        if conv is None:
            return []
        frames = conv.frames
        # Seqs are contiguous, so the wanted frames are the last (seq - after_seq) of the list.
        wanted = min(len(frames), self.max_frames, max(0, conv.seq - after_seq))
        return [loads(raw) for raw in frames[len(frames) - wanted :]]

    async def last_seq(self, conversation: str) -> int:
        conv = self._get(conversation)
        return 0 if conv is None else conv.seq

    async def claim_client_id(self, conversation: str, client_id: str) -> bool:
        conv = self._get(conversation)
        if conv is None:
            return True
        ids = conv.client_ids
        if ids is None:
            ids = conv.client_ids = OrderedDict()
        if client_id in ids:
            return False
        ids[client_id] = None
        if len(ids) > self.max_frames:
            ids.popitem(last=False)
        return True

    async def acquire(self, conversation: str) -> str | None:
        conv = self._get(conversation)
        if conv is not None:
            conv.owned = True
        return None  # one process: there is never another owner

    async def release(self, conversation: str) -> None:
        conv = self._conversations.get(conversation)
        if conv is not None:
            conv.owned = False

    def owns(self, conversation: str) -> bool:
        conv = self._conversations.get(conversation)
        return conv is not None and conv.owned

    async def append_if_unowned(self, conversation: str, frame: StoredFrame) -> int | None:
        if self.owns(conversation):
            return None
        return await self.append(conversation, frame)
