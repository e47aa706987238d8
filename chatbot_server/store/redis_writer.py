"""The Redis store's write-behind: one background task writes owned conversations' frames in batches.

Frames gather for `write_interval`, then go out packed (redis_batch.py) in writes of about
`FRAMES_PER_BATCH` frames, with the owner keys set, renewed and released in the same writes; a
failed write keeps its frames for the retry. A part of RedisConversationStore (store/redis.py),
which supplies the state declared here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .redis_batch import CommandBatch, send_batch

log = logging.getLogger("chatbot_server.store.redis")  # the store's one logger, as before the split

# KEYS: owner. ARGV: process. Deletes the owner key only if this process still owns it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
RETRY_DELAY = 0.2
WRITE_TIMEOUT = 5.0


@dataclass
class _Owned:
    """The in-memory state of a conversation this process owns."""

    frames: deque[bytes]  # encoded (JSON with seq), as sent and as written to Redis
    seq: int = 0
    client_ids: set[str] = field(default_factory=set)
    replied: set[str] = field(default_factory=set)
    # How long the Redis list may be (so LTRIM is sent only when needed) and when the keys' TTLs
    # were last renewed (renewed every tenth of the TTL, not on every write).
    stored: int = 0
    renewed: float = -1e18


class WriteBehind:
    """The write-behind part of RedisConversationStore (not used on its own)."""

    # Set by RedisConversationStore.__init__.
    write_interval: float
    process_id: str
    ttl_ms: int
    max_frames: int
    _client: aioredis.Redis
    _new: set[str]
    _reclaim: set[str]
    _fresh: set[str]
    _releasing: set[str]
    _waiters: list[asyncio.Future[None]]
    _owned: dict[str, _Owned]
    _pending: dict[str, list[bytes]]
    _wake: asyncio.Event
    _hurry: asyncio.Future[None] | None
    _write_lock: asyncio.Lock
    _stopping: bool
    _last_error: str

    if TYPE_CHECKING:  # defined by RedisConversationStore

        def _keys(self, conversation: str) -> tuple[str, str]: ...

        def _frames_per_batch(self) -> int: ...

    async def _write_behind(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            # New conversations go out at once (until their first frames are written): another
            # process must find them on a quick resume.
            if self.write_interval and not (self._waiters or self._fresh or self._stopping):
                await self._gather()
            self._wake.clear()
            try:
                await self._write_pending()
                if self._last_error:
                    log.warning("history.write_recovered")
                self._last_error = ""
            except (RedisError, OSError) as exc:
                if not self._last_error:  # once per outage, not every retry
                    log.warning("history.write_failed error=%s (frames kept, retrying)", exc)
                self._last_error = f"write-behind failing: {exc}"
                if not self._stopping:
                    await asyncio.sleep(RETRY_DELAY)  # Redis is down: retry the kept frames later
                self._wake.set()

    async def _gather(self) -> None:
        loop = asyncio.get_running_loop()
        hurry = self._hurry = loop.create_future()
        timer = loop.call_later(self.write_interval, _resolve, hurry)
        try:
            await hurry
        finally:
            timer.cancel()
            self._hurry = None

    def _cut_short(self) -> None:
        if self._hurry is not None:
            _resolve(self._hurry)

    async def _write_pending(self) -> None:
        """Write every pending frame (batches of ~FRAMES_PER_BATCH); on failure they are kept for the next try."""
        async with self._write_lock:
            batch, self._pending = self._pending, {}
            if not batch and not self._new and not self._releasing and not self._reclaim:
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                self._waiters.clear()
                return
            new, self._new = self._new, set()
            reclaim, self._reclaim = self._reclaim, set()
            releasing, self._releasing = self._releasing, set()
            waiters, self._waiters = self._waiters, []
            now = time.monotonic()
            renew_every = self.ttl_ms / 10_000
            # Owner keys go in the first write, releases after every frame, in the last. Not a
            # transaction: a write cut off midway is retried whole (readers skip repeated seqs).
            chunks = _chunked(batch, self._frames_per_batch())
            for index, chunk in enumerate(chunks):
                commands = CommandBatch()
                if index == 0:
                    for conversation in new:
                        if conversation in self._owned:
                            commands.add("SET", self._keys(conversation)[1], self.process_id, "PX", self.ttl_ms)
                    for conversation in reclaim - new:
                        if conversation in self._owned:
                            owner_key = self._keys(conversation)[1]
                            commands.add("SET", owner_key, self.process_id, "NX", "PX", self.ttl_ms)
                for conversation, frames in chunk:
                    self._queue_frames(commands, conversation, frames, now, renew_every)
                if index == len(chunks) - 1:
                    for conversation in releasing:
                        commands.add("EVAL", _RELEASE, 1, self._keys(conversation)[1], self.process_id)
                try:
                    await send_batch(self._client, commands, WRITE_TIMEOUT)
                except BaseException:
                    self._reclaim.update(self._owned)
                    if index == 0:
                        self._new |= new
                    self._releasing |= releasing
                    self._waiters[:0] = waiters
                    for state in self._owned.values():
                        state.renewed = -1e18  # renew again on the retry
                    self._keep_unwritten(dict(item for rest in chunks[index:] for item in rest))
                    raise
            if self._fresh:
                self._fresh.difference_update(batch)
                self._fresh.difference_update(releasing)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _queue_frames(
        self, commands: CommandBatch, conversation: str, frames: list[bytes], now: float, renew_every: float
    ) -> None:
        frames_key, owner_key = self._keys(conversation)
        # One command per conversation and batch on the hot path (the seq is in the frames); trim
        # and TTL renewal only when due (a released conversation gets both).
        commands.add_with_bulks("RPUSH", frames_key, bulks=frames)
        state = self._owned.get(conversation)
        if state is not None:
            state.stored += len(frames)
        if state is None or state.stored > self.max_frames:
            commands.add("LTRIM", frames_key, -self.max_frames, -1)
            if state is not None:
                state.stored = self.max_frames
        if state is None or now - state.renewed > renew_every:
            commands.add("PEXPIRE", frames_key, self.ttl_ms)
            commands.add("PEXPIRE", owner_key, self.ttl_ms)
            if state is not None:
                state.renewed = now

    def _keep_unwritten(self, unwritten: dict[str, list[bytes]]) -> None:
        # A failed write: its frames go back in front of whatever was appended meanwhile.
        for conversation, newer in self._pending.items():
            older = unwritten.get(conversation)
            if older is None:
                unwritten[conversation] = newer
            else:
                older.extend(newer)
        self._pending = unwritten
        self._wake.set()  # appends to these lists will not: see append_held


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _chunked(batch: dict[str, list[bytes]], frames_per_chunk: int) -> list[list[tuple[str, list[bytes]]]]:
    """Conversations grouped so each group holds about `frames_per_chunk` frames; at least one group."""
    chunks: list[list[tuple[str, list[bytes]]]] = [[]]
    frames = 0
    for item in batch.items():
        if frames >= frames_per_chunk:
            chunks.append([])
            frames = 0
        chunks[-1].append(item)
        frames += len(item[1])
    return chunks
