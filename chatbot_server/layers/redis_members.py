"""The Redis layer's batched membership writes: group_add/discard calls queued and written together.

Concurrent callers share one pipeline and one connection; a member of another process is told
through that process's inbox; failed writes of our own channels are kept for re-registration.
A part of RedisChannelLayer (layers/redis.py), which supplies the state declared here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import LayerUnavailableError
from . import redis_scripts as scripts
from .base import ChannelLayer, process_of
from .redis_groups import LocalGroups

log = logging.getLogger("chatbot_server.layers.redis")  # the layer's one logger, as before the split

# Errors that mean "Redis is not reachable right now" (BusyLoadingError is a ConnectionError).
DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
OP_BATCH = 2000  # group_add/discard operations per pipeline

# (kind, group, channel, score): kind is "add" or "discard".
Op = tuple[str, str, str, float]


def _consume(future: asyncio.Future[None]) -> None:
    # Nobody awaits background writes; their failure was logged or will be retried on reconnect.
    if not future.cancelled():
        future.exception()


class MembershipWrites(ChannelLayer):
    """The membership-writing part of RedisChannelLayer (not used on its own)."""

    # Set by RedisChannelLayer.__init__.
    _client: aioredis.Redis
    _groups: LocalGroups
    _unsynced: set[tuple[str, str]]
    _syncing: set[str]
    _pending: deque[tuple[list[Op], asyncio.Future[None]]]
    _flusher: asyncio.Task[None] | None
    _up: bool
    _closed: bool

    if TYPE_CHECKING:  # defined by RedisConnection and RedisChannelLayer

        def _key(self, kind: str, name: str) -> str: ...

        def _expiry_ms(self) -> int: ...

        def _mark_down(self, error: BaseException) -> None: ...

        def _unavailable(self) -> LayerUnavailableError: ...

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
