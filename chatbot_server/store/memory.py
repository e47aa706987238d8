"""The conversation store in this process's memory: the embedded default (one process)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..jsonutil import dumpb, loads
from .base import ConversationStore, StoredFrame, new_conversation_id


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

    def append(self, conversation: str, frame: StoredFrame) -> bytes:
        conversations = self._conversations
        conv = conversations.get(conversation)
        now = time.monotonic()
        if conv is None or now - conv.touched > self.ttl:
            conv = conversations[conversation] = _Conversation(frames=[])
        seq = conv.seq = conv.seq + 1
        frame["seq"] = seq
        # A right-sized copy: orjson writes into a large buffer and
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

    async def read_page(self, conversation: str, *, after_seq: int, before_seq: int, limit: int) -> list[StoredFrame]:
        conv = self._get(conversation)
        if conv is None or limit <= 0:
            return []
        frames = conv.frames
        # Seqs are contiguous and end at conv.seq: the frame with seq s is at index s - first.
        first = conv.seq - min(len(frames), self.max_frames) + 1  # the oldest seq a read may return
        newest = min(conv.seq, before_seq - 1)
        oldest = max(first, after_seq + 1, newest - limit + 1)
        if newest < oldest:
            return []
        offset = len(frames) - conv.seq - 1
        return [loads(raw) for raw in frames[oldest + offset : newest + offset + 1]]

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
        self.append(conversation, frame)
        return frame["seq"]  # type: ignore[no-any-return]
