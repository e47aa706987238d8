"""The Redis layer's batched membership writes: group_add/discard calls queued and written together.

Concurrent callers share one pipeline and one connection; a member of another process is told
through that process's inbox; failed writes of our own channels are kept for re-registration.
A write Redis refuses while reachable (OOM under maxmemory, READONLY) is kept in `_retry` and
written again with backoff until it lands or the member leaves; meanwhile health() is not ok.
A part of RedisChannelLayer (layers/redis.py), which supplies the state declared here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import LayerUnavailableError
from ..ops.redis import RedisClient
from . import redis_scripts as scripts
from .base import ChannelLayer, process_of
from .redis_groups import LocalGroups

log = logging.getLogger("chatbot_server.layers.redis")  # the layer's one logger, as before the split

# Errors that mean "Redis is not reachable right now" (BusyLoadingError is a ConnectionError). A
# cluster client also raises RedisClusterException when no node answers ("Redis Cluster cannot be
# connected") or a slot has no primary (SlotNotCoveredError), and ClusterDownError (CLUSTERDOWN).
DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, RedisClusterException, ClusterDownError)
OP_BATCH = 2000  # group_add/discard operations per pipeline
RETRY_MIN = 0.05  # first wait before writing a refused membership again (doubles up to RETRY_MAX)
RETRY_MAX = 2.0
# How long group_add/group_discard wait for their write: past it, a write of our own channel
# lands in the background (the socket's connect goes on); a remote one fails.
MEMBER_WAIT = 0.5

# (kind, group, channel, score): kind is "add" or "discard".
Op = tuple[str, str, str, float]


def _consume(future: asyncio.Future[None]) -> None:
    # Nobody awaits background writes; their failure was logged or will be retried on reconnect.
    if not future.cancelled():
        future.exception()


class MembershipWrites(ChannelLayer):
    """The membership-writing part of RedisChannelLayer (not used on its own)."""

    # Set by RedisChannelLayer.__init__.
    _client: RedisClient
    _groups: LocalGroups
    _unsynced: set[tuple[str, str]]
    _syncing: set[str]
    _pending: deque[tuple[list[Op], asyncio.Future[None]]]
    _flusher: asyncio.Task[None] | None
    _writing_since: float | None  # monotonic start of the membership write in flight
    _retry: dict[tuple[str, str], Op]  # own memberships Redis refused, by (group, channel)
    _retrier: asyncio.Task[None] | None
    _write_error: str  # the last write Redis refused, "" once writes land again
    _refusal_logged: bool
    _up: bool
    _closed: bool
    _ready: asyncio.Event  # set while connected and every membership is registered
    _outage_logged: bool
    url: str

    if TYPE_CHECKING:  # defined by RedisConnection and RedisChannelLayer

        def _key(self, kind: str, name: str) -> str: ...

        def _expiry_ms(self) -> int: ...

        def _mark_down(self, error: BaseException) -> None: ...

        def _unavailable(self) -> LayerUnavailableError: ...

    async def _submit(self, ops: list[Op], *, wait: float | None = None) -> None:
        """Queue membership writes; concurrent callers share one pipeline and one connection.

        With `wait` (a user-facing call), wait at most that long: a write of our own channels
        still unwritten then lands in the background (or is retried, see `_settle_failed`), so a
        hung Redis never holds a connecting socket for the whole socket timeout; a write naming
        another process's channel raises LayerUnavailableError instead."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)  # a caller that stopped waiting never reads it
        self._pending.append((ops, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())
        if wait is None:
            await future
            return
        own = all(process_of(channel) == self.process_id for _, _, channel, _ in ops)
        stuck = self._writing_since is not None and time.monotonic() - self._writing_since > wait
        if own and stuck:
            return  # the write ahead of ours is already late: do not wait the deadline again
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(future)
        except TimeoutError:
            self.stats.late_writes += 1
            self._ready.clear()  # "registered" again once the write lands (_write_landed)
            if not own:
                raise LayerUnavailableError(f"Redis at {self.url} did not answer within {wait:g} s") from None

    async def _flush_pending(self) -> None:
        while self._pending:
            batch: list[tuple[list[Op], asyncio.Future[None]]] = []
            count = 0
            while self._pending and count < OP_BATCH:
                ops, future = self._pending.popleft()
                batch.append((ops, future))
                count += len(ops)
            error: BaseException | None = None
            refused = False
            written = [op for ops, _ in batch for op in ops]
            if self._up:
                self._writing_since = time.monotonic()
                try:
                    await self._write_ops(written)
                except DOWN_ERRORS as down:
                    self._mark_down(down)
                    error = down
                except Exception as unexpected:  # Redis is up but refused (OOM...), or a bug
                    self._write_refused(unexpected)
                    error, refused = unexpected, True
                else:
                    self._writing_since = None
                    self._write_landed(written)
                finally:
                    self._writing_since = None
            else:
                error = self._unavailable()
            for ops, future in batch:
                if future.done():
                    continue
                if error is None or self._settle_failed(ops, retry=refused):
                    future.set_result(None)
                elif refused:
                    future.set_exception(
                        LayerUnavailableError(f"Redis at {self.url} refuses writes ({self._write_error})")
                    )
                else:
                    future.set_exception(self._unavailable())

    def _settle_failed(self, ops: Sequence[Op], *, retry: bool = False) -> bool:
        """Remember failed writes of our own channels; False if any is remote (the caller is told).

        After an outage the reconnect re-registers every membership (and `_unsynced` discards);
        a write Redis refused while reachable is retried by `_retry_writes` instead."""
        own = True
        for op in ops:
            kind, group, channel, _ = op
            if kind == "sync":
                self._syncing.discard(group)
            elif process_of(channel) != self.process_id:
                own = False
            elif retry:
                self._retry[(group, channel)] = op
            elif kind == "discard":
                self._unsynced.add((group, channel))
        if self._retry:
            self.stats.pending_writes = len(self._retry)
            self._ready.clear()  # wait_connected() waits for them
            if self._retrier is None or self._retrier.done():
                self._retrier = asyncio.create_task(self._retry_writes())
        return own

    def _write_refused(self, error: BaseException) -> None:
        """Record a write Redis refused; logged once per episode (never a traceback per request)."""
        self._write_error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        self.stats.write_failures += 1
        if self._refusal_logged or self._closed:
            return
        self._refusal_logged = True
        if isinstance(error, RedisError):
            log.warning("Redis at %s refuses writes (%s); retrying in the background", self.url, self._write_error)
        else:
            log.error("Redis membership write failed; retrying in the background", exc_info=error)

    def _write_landed(self, ops: Sequence[Op] = ()) -> None:
        """A write landed: the memberships it wrote are no longer pending."""
        for _, group, channel, _ in ops:
            self._retry.pop((group, channel), None)
        self.stats.pending_writes = len(self._retry)
        if not self._retry:
            if self._refusal_logged:
                log.warning("Redis at %s accepts writes again", self.url)
            self._write_error = ""
            self._refusal_logged = False
            # Every membership is in Redis again (none refused, late or queued; not mid-reconnect).
            if self._up and not self._outage_logged and not self._pending and self._writing_since is None:
                self._ready.set()

    def _forget_retry(self, group: str, channel: str) -> None:
        """A newer write of this membership supersedes a pending retry."""
        if self._retry.pop((group, channel), None) is not None:
            self.stats.pending_writes = len(self._retry)

    async def _retry_writes(self) -> None:
        """Write refused memberships again, with backoff, until they land or their member left."""
        delay = RETRY_MIN
        while self._retry and not self._closed:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RETRY_MAX)
            if not self._up:
                continue  # the reconnect re-registers every membership; retried after it
            ops: list[Op] = []
            for group, channel in list(self._retry):
                joined = self._groups.joined(group, channel)
                if joined is not None:
                    ops.append(("add", group, channel, joined))  # what we hold now, not what failed
                else:
                    ops.append(("discard", group, channel, 0.0))
            try:
                await self._submit(ops)  # own channels only: a refusal puts them back in _retry
            except LayerUnavailableError:
                continue

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
