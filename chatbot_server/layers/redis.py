"""The Redis channel layer: several server processes pointed at one Redis act as one server.

Each process owns one inbox list read by one blocking reader; a group send writes one entry per
process, not per member. See docs/redis.md for the data layout and the failure model.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import (
    ChannelFull,
    InvalidMessageError,
    InvalidNameError,
    LayerUnavailableError,
)
from ..ops.redis import BLOCK_SECONDS, blocking_client, redact, redis_client
from . import redis_scripts as scripts
from .base import (
    ChannelLayer,
    LayerHealth,
    Message,
    process_of,
    validate_channel_name,
    validate_group_name,
    validate_message,
)
from .redis_groups import LocalGroups

log = logging.getLogger(__name__)

# Errors that mean "Redis is not reachable right now" (BusyLoadingError is a ConnectionError).
DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
CONNECT_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, LayerUnavailableError)
# BLOCK_SECONDS (ops/redis.py): a blocking pop returns at least this often, so a dead socket is noticed
READ_BATCH = 256  # inbox entries taken per round trip
OP_BATCH = 2000  # group_add/discard operations per pipeline
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0

# (kind, group, channel, score): kind is "add" or "discard".
Op = tuple[str, str, str, float]


def _consume(future: asyncio.Future[None]) -> None:
    # Nobody awaits background writes; their failure was logged or will be retried on reconnect.
    if not future.cancelled():
        future.exception()


class RedisChannelLayer(ChannelLayer):
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
        client: aioredis.Redis | None = None,
        inbox_capacity: int = 10_000,
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
        self._client: aioredis.Redis = client
        # Blocking pops park a connection for BLOCK_SECONDS: a small pool of their own (always ours).
        self._blocking = blocking_client(client, block_seconds=BLOCK_SECONDS, max_connections=pool_size + 1)
        self._send_script = client.register_script(scripts.SEND)
        self._group_send_script = client.register_script(scripts.GROUP_SEND)

        self._inbox_key = self._key("inbox", self.process_id)
        self._process_key = self._key("process", self.process_id)
        self._groups = LocalGroups()
        self._unsynced: set[tuple[str, str]] = set()  # discards Redis missed while away
        self._syncing: set[str] = set()  # groups with a queued "do we still belong" check
        self._pending: deque[tuple[list[Op], asyncio.Future[None]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._up = False
        self._closed = False
        self._ready = asyncio.Event()  # set while connected and re-registered
        self._down = asyncio.Event()  # set when a command failed, to restart the reader
        self._outage_logged = False
        self._last_error = "not connected yet"
        self._blmpop: bool | None = None

    # -- keys and clients -------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Redis and start the inbox reader, heartbeat and reconnection loop."""
        if self._supervisor is not None:
            return
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
        """Wait until Redis is reachable and this process's memberships are registered."""
        await self._ready.wait()

    async def close(self) -> None:
        """Stop background work, remove this process's traces from Redis, close what we opened."""
        if self._closed:
            return
        self._closed = True
        tasks = [task for task in (self._supervisor, self._flusher) if task is not None]
        for task in tasks:
            task.cancel()
        # redis-py can swallow a cancellation that lands while a connection is being set up and then
        # block in a read; closing the blocking sockets ends any such read.
        await self._blocking.connection_pool.disconnect()
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
        await self._blocking.aclose()
        if self._own_client:
            await self._client.aclose()

    async def _remove_traces(self) -> None:
        # A clean shutdown leaves no members, heartbeat or inbox behind (a SIGKILL relies on the sweep).
        pipe = self._client.pipeline(transaction=False)
        groups = set()
        for group, channel, _ in self._groups.entries():
            pipe.zrem(self._key("group", group), channel)
            groups.add(group)
        for group in groups:
            pipe.zrem(self._key("targets", group), f"p:{self.process_id}")
        pipe.delete(self._process_key, self._inbox_key)
        try:
            async with asyncio.timeout(self.socket_timeout):
                await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as error:
            log.warning("could not remove this process's keys from Redis at %s: %s", self.url, error)

    # -- connection state -------------------------------------------------------------------

    def _mark_down(self, error: BaseException) -> None:
        self._last_error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if self._up:
            self.stats.failures += 1
        self._up = False
        self._ready.clear()
        self._down.set()
        if not self._outage_logged and not self._closed:
            self._outage_logged = True
            log.warning(
                "Redis at %s is unreachable (%s); serving local channels only, reconnecting in the background",
                self.url,
                self._last_error,
            )

    def _unavailable(self) -> LayerUnavailableError:
        if self._closed:
            return LayerUnavailableError("the channel layer is closed")
        return LayerUnavailableError(f"Redis at {self.url} is unreachable ({self._last_error})")

    async def _connect(self) -> None:
        await self._client.ping()
        if self._blmpop is None:
            info = await self._client.info("server")
            self._blmpop = int(str(info.get("redis_version", "0")).split(".")[0]) >= 7
        await self._beat()
        recovered = self._outage_logged
        self._up = True
        self._down.clear()
        # Discards Redis missed go first, then every live membership: a broadcast after recovery
        # reaches all our sockets even if another process swept us while we were away.
        ops: list[Op] = [("discard", group, channel, 0.0) for group, channel in self._unsynced]
        self._unsynced.clear()
        ops += [("add", group, channel, joined) for group, channel, joined in self._groups.entries()]
        if ops:
            await self._submit(ops)
            if not self._up:
                raise self._unavailable()
        self._outage_logged = False
        self._ready.set()
        if recovered:
            self.stats.reconnects += 1
            log.warning("Redis at %s is reachable again; re-registered %d memberships", self.url, len(ops))

    async def _supervise(self) -> None:
        delay = BACKOFF_MIN
        while not self._closed:
            if not self._up:
                try:
                    await self._connect()
                except Exception as error:
                    if not isinstance(error, CONNECT_ERRORS):
                        log.exception("unexpected error while connecting to Redis at %s", self.url)
                    self._mark_down(error)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
            delay = BACKOFF_MIN
            await self._serve()

    async def _serve(self) -> None:
        """Run the inbox reader and the heartbeat until one fails or a command reports an outage."""
        tasks = [
            asyncio.create_task(self._read_inbox()),
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._down.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                if not isinstance(error, DOWN_ERRORS):
                    log.error("Redis layer background task failed", exc_info=error)
                self._mark_down(error)
        if self._up:
            self._mark_down(RuntimeError("background task stopped"))

    def _heartbeat_ttl_ms(self) -> int:
        return max(1000, int(self.heartbeat_interval * 3000))

    async def _beat(self) -> None:
        await self._client.set(self._process_key, b"1", px=self._heartbeat_ttl_ms())

    async def _heartbeat(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.heartbeat_interval)
            if await self._client.pexpire(self._process_key, self._heartbeat_ttl_ms()):
                continue
            # Our heartbeat lapsed while connected (a stalled event loop?), so other processes may
            # have swept us from every group: register again.
            await self._beat()
            entries = self._groups.entries()
            log.warning("heartbeat of process %s had lapsed; re-registering %d memberships",
                        self.process_id, len(entries))
            await self._submit([("add", group, channel, joined) for group, channel, joined in entries])

    # -- the inbox reader -------------------------------------------------------------------

    async def _read_inbox(self) -> None:
        key = self._inbox_key
        client = self._blocking
        while not self._closed:
            entries: list[bytes]
            if self._blmpop:
                # Raw command: the keyword for COUNT differs between redis-py releases.
                reply: Any = await client.execute_command(  # type: ignore[no-untyped-call]
                    "BLMPOP", BLOCK_SECONDS, 1, key, "LEFT", "COUNT", READ_BATCH
                )
                entries = list(reply[1]) if reply else []
            else:  # Redis < 7: one blocking pop, then take what else is queued
                popped: Any = await client.blpop([key], timeout=BLOCK_SECONDS)
                if not popped:
                    continue
                entries = [popped[1]]
                more: Any = await client.lpop(key, READ_BATCH)
                if more:
                    entries.extend(more)
            now_ms = time.time() * 1000
            for raw in entries:
                self._handle_entry(raw, now_ms)

    def _handle_entry(self, raw: bytes, now_ms: float) -> None:
        try:
            if int(raw[: scripts.HEADER_WIDTH]) < now_ms:
                return  # waited longer than `expiry`
            doc = orjson.loads(raw[scripts.HEADER_WIDTH :])
            local = self.local
            if "g" in doc:
                group = doc["g"]
                members = self._groups.members(group, time.time() - self.group_expiry)
                # A released channel gets nothing more.
                local.deliver_many(members, doc["m"], known_only=True)
                if not members:
                    self._schedule_sync(group)  # stop others sending us this group
            elif "m" in doc:
                local.deliver_many(doc["c"], doc["m"], known_only=True)
            elif "j" in doc:
                if doc["c"] in local:
                    self._groups.add(doc["j"], doc["c"], float(doc["t"]))
            elif "l" in doc:
                self._groups.discard(doc["l"], doc["c"])
                if not self._groups.has(doc["l"]):
                    self._schedule_sync(doc["l"])
        except (ValueError, KeyError, TypeError) as error:
            log.warning("dropped a malformed inbox entry in %s: %s", self._inbox_key, error)

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
            keys = [self._key("channel", channel), ""]
            entry, limit = head + payload, self.capacity
        else:
            keys = [self._key("inbox", owner), self._key("process", owner)]
            entry = head + b'{"c":["' + channel.encode() + b'"],"m":' + payload + b"}"
            limit = self.inbox_capacity
        try:
            result = await self._send_script(keys=keys, args=[entry, limit, self._expiry_ms(), int(now * 1000)])
        except DOWN_ERRORS as error:
            self._mark_down(error)
            raise self._unavailable() from error
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
            if not self._up:
                return  # registered when Redis is back
        elif not self._up:
            raise self._unavailable()
        await self._submit([("add", group, channel, now)])

    async def group_discard(self, group: str, channel: str) -> None:
        validate_group_name(group)
        validate_channel_name(channel)
        if process_of(channel) == self.process_id:
            self._groups.discard(group, channel)
            if not self._up:
                self._unsynced.add((group, channel))
                return
        elif not self._up:
            raise self._unavailable()
        await self._submit([("discard", group, channel, 0.0)])

    async def release_channel(self, channel: str) -> None:
        self.local.remove(channel)
        groups = self._groups.forget(channel)
        if not groups:
            return
        if not self._up:
            self._unsynced.update((group, channel) for group in groups)
            return
        await self._submit([("discard", group, channel, 0.0) for group in groups])

    async def group_send(self, group: str, message: Message) -> None:
        validate_group_name(group)
        validate_message(message)
        payload = self._dumps(message)
        self.stats.group_sent += 1
        now = time.time()
        self.local.deliver_many(self._groups.members(group, now - self.group_expiry), message, known_only=True)
        if not self._up:
            return  # local members got it; remote ones cannot be reached now
        args: list[Any] = [
            self.prefix,
            self.process_id,
            now - self.group_expiry,
            scripts.header(now + self.expiry),
            payload,
            group,
            self.inbox_capacity,
            self._expiry_ms(),
            self.capacity,
            self._expiry_ms(),
        ]
        keys = [self._key("group", group), self._key("targets", group)]
        try:
            await self._group_send_script(keys=keys, args=args)
        except DOWN_ERRORS as error:
            self._mark_down(error)

    async def group_members(self, group: str) -> list[str]:
        """The members of a group as Redis holds them (for tests and diagnostics)."""
        validate_group_name(group)
        members: Any = await self._client.zrange(self._key("group", group), 0, -1)
        return [member.decode() for member in members]

    # -- batched membership writes ----------------------------------------------------------

    async def _submit(self, ops: list[Op]) -> None:
        """Queue membership writes; concurrent callers share one pipeline and one connection."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((ops, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())
        await future

    async def _flush_pending(self) -> None:
        while self._pending:
            batch: list[tuple[list[Op], asyncio.Future[None]]] = []
            count = 0
            while self._pending and count < OP_BATCH:
                ops, future = self._pending.popleft()
                batch.append((ops, future))
                count += len(ops)
            error: BaseException | None = None
            if self._up:
                try:
                    await self._write_ops([op for ops, _ in batch for op in ops])
                except DOWN_ERRORS as down:
                    self._mark_down(down)
                    error = down
                except Exception as unexpected:
                    log.exception("Redis membership write failed")
                    error = unexpected
            else:
                error = self._unavailable()
            for ops, future in batch:
                if future.done():
                    continue
                if error is None or self._settle_failed(ops):
                    future.set_result(None)
                else:
                    future.set_exception(self._unavailable())

    def _settle_failed(self, ops: Sequence[Op]) -> bool:
        """Remember failed writes of our own channels for re-registration; False if any is remote."""
        own = True
        for kind, group, channel, _ in ops:
            if kind == "sync":
                self._syncing.discard(group)
            elif process_of(channel) != self.process_id:
                own = False
            elif kind == "discard":
                self._unsynced.add((group, channel))
        return own

    def _schedule_sync(self, group: str) -> None:
        """Queue a check of whether this process still belongs in `group`'s targets (not awaited)."""
        if group in self._syncing or not self._up or self._closed:
            return
        self._syncing.add(group)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._pending.append(([("sync", group, "", 0.0)], future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())

    async def _write_ops(self, ops: list[Op]) -> None:
        pipe = self._client.pipeline(transaction=False)
        added: set[str] = set()
        own_groups: set[str] = set()
        control_expiry = scripts.header(time.time() + self.group_expiry)
        for (kind, group), run_iter in itertools.groupby(ops, key=lambda op: (op[0], op[1])):
            run = list(run_iter)
            members_key, targets_key = self._key("group", group), self._key("targets", group)
            if kind == "sync":
                self._syncing.discard(group)
                own_groups.add(group)
                continue
            channels = [channel for _, _, channel, _ in run]
            if kind == "add":
                pipe.zadd(members_key, {channel: score for _, _, channel, score in run})
                targets: dict[str, float] = {}
                for _, _, channel, score in run:
                    owner = process_of(channel)
                    target = f"c:{channel}" if owner is None else f"p:{owner}"
                    targets[target] = max(score, targets.get(target, 0.0))
                pipe.zadd(targets_key, targets)
                added.add(group)
            else:
                pipe.zrem(members_key, *channels)
                shared = [f"c:{channel}" for channel in channels if process_of(channel) is None]
                if shared:
                    pipe.zrem(targets_key, *shared)
            for _, _, channel, score in run:
                owner = process_of(channel)
                if owner == self.process_id:
                    own_groups.add(group)
                elif owner is not None:
                    # Tell the owner, which delivers to its own members from memory.
                    doc = {"j": group, "c": channel, "t": score} if kind == "add" else {"l": group, "c": channel}
                    inbox = self._key("inbox", owner)
                    pipe.rpush(inbox, control_expiry + orjson.dumps(doc))
                    pipe.pexpire(inbox, self._expiry_ms())
        # Decided on the state after the whole batch: adds above already listed us as a target.
        for group in own_groups:
            if not self._groups.has(group):
                pipe.zrem(self._key("targets", group), f"p:{self.process_id}")
        oldest = time.time() - self.group_expiry
        ttl = max(1, int(self.group_expiry * 1000))
        for group in added:
            for key in (self._key("group", group), self._key("targets", group)):
                pipe.zremrangebyscore(key, "-inf", f"({oldest}")
                pipe.pexpire(key, ttl)
        await pipe.execute()

    # -- maintenance ------------------------------------------------------------------------

    async def flush(self) -> None:
        self.local.clear()
        self._groups.clear()
        self._unsynced.clear()
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
        if self._closed:
            return LayerHealth(ok=False, backend=self.backend, detail="closed")
        if not self._up:
            return LayerHealth(
                ok=False, backend=self.backend, detail=f"Redis at {self.url} unreachable: {self._last_error}"
            )
        return LayerHealth(ok=True, backend=self.backend, detail=f"connected to {self.url}")
