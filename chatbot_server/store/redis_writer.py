"""The Redis store's write-behind: one background task writes owned conversations' frames in batches.

Frames gather for `write_interval`, then go out packed (redis_batch.py) in writes of about
`FRAMES_PER_BATCH` frames, with the owner keys set, renewed and released in the same writes; a
failed write keeps its frames for the retry. A part of RedisConversationStore (store/redis.py),
which supplies the state declared here.

Redis may lose its data while we hold conversations (a restart without persistence, a flush): the
frames written before would be gone and a resume elsewhere would replay only what came after. So
every write begins by reading the store's epoch key (written once per data set, never expiring;
read every EPOCH_INTERVAL when nothing else is written; one per primary on a cluster,
redis_epoch.py); when it is gone or changed, every conversation held here whose keys lived there
is written again whole, with its owner key (`_REWRITE`). And frames of a
conversation already in Redis go out with RPUSHX, which never creates a list: a lost list is not
recreated with only its newest frames (a resume would take that for the whole conversation), it is
rewritten whole. We hold enough for that: each held conversation keeps its newest `max_frames`
frames in memory, which is all Redis keeps of it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..ops.redis import RedisClient
from .base import StoreStats
from .redis_batch import Batch, new_batch, send_batch
from .redis_epoch import Epochs

log = logging.getLogger("chatbot_server.store.redis")  # the store's one logger, as before the split

# KEYS: owner. ARGV: process. Deletes the owner key only if this process still owns it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: frames, owner. ARGV: process, ttl_ms, "1" to (re)set the owner key, frames... Writes a
# conversation again whole, unless another process owns it now (0).
_REWRITE = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
for i = 4, #ARGV, 1000 do redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] == '1' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return 1
"""
RETRY_DELAY = 0.2
WRITE_TIMEOUT = 5.0
# Seconds between epoch checks while conversations are held but nothing is written: how long an
# idle held conversation may stay missing after Redis lost its data.
EPOCH_INTERVAL = 1.0


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
    written: bool = False  # its frames list exists in Redis (so later frames go out with RPUSHX)


