"""The Redis layer's connection keeping: connect, reconnect with backoff, heartbeat, outage state.

While connected, the inbox reader and the heartbeat run; when either fails or a command reports
Redis down, the layer serves local channels only and reconnects in the background, then
re-registers this process's memberships. A clean close removes this process's keys. A part of
RedisChannelLayer (layers/redis.py), which supplies the state declared here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from ..errors import LayerUnavailableError
from .redis_inbox import InboxReader
from .redis_members import DOWN_ERRORS, Op

log = logging.getLogger("chatbot_server.layers.redis")  # the layer's one logger, as before the split

CONNECT_ERRORS = (*DOWN_ERRORS, LayerUnavailableError)
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0


def _major_version(info: Any) -> int:
    """Redis's major version from INFO server: one reply, or (a cluster asked on every node) a
    reply per node name, of which the oldest node counts."""
    if isinstance(info, dict) and "redis_version" not in info and info:
        return min(_major_version(reply) for reply in info.values())
    return int(str(info.get("redis_version", "0")).split(".")[0]) if isinstance(info, dict) else 0


class RedisConnection(InboxReader):
    """The connection-keeping part of RedisChannelLayer (not used on its own)."""

    # Set by RedisChannelLayer.__init__.
    url: str
    heartbeat_interval: float
    socket_timeout: float
    _process_key: str
    _ready: asyncio.Event
    _down: asyncio.Event
    _outage_logged: bool
    _last_error: str
    _register_again: bool  # write every membership again at the next heartbeat (_register_all)

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
        except (*DOWN_ERRORS, TimeoutError) as error:
            log.warning("could not remove this process's keys from Redis at %s: %s", self.url, error)

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

    async def _probe_write(self, timeout: float) -> str:
        """What is wrong with writing to Redis now, or "": a real write (the heartbeat, refreshed),
        since PING and reads still work when Redis refuses writes (OOM), bounded by `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                await self._client.set(self._process_key, b"1", xx=True, px=self._heartbeat_ttl_ms())
        except TimeoutError:  # before DOWN_ERRORS: it is an OSError
            return f"Redis at {self.url} did not answer within {timeout:g} s"
        except DOWN_ERRORS as error:
            return f"Redis at {self.url} unreachable: {error}"
        except RedisError as error:
            self._write_refused(error)
            return f"Redis at {self.url} refuses writes ({self._write_error})"
        self._write_landed()
        return ""

    def _unavailable(self) -> LayerUnavailableError:
        if self._closed:
            return LayerUnavailableError("the channel layer is closed")
        return LayerUnavailableError(f"Redis at {self.url} is unreachable ({self._last_error})")

    async def _connect(self) -> None:
        await self._client.ping()
        if self._blmpop is None:
            self._blmpop = _major_version(await self._client.info("server")) >= 7
        try:
            await self._beat()
        except DOWN_ERRORS:
            raise
        except RedisError as refused:  # reachable but refusing writes: connect, report, retry
            self._write_refused(refused)
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
        if not self._retry:  # else set once the refused writes land
            self._ready.set()
        if recovered:
            self._register_again = isinstance(self._client, RedisCluster)  # see _register_all
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
            asyncio.create_task(self._probe_delivery()),  # redis_probe.py: a stuck reader is noticed
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
            # SET XX rather than PEXPIRE: PEXPIRE still works under OOM, SET reports the refusal.
            try:
                if await self._client.set(self._process_key, b"1", xx=True, px=self._heartbeat_ttl_ms()):
                    self._write_landed()
                    if self._register_again:
                        await self._register_all()
                    continue
            except DOWN_ERRORS:
                raise
            except RedisError as refused:  # OOM, READONLY: reachable, so keep serving and report it
                self._write_refused(refused)
                # PEXPIRE is allowed under OOM: stay alive, so other processes do not sweep our
                # members (a lapse is still noticed, and repaired, once SET works again).
                try:
                    await self._client.pexpire(self._process_key, self._heartbeat_ttl_ms())
                except DOWN_ERRORS:
                    raise
                except RedisError:
                    pass  # READONLY refuses it too; the lapse is repaired after recovery
                continue
            # Our heartbeat lapsed while connected (a stalled event loop?), so other processes may
            # have swept us from every group: register again.
            await self._beat()
            entries = self._groups.entries()
            log.warning(
                "heartbeat of process %s had lapsed; re-registering %d memberships", self.process_id, len(entries)
            )
            await self._submit([("add", group, channel, joined) for group, channel, joined in entries])
            self._register_again = isinstance(self._client, RedisCluster)

    async def _register_all(self) -> None:
        """Write every live membership again, one heartbeat after this process came back (a
        reconnect, a lapsed heartbeat) on a cluster: there a group send that found us dead just
        before we came back sweeps in a second step (redis_fanout.py), which may remove what the
        comeback had just registered. A heartbeat later no such sweep can still be in flight."""
        self._register_again = False
        await self._submit([("add", group, channel, joined) for group, channel, joined in self._groups.entries()])
