"""Conversation store in Redis, shared by every server process using the same key prefix.

The process whose socket holds a conversation owns it and is its single writer: it assigns seqs
in memory and writes frames behind, in batches packed by the store itself (redis_batch.py; on a
Redis Cluster, redis-py's ClusterPipeline) from one background task, so the reply path never
waits on Redis. A resume on another process first takes ownership over (the chat consumer asks
the old owner to write out and stop, through the channel layer), then `adopt`s the stored state.
Frames made while no process owns a conversation are appended by an atomic script.

This module has ownership and the frames API; the write-behind task is mixed in from
redis_writer.py, which also holds `_Owned`, the in-memory state of an owned conversation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence

import orjson
from redis.exceptions import RedisError

from ..errors import NotOwnedError, StoreUnavailableError
from ..jsonutil import dumpb
from ..ops.redis import RedisClient, close_client, redis_client
from .base import ConversationStore, StoredFrame, new_conversation_id
from .redis_epoch import Epochs
from .redis_writer import WriteBehind, _Owned

log = logging.getLogger(__name__)

# KEYS: frames, owner. ARGV: frame JSON without seq, max_frames, ttl_ms. -1 if a process owns it.
# The seq is one more than the newest stored frame's (the owner writes no seq key of its own).
_APPEND = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local last = redis.call('LINDEX', KEYS[1], -1)
local seq = 1
if last then seq = tonumber(cjson.decode(last)['seq']) + 1 end
local body = ARGV[1]
local entry
if body == '{}' then entry = '{"seq":' .. seq .. '}' else entry = '{"seq":' .. seq .. ',' .. string.sub(body, 2) end
redis.call('RPUSH', KEYS[1], entry)
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return seq
"""
# KEYS: owner. ARGV: process, ttl_ms. Returns the previous owner (nil if none).
_ACQUIRE = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return old
"""
# Frames per write: packing is cheap, but a 50 ms batch under load holds tens of
# thousands, and one write of them all would stall every socket while it is packed.
FRAMES_PER_BATCH = 2000
CLOSE_TIMEOUT = 5.0
RELEASE_WAIT = 2.0
# Seconds a socket waits for any one Redis call (a resume, an agent's reply): a hung Redis (paused,
# a black hole) is then reported as unavailable instead of holding the user for the socket timeout
# (times the client's retries). The client's own socket_timeout still bounds the background writes.
CALL_TIMEOUT = 2.0


def conversation_keys(prefix: str, conversation: str) -> tuple[str, str]:
    """A conversation's frames and owner keys. They share the hash tag `{<id>}`, so on a Redis
    Cluster both live in one slot (the scripts that touch both run there) and conversations spread
    over every slot."""
    base = f"{prefix}:conv:{{{conversation}}}"
    return f"{base}:frames", f"{base}:owner"


class RedisConversationStore(WriteBehind, ConversationStore):
    """Conversations under `<prefix>:conv:{<id>}:*`, expiring `ttl` seconds after their last write."""

    backend = "redis"

    def __init__(
        self,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "chatbot",
        process_id: str,
        ttl: float = 86400,
        max_frames: int = 500,
        pool_size: int = 50,
        write_interval: float = 0.05,
        client: RedisClient | None = None,
    ) -> None:
        super().__init__()
        if ttl <= 0 or max_frames < 1 or write_interval < 0:
            raise ValueError("ttl must be positive, max_frames at least 1 and write_interval >= 0")
        # Frames gather for this long before one write takes them all: a busy conversation's
        # frames go out in one RPUSH instead of one per message (what a crash may lose, at most).
        self.write_interval = write_interval
        self.prefix = prefix
        self.process_id = process_id
        self.ttl_ms = int(ttl * 1000)
        self.max_frames = max_frames
        # A client given in (the application's one client) is closed by whoever made it; without
        # one, a client of our own with the process's pool, retry and health policy (ops/redis.py).
        self._own_client = client is None
        self._client: RedisClient = client if client is not None else redis_client(url, pool_size=pool_size)
        self._new: set[str] = set()  # created here, owner key not written yet
        # Owned here when a write failed: Redis may have lost their owner keys (a restart without
        # persistence), so the next write sets them again, unless another process holds one now.
        self._reclaim: set[str] = set()
        self._fresh: set[str] = set()  # created here, first frames not written yet
        self._releasing: set[str] = set()  # given up here, owner key to delete after its frames
        self._waiters: list[asyncio.Future[None]] = []  # resolved when the next batch is written
        self._append = self._client.register_script(_APPEND)
        self._acquire = self._client.register_script(_ACQUIRE)
        self._owned: dict[str, _Owned] = {}
        self._letting_go: dict[str, _Owned] = {}
        self._rewrite: set[str] = set()
        self._abandoned: dict[str, int] = {}
        # Keys with no TTL whose value changes (or that are gone) only if Redis lost its data: one
        # per prefix, on a cluster one per primary (redis_epoch.py).
        self._epochs = Epochs(self._client, prefix)
        self._epoch_due = False
        # Frames not written yet, each already in Redis's wire format (redis_batch.bulk): packed as
        # they are appended, a batch of thousands is joined, not packed frame by frame.
        self._pending: dict[str, list[bytes]] = {}
        self._wake = asyncio.Event()
        self._hurry: asyncio.Future[None] | None = None  # cuts the gathering short (release, close)
        self._write_lock = asyncio.Lock()
        self._write_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_error = ""
        self._late_releases = 0
        self._late_logged = -1e18

    def _keys(self, conversation: str) -> tuple[str, str]:
        return conversation_keys(self.prefix, conversation)

    def _frames_per_batch(self) -> int:
        # Read at each write, from this module: FRAMES_PER_BATCH is a setting of it (tests lower it).
        return FRAMES_PER_BATCH

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._write_task = asyncio.get_running_loop().create_task(self._write_behind())

    async def close(self) -> None:
        if self._write_task is not None:
            # Never cancel a batch half-written: let the writer finish its batch and stop.
            self._stopping = True
            self._wake.set()
            self._cut_short()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.shield(self._write_task)
            except TimeoutError:
                self._write_task.cancel()
            await asyncio.gather(self._write_task, return_exceptions=True)
            self._write_task = None
        try:
            self._releasing.update(self._owned)
            self._letting_go.update(self._owned)
            self._owned.clear()
            await self._write_pending()
        except RedisError as exc:
            log.warning("history.close_failed error=%s", exc)
        if self._own_client:
            await close_client(self._client)

    async def health(self) -> tuple[bool, str]:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            return False, f"redis: {exc}"
        # PING works under OOM: frames the write-behind cannot store are not durable, so not ok.
        return not self._last_error, self._last_error

    async def flush(self) -> None:
        await self._write_pending()

    def write_soon(self) -> asyncio.Future[None]:
        # A waiter: the writer skips its gathering, even one not begun yet (an append's, this turn).
        written = asyncio.get_running_loop().create_future()
        self._waiters.append(written)
        self._wake.set()
        self._cut_short()
        return written

    # ------------------------------------------------------------ ownership
    def owns(self, conversation: str) -> bool:
        return conversation in self._owned

    async def has_owner(self, conversation: str) -> bool:
        # A conversation created here has no owner key until its first frames are written.
        if conversation in self._owned:
            return True
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return bool(await self._client.exists(self._keys(conversation)[1]))
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def create(self) -> str:
        # A new id is unguessable, so nobody else can hold it: own it here at once and let the
        # write-behind record the owner with the first frames. No Redis round trip per connect,
        # and new conversations work while Redis is down.
        conversation = new_conversation_id()
        self._owned[conversation] = _Owned(frames=deque(maxlen=self.max_frames))
        self._new.add(conversation)
        self._fresh.add(conversation)
        self._wake.set()
        self._cut_short()
        return conversation

    async def acquire(self, conversation: str) -> str | None:
        if conversation in self._owned:
            return None
        try:
            if conversation in self._letting_go:
                # Taken back here while its release is still to be written (a page back on this
                # process at once): write the release first, or it would delete the owner key we
                # set now, and another process could take the conversation without asking.
                await self.flush()
            async with asyncio.timeout(CALL_TIMEOUT):
                old = await self._acquire(keys=[self._keys(conversation)[1]], args=[self.process_id, self.ttl_ms])
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            raise _unavailable(exc) from exc
        if old is None:
            return None
        previous = old.decode() if isinstance(old, bytes) else str(old)
        return None if previous == self.process_id else previous

    async def adopt(self, conversation: str) -> None:
        if conversation in self._owned:
            return
        raw_frames = await self._read_all(conversation)
        stored = _once_per_seq(raw_frames)
        state = _Owned(frames=deque((raw for _, raw in stored), maxlen=self.max_frames), stored=len(raw_frames))
        state.written = bool(raw_frames)
        state.seq = max((frame["seq"] for frame, _ in stored), default=0)
        state.client_ids.update(frame["id"] for frame, _ in stored if "id" in frame and frame.get("type") == "user")
        state.replied.update(frame["reply_to"] for frame, _ in stored if frame.get("reply_to") is not None)
        self._owned[conversation] = state

    def abandon(self, conversation: str) -> None:
        if conversation in self._owned:
            return
        # The acquire may still run when Redis resumes: its owner key is deleted (if it names us)
        # by the write-behind, once Redis answers, and once more after that (redis_writer.py).
        self._abandoned[conversation] = 2
        self._wake.set()

    async def release(self, conversation: str) -> None:
        state = self._owned.pop(conversation, None)
        if state is None:
            return
        # Kept until its last frames are written: if Redis lost the list meanwhile, it is rewritten.
        self._letting_go[conversation] = state
        # The owner key goes in the same write-behind batch as the conversation's last frames, so
        # thousands of sockets closing at once cost a few writes, not two round trips each.
        # Wait for that batch (bounded: if Redis is down it is retried in the background).
        self._releasing.add(conversation)
        written = asyncio.get_running_loop().create_future()
        self._waiters.append(written)
        self._wake.set()
        self._cut_short()
        try:
            async with asyncio.timeout(RELEASE_WAIT):
                await asyncio.shield(written)
        except TimeoutError:
            self._note_late_release()

    def _note_late_release(self) -> None:
        # Thousands of sockets closing at once can each outwait RELEASE_WAIT: one line per 10 s
        # with a count, not one per socket (their owner keys are still deleted in the background).
        self._late_releases += 1
        now = time.monotonic()
        if now - self._late_logged >= 10.0:
            log.warning(
                "history.release_pending count=%d since the last such line (written in the background)",
                self._late_releases,
            )
            self._late_releases = 0
            self._late_logged = now

    # ---------------------------------------------------------------- frames
    async def exists(self, conversation: str) -> bool:
        if conversation in self._owned:
            return True
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return bool(await self._client.exists(self._keys(conversation)[0]))
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    def append(self, conversation: str, frame: StoredFrame) -> bytes:
        state = self._owned.get(conversation)
        if state is None:
            raise NotOwnedError(f"conversation {conversation[:8]}... is not owned by this process")
        seq = state.seq = state.seq + 1
        frame["seq"] = seq
        # A right-sized copy: orjson writes into a large buffer and
        # shrinks it in place, and a kept result pins that allocation (+3.8 KiB per idle socket).
        encoded = b"%b" % dumpb(frame)
        state.frames.append(encoded)
        if "id" in frame and frame.get("type") == "user":
            state.client_ids.add(frame["id"])
        reply_to = frame.get("reply_to")
        if reply_to is not None:
            state.replied.add(reply_to)
        packed = b"$%d\r\n%b\r\n" % (len(encoded), encoded)  # redis_batch.bulk(), inlined
        unwritten = self._pending.get(conversation)
        if unwritten is None:
            self._pending[conversation] = [packed]
            # Only here: while the conversation has a pending list, the writer is awake already
            # (it clears the event before it takes the pending lists, and sets it on a failed write).
            self._wake.set()
        else:
            unwritten.append(packed)
        return encoded

    async def append_if_unowned(self, conversation: str, frame: StoredFrame) -> int | None:
        frame.pop("seq", None)
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                seq = int(
                    await self._append(
                        keys=list(self._keys(conversation)),
                        args=[orjson.dumps(frame), self.max_frames, self.ttl_ms],
                    )
                )
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        if seq < 0:
            return None
        frame["seq"] = seq
        return seq

    async def read_since(self, conversation: str, after_seq: int) -> list[StoredFrame]:
        state = self._owned.get(conversation)
        if state is not None:
            frames = state.frames
            wanted = min(len(frames), max(0, state.seq - after_seq))
            return [orjson.loads(raw) for raw in list(frames)[len(frames) - wanted :]]
        raw_frames = await self._read_all(conversation)
        return [frame for frame, _ in _once_per_seq(raw_frames) if frame["seq"] > after_seq]

    async def last_seq(self, conversation: str) -> int:
        state = self._owned.get(conversation)
        if state is not None:
            return state.seq
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                newest = await self._client.lindex(self._keys(conversation)[0], -1)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return 0 if newest is None else int(orjson.loads(newest)["seq"])

    async def _read_all(self, conversation: str) -> list[bytes | str]:
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                raw_frames = await self._client.lrange(self._keys(conversation)[0], 0, -1)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return raw_frames

    async def claim_client_id(self, conversation: str, client_id: str) -> bool:
        state = self._owned.get(conversation)
        if state is None:
            return await super().claim_client_id(conversation, client_id)
        # The user frame carrying the id is appended right after a successful claim.
        if client_id in state.client_ids:
            return False
        state.client_ids.add(client_id)
        return True

    async def reply_stored(self, conversation: str, client_id: str) -> bool:
        state = self._owned.get(conversation)
        if state is None:
            return await super().reply_stored(conversation, client_id)
        return client_id in state.replied


def _unavailable(exc: BaseException) -> StoreUnavailableError:
    if type(exc) is TimeoutError:  # asyncio's says nothing
        return StoreUnavailableError(f"conversation store unreachable: no answer from Redis within {CALL_TIMEOUT:g} s")
    return StoreUnavailableError(f"conversation store unreachable: {exc}")


def _once_per_seq(raw_frames: Sequence[bytes | str]) -> list[tuple[StoredFrame, bytes]]:
    """Stored frames, decoded, each seq once: a batch retried after a connection dropped mid-pipeline
    may have been written twice (the pipeline is not a transaction); readers never see the copy."""
    seen: set[int] = set()
    out: list[tuple[StoredFrame, bytes]] = []
    for raw in raw_frames:
        frame = orjson.loads(raw)
        seq = frame.get("seq")
        if seq in seen:
            continue
        seen.add(seq)
        out.append((frame, raw if isinstance(raw, bytes) else raw.encode()))
    return out
