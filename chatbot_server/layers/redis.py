"""The Redis channel layer: several server processes pointed at one Redis act as one server.

Each process owns one inbox list read by one blocking reader; a group send writes one entry per
process, not per member. See docs/redis.md for the data layout and the failure model.

This module has the layer's API (send, receive, groups, flush, health) and its lifecycle; its
background parts are mixed in from redis_connection.py (connecting, reconnecting, heartbeat),
redis_inbox.py (the inbox reader), redis_members.py (the batched membership writes) and
redis_probe.py (the delivery probe).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import orjson
from redis.exceptions import RedisError

from ..errors import (
    ChannelFull,
    InvalidMessageError,
    InvalidNameError,
    LayerUnavailableError,
)
from ..ops.redis import BLOCK_SECONDS, RedisClient, blocking_client, close_client, disconnect, redact, redis_client
from . import redis_scripts as scripts
from .base import (
    LayerHealth,
    Message,
    process_of,
    validate_channel_name,
    validate_group_name,
    validate_message,
)
from .redis_connection import CONNECT_ERRORS, RedisConnection
from .redis_fanout import GroupFanOut
from .redis_groups import LocalGroups
from .redis_members import DOWN_ERRORS, MEMBER_WAIT, Op
from .redis_placement import choose_process_id

HEALTH_TIMEOUT = 0.5  # /healthz must answer fast even when Redis hangs (SIGSTOP, a black hole)
# A send waits this long for Redis, then fails (a group send counts it): no user-facing call
# hangs for the whole socket timeout on a paused Redis.
CALL_TIMEOUT = 1.0
CLOSE_GRACE = 0.05  # close() closes the blocking sockets again if a task has not ended by then


class RedisChannelLayer(RedisConnection):
    """Channels and groups shared through Redis by every process using the same prefix."""

    backend = "redis"

    def __init__(
        self,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "chatbot",
        capacity: int = 100,
        expiry: float = 60,
        group_expiry: float = 86400,
        pool_size: int = 50,
        connect_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        required: bool = False,
        heartbeat_interval: float = 5.0,
        client: RedisClient | None = None,
        inbox_capacity: int = 10_000,
        probe_interval: float = 1.0,
    ) -> None:
        super().__init__(capacity=capacity, expiry=expiry, group_expiry=group_expiry)
        try:
            validate_group_name(prefix)
        except InvalidNameError:
            raise ValueError(f"invalid key prefix {prefix!r}: use ASCII letters, digits, '-', '_' or '.'") from None
        if pool_size < 1 or inbox_capacity < 1:
            raise ValueError("pool_size and inbox_capacity must be at least 1")
        if connect_timeout <= 0 or socket_timeout <= 0 or heartbeat_interval <= 0:
            raise ValueError("connect_timeout, socket_timeout and heartbeat_interval must be positive")
        self.url = redact(url)
        self.prefix = prefix
        self.required = required
        self.heartbeat_interval = heartbeat_interval
        self.inbox_capacity = inbox_capacity
        self.socket_timeout = socket_timeout
        # A client given in (the application's one client) is closed by whoever made it.
        self._own_client = client is None
        if client is None:
            client = redis_client(
                url, pool_size=pool_size, connect_timeout=connect_timeout, socket_timeout=socket_timeout
            )
        self._client: RedisClient = client
        # Blocking pops park a connection for BLOCK_SECONDS: a small pool of their own (always ours).
        self._blocking = blocking_client(client, block_seconds=BLOCK_SECONDS, max_connections=pool_size + 1)
        self._send_script = client.register_script(scripts.SEND)
        self._fanout = GroupFanOut(client, self._key, prefix)

        self._use_process_id(self.process_id)  # on a cluster start() may choose another
        self._groups = LocalGroups()
        self._unsynced: set[tuple[str, str]] = set()  # discards Redis missed while away
        self._syncing: set[str] = set()  # groups with a queued "do we still belong" check
        self._pending: deque[tuple[list[Op], asyncio.Future[None]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._writing_since: float | None = None
        self._retry: dict[tuple[str, str], Op] = {}
        self._retrier: asyncio.Task[None] | None = None
        self._write_error = ""
        self._refusal_logged = False
        self._supervisor: asyncio.Task[None] | None = None
        self._up = False
        self._closed = False
        self._ready = asyncio.Event()  # set while connected and re-registered
        self._down = asyncio.Event()  # set when a command failed, to restart the reader
        self._outage_logged = False
        self._last_error = "not connected yet"
        self._blmpop: bool | None = None
        self._register_again = False  # redis_connection.py: register once more after a comeback
        self._init_probe(probe_interval)  # redis_probe.py: this process messages itself every interval

    # -- keys and clients -------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        # The name is the hash tag: a process's inbox and heartbeat share `{<process>}`, a group's
        # member set and targets share `{<group>}`, so each script's keys are in one cluster slot.
        return f"{self.prefix}:{kind}:{{{name}}}"

    def _use_process_id(self, process_id: str) -> None:
        self.process_id = process_id  # channel names are made of it: only before the first one
        self._inbox_key = self._key("inbox", process_id)
        self._process_key = self._key("process", process_id)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Redis and start the inbox reader, heartbeat and reconnection loop. On a
        cluster, first choose the process id so that the inbox lands on the primary with the
        fewest live inboxes of this prefix (layers/redis_placement.py)."""
        if self._supervisor is not None:
            return
        if not self.local:  # no channel named after the id yet; None: not a cluster, or no choice
            self._use_process_id(await choose_process_id(self._client, self._key, self.prefix) or self.process_id)
        try:
            await self._connect()
        except CONNECT_ERRORS as error:
            if self.required:
                await self._close_clients()
                raise LayerUnavailableError(
                    f"Redis at {self.url} is unreachable ({error}); the redis channel layer is required"
                ) from error
            self._mark_down(error)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"redis-layer-{self.process_id}")

    async def wait_connected(self) -> None:
        """Wait until Redis is reachable and this process's memberships are registered (none
        refused and being retried, none still being written after its caller stopped waiting)."""
        await self._ready.wait()

    async def close(self) -> None:
        """Stop background work, remove this process's traces from Redis, close what we opened."""
        if self._closed:
            return
        self._closed = True
        tasks = [task for task in (self._supervisor, self._flusher, self._retrier) if task is not None]
        for task in tasks:
            task.cancel()
        # redis-py can swallow a cancellation that lands while a connection is being set up and then
        # block in a read; closing the blocking sockets ends any such read. A connection that was
        # still being set up during the first close survives it (seen on a cluster: close() then
        # waited a whole BLOCK_SECONDS), so close again while a task has not ended.
        pending = set(tasks)
        while pending:
            await disconnect(self._blocking)
            _, pending = await asyncio.wait(pending, timeout=CLOSE_GRACE)
        await asyncio.gather(*tasks, return_exceptions=True)
        closed = LayerUnavailableError("the channel layer is closed")
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(closed)
        if self._up:
            await self._remove_traces()
        self._up = False
        self._ready.clear()
        self.local.fail_all(closed)
        self.local.clear()
        self._groups.clear()
        await self._close_clients()

    async def _close_clients(self) -> None:
        await close_client(self._blocking)
        if self._own_client:
            await close_client(self._client)

    # -- messages ---------------------------------------------------------------------------

    @staticmethod
    def _dumps(message: Message) -> bytes:
        try:
            return orjson.dumps(message)
        except TypeError as error:
            raise InvalidMessageError(f"a message must be JSON-serialisable: {error}") from None

    async def send(self, channel: str, message: Message) -> None:
        validate_channel_name(channel)
        validate_message(message)
        payload = self._dumps(message)  # same rules for local and remote targets
        self.stats.sent += 1
        owner = process_of(channel)
        if owner == self.process_id:
            self.local.deliver(channel, message, strict=True)
            return
        if not self._up:
            raise self._unavailable()
        now = time.time()
        head = scripts.header(now + self.expiry)
        if owner is None:
            keys = [self._key("channel", channel)]  # no owner to check (SEND takes one key)
            entry, limit = head + payload, self.capacity
        else:
            keys = [self._key("inbox", owner), self._key("process", owner)]
            entry = head + b'{"c":["' + channel.encode() + b'"],"m":' + payload + b"}"
            limit = self.inbox_capacity
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                result = await self._send_script(keys=keys, args=[entry, limit, self._expiry_ms(), int(now * 1000)])
        except TimeoutError:  # before DOWN_ERRORS: it is an OSError
            self.stats.late_writes += 1
            raise LayerUnavailableError(f"Redis at {self.url} did not answer within {CALL_TIMEOUT:g} s") from None
        except DOWN_ERRORS as error:
            self._mark_down(error)
            raise self._unavailable() from error
        except RedisError as error:  # reachable but refusing writes (OOM...)
            self._write_refused(error)
            raise LayerUnavailableError(f"Redis at {self.url} refuses writes ({self._write_error})") from error
        if result == -1:
            target = "channel" if owner is None else "inbox of process"
            raise ChannelFull(f"{target} {channel if owner is None else owner!r} is full ({limit} messages)")

    def _expiry_ms(self) -> int:
        return max(1, int(self.expiry * 1000))

    async def receive(self, channel: str) -> Message:
        validate_channel_name(channel)
        owner = process_of(channel)
        if owner is None:
            return await self._receive_shared(channel)
        if owner != self.process_id:
            raise InvalidNameError(f"channel {channel!r} belongs to process {owner!r}; only it can receive")
        return await self.local.get(channel)

    async def _receive_shared(self, channel: str) -> Message:
        key = self._key("channel", channel)
        while True:
            if self._closed:
                raise self._unavailable()
            if not self._up:
                await self._ready.wait()
                continue
            try:
                popped = await self._blocking.blpop([key], timeout=BLOCK_SECONDS)
            except DOWN_ERRORS as error:
                if self._closed:
                    raise self._unavailable() from error
                self._mark_down(error)
                continue
            if not popped:
                continue
            raw = popped[1]
            if int(raw[: scripts.HEADER_WIDTH]) < time.time() * 1000:
                continue
            message: Message = orjson.loads(raw[scripts.HEADER_WIDTH :])
            return message

    # -- groups -----------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        validate_group_name(group)
        validate_channel_name(channel)
        now = time.time()
        if process_of(channel) == self.process_id:
            self._groups.add(group, channel, now)
            self._forget_retry(group, channel)
            if not self._up:
                return  # registered when Redis is back
        elif not self._up:
            raise self._unavailable()
        await self._submit([("add", group, channel, now)], wait=MEMBER_WAIT)

    async def group_discard(self, group: str, channel: str) -> None:
        validate_group_name(group)
        validate_channel_name(channel)
        if process_of(channel) == self.process_id:
            self._groups.discard(group, channel)
            self._forget_retry(group, channel)
            if not self._up:
                self._unsynced.add((group, channel))
                return
        elif not self._up:
            raise self._unavailable()
        await self._submit([("discard", group, channel, 0.0)], wait=MEMBER_WAIT)

    async def release_channel(self, channel: str) -> None:
        self.local.remove(channel)
        groups = self._groups.forget(channel)
        for group in groups:
            self._forget_retry(group, channel)
        if not groups:
            return
        if not self._up:
            self._unsynced.update((group, channel) for group in groups)
            return
        await self._submit([("discard", group, channel, 0.0) for group in groups], wait=MEMBER_WAIT)

    async def group_send(self, group: str, message: Message) -> None:
        validate_group_name(group)
        validate_message(message)
        payload = self._dumps(message)
        self.stats.group_sent += 1
        now = time.time()
        self.local.deliver_many(self._groups.members(group, now - self.group_expiry), message, known_only=True)
        if not self._up:
            return  # local members got it; remote ones cannot be reached now
        # Local members have it; other processes' miss it when Redis is late or refuses (counted).
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await self._fanout.send(
                    group,
                    own=self.process_id,
                    oldest=now - self.group_expiry,
                    header=scripts.header(now + self.expiry),
                    payload=payload,
                    inbox_cap=self.inbox_capacity,
                    capacity=self.capacity,
                    expiry_ms=self._expiry_ms(),
                    now_ms=int(now * 1000),
                )
        except TimeoutError:
            self.stats.late_writes += 1
        except DOWN_ERRORS as error:
            self._mark_down(error)
        except RedisError as error:
            self._write_refused(error)

    async def group_members(self, group: str) -> list[str]:
        """The members of a group as Redis holds them (for tests and diagnostics)."""
        validate_group_name(group)
        members: Any = await self._client.zrange(self._key("group", group), 0, -1)
        return [member.decode() for member in members]

    # -- maintenance ------------------------------------------------------------------------

    async def flush(self) -> None:
        self.local.clear()
        self._groups.clear()
        self._unsynced.clear()
        self._retry.clear()
        self.stats.pending_writes = 0
        if not self._up:
            raise self._unavailable()
        try:
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=f"{self.prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    await self._client.unlink(*batch)
                    batch.clear()
            if batch:
                await self._client.unlink(*batch)
            await self._beat()  # we are still alive
        except DOWN_ERRORS as error:
            self._mark_down(error)
            raise self._unavailable() from error

    async def health(self) -> LayerHealth:
        """Not ok while Redis is unreachable, does not answer within HEALTH_TIMEOUT, refuses
        writes, any membership write is still waiting to be retried, or the last delivery probe
        failed or is overdue (each named in the detail)."""
        if self._closed:
            return LayerHealth(ok=False, backend=self.backend, detail="closed")
        if not self._up:
            return LayerHealth(
                ok=False, backend=self.backend, detail=f"Redis at {self.url} unreachable: {self._last_error}"
            )
        problems = [problem] if (problem := await self._probe_write(HEALTH_TIMEOUT)) else []
        if delivery := self._probe_problem():  # the last delivery probe failed or is overdue
            problems.append(delivery)
        if self._retry:
            problems.append(f"{len(self._retry)} group memberships not yet registered in Redis, retrying")
            if not problem and self._write_error:
                problems.append(f"last error: {self._write_error}")
        if problems:
            return LayerHealth(ok=False, backend=self.backend, detail="; ".join(problems))
        return LayerHealth(ok=True, backend=self.backend, detail=f"connected to {self.url}")