class WriteBehind:
    """The write-behind part of RedisConversationStore (not used on its own)."""

    # Set by RedisConversationStore.__init__.
    write_interval: float
    process_id: str
    ttl_ms: int
    max_frames: int
    _client: RedisClient
    _new: set[str]
    _reclaim: set[str]
    _fresh: set[str]
    _releasing: set[str]
    _waiters: list[asyncio.Future[None]]
    _owned: dict[str, _Owned]
    _letting_go: dict[str, _Owned]  # released here, until their last frames are written
    _rewrite: set[str]  # to write again whole: Redis lost them
    _abandoned: dict[str, int]  # owner keys a failed takeover may have set: deletes still to send
    _epochs: Epochs  # the data-loss markers (redis_epoch.py)
    _epoch_due: bool  # nothing else to write, but the epoch is to be checked
    stats: StoreStats
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
            await self._woken()
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

    async def _woken(self) -> None:
        """Wait for something to write, or for the epoch check due every EPOCH_INTERVAL while
        conversations are held (nothing held: nothing to rewrite, the next write checks)."""
        if not self._owned or self._wake.is_set():
            await self._wake.wait()
            return
        try:
            async with asyncio.timeout(EPOCH_INTERVAL):
                await self._wake.wait()
        except TimeoutError:
            self._epoch_due = True  # written (and retried, and logged) like any pending write
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
            if not (
                self._epoch_due
                or batch
                or self._new
                or self._releasing
                or self._reclaim
                or self._rewrite
                or self._abandoned
            ):
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                self._waiters.clear()
                return
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await self._epochs.refresh()  # a cluster's slot layout, when due
            except BaseException:
                self._keep_unwritten(batch)
                raise
            new, self._new = self._new, set()
            reclaim, self._reclaim = self._reclaim, set()
            releasing, self._releasing = self._releasing, set()
            rewrite, self._rewrite = self._split_rewrite(self._rewrite)
            waiters, self._waiters = self._waiters, []
            for conversation in rewrite:
                batch.pop(conversation, None)  # the rewrite writes all its frames, these included
            now = time.monotonic()
            renew_every = self.ttl_ms / 10_000
            # Owner keys go in the first write, releases after every frame, in the last. Not a
            # transaction: a write cut off midway is retried whole (readers skip repeated seqs).
            chunks = _chunked(batch, self._frames_per_batch())
            for index, chunk in enumerate(chunks):
                commands = new_batch(self._client)
                pushed: dict[int, str] = {}  # RPUSHX reply index: conversation
                rewritten: dict[int, str] = {}
                epoch_reads: list[tuple[int, str]] = []
                if index == 0:
                    epoch_reads = self._epochs.queue(commands)
                    for conversation in new:
                        if conversation in self._owned:
                            commands.add("SET", self._keys(conversation)[1], self.process_id, "PX", self.ttl_ms)
                    for conversation in reclaim - new:
                        if conversation in self._owned:
                            owner_key = self._keys(conversation)[1]
                            commands.add("SET", owner_key, self.process_id, "NX", "PX", self.ttl_ms)
                    for conversation in rewrite:
                        at = self._queue_rewrite(commands, conversation)
                        if at >= 0:
                            rewritten[at] = conversation
                for conversation, frames in chunk:
                    at = self._queue_frames(commands, conversation, frames, now, renew_every)
                    if at >= 0:
                        pushed[at] = conversation
                abandoned: list[str] = []
                if index == len(chunks) - 1:
                    for conversation in releasing:
                        commands.add("EVAL", _RELEASE, 1, self._keys(conversation)[1], self.process_id)
                    for conversation in [c for c in self._abandoned if c in self._owned]:
                        del self._abandoned[conversation]  # held here again: its owner key is ours
                    abandoned = list(self._abandoned)
                    for conversation in abandoned:
                        commands.add("EVAL", _RELEASE, 1, self._keys(conversation)[1], self.process_id)
                try:
                    replies = await send_batch(self._client, commands, WRITE_TIMEOUT)
                except BaseException as exc:
                    self._reclaim.update(self._owned)
                    if isinstance(exc, (RedisConnectionError, ConnectionError)):
                        # The connection dropped: the next write may reach another server (a
                        # Sentinel failover) whose replica never got our last acknowledged writes,
                        # and the epoch survives that. Everything held is written again whole.
                        self._rewrite |= self._owned.keys() | self._letting_go.keys()
                    if index == 0:
                        self._new |= new
                        self._rewrite |= rewrite
                    self._releasing |= releasing
                    self._waiters[:0] = waiters
                    for state in self._owned.values():
                        state.renewed = -1e18  # renew again on the retry
                    self._keep_unwritten(dict(item for rest in chunks[index:] for item in rest))
                    raise
                self._written(chunk, replies, pushed, rewritten, epoch_reads)
                self._abandon_sent(abandoned)
            for conversation in releasing | rewrite:  # written out: forget, unless Redis lost them again
                if conversation not in self._rewrite and conversation not in self._releasing:
                    self._letting_go.pop(conversation, None)
            if self._fresh:
                self._fresh.difference_update(batch)
                self._fresh.difference_update(releasing)
                self._fresh.difference_update(rewrite)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _split_rewrite(self, wanted: set[str]) -> tuple[set[str], set[str]]:
        """What to rewrite in this write (about `FRAMES_PER_BATCH` frames, at least one
        conversation) and what waits for the next: after a failover a process may hold thousands
        of long conversations, and one write of all of them could outlast WRITE_TIMEOUT on every
        retry, so that nothing would ever be written again."""
        budget = self._frames_per_batch()
        now: set[str] = set()
        later: set[str] = set()
        frames = 0
        for conversation in wanted:
            state = self._state(conversation)
            size = len(state.frames) if state is not None else 0
            if now and frames + size > budget:
                later.add(conversation)
            else:
                now.add(conversation)
                frames += size
        return now, later

    def _queue_rewrite(self, commands: Batch, conversation: str) -> int:
        state = self._owned.get(conversation)
        hold = state is not None
        state = state or self._letting_go.get(conversation)
        if state is None:
            return -1
        frames_key, owner_key = self._keys(conversation)
        args = (self.process_id, self.ttl_ms, "1" if hold else "0", *state.frames)
        return commands.add("EVAL", _REWRITE, 2, frames_key, owner_key, *args)

    def _written(
        self,
        chunk: list[tuple[str, list[bytes]]],
        replies: list[object],
        pushed: dict[int, str],
        rewritten: dict[int, str],
        epoch_reads: list[tuple[int, str]],
    ) -> None:
        """Note what a write found: lists Redis no longer had, conversations rewritten, the epoch."""
        for conversation, _ in chunk:
            state = self._state(conversation)
            if state is not None:
                state.written = True
        for at, conversation in pushed.items():
            if replies[at] == 0:  # the list was gone: write it again whole
                self._rewrite.add(conversation)
        for at, conversation in rewritten.items():
            state = self._state(conversation)
            if replies[at] == 1 and state is not None:
                state.written = True
                state.stored = len(state.frames)
                state.renewed = -1e18
                self.stats.rewritten += 1
            elif replies[at] == 0:
                log.warning("history.rewrite_skipped conversation=%s (another process owns it)", conversation[:8])
        if epoch_reads:
            self._epoch_due = False
            self._check_epochs(replies, epoch_reads)
        if self._rewrite:
            self._wake.set()

    def _check_epochs(self, replies: list[object], reads: list[tuple[int, str]]) -> None:
        # A marker gone (or claimed anew by another process that found it gone): Redis lost its
        # data, on a cluster one shard's: the conversations held here whose keys lived there.
        lost = self._epochs.check(replies, reads)
        if lost is None:
            return
        held = {c for c in (*self._owned, *self._letting_go) if lost(self._keys(c)[0])}
        self._rewrite |= held
        self.stats.data_lost += 1
        log.warning(
            "history.redis_data_lost: Redis lost the store's data (a restart without persistence?);"
            " writing the %d conversations held here again",
            len(held),
        )

    def _abandon_sent(self, abandoned: list[str]) -> None:
        # Deleted twice, the second time after Redis answered the first: a late acquire still
        # queued in Redis when it resumed is then certainly undone.
        for conversation in abandoned:
            left = self._abandoned.get(conversation, 0) - 1
            if left > 0:
                self._abandoned[conversation] = left
                self._wake.set()
            else:
                self._abandoned.pop(conversation, None)

    def _state(self, conversation: str) -> _Owned | None:
        return self._owned.get(conversation) or self._letting_go.get(conversation)

    def _queue_frames(
        self, commands: Batch, conversation: str, frames: list[bytes], now: float, renew_every: float
    ) -> int:
        """Queue a conversation's new frames; the index of the RPUSHX reply, or -1 (a plain RPUSH)."""
        frames_key, owner_key = self._keys(conversation)
        # One command per conversation and batch on the hot path (the seq is in the frames); trim
        # and TTL renewal only when due (a released conversation gets both).
        kept = self._state(conversation)
        at = -1
        if kept is not None and kept.written:
            at = commands.add_with_bulks("RPUSHX", frames_key, bulks=frames)
        else:
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
        return at

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
