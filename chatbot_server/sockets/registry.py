"""The registry of open sockets: counted for limits and health, closed together on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Coroutine
from typing import Any, Protocol

from aiohttp import WSCloseCode

from ..ops.memtrim import TrimAfterWaves, release_free_memory
from ..ops.metrics import ServerStats
from .codes import CLOSE_IDLE
from .ratelimit import ConnectionsPerIp

log = logging.getLogger("chatbot_server.connections")


class _Limits(Protocol):
    @property
    def idle_timeout(self) -> float: ...

    @property
    def heartbeat(self) -> float: ...


class _Settings(Protocol):
    @property
    def limits(self) -> _Limits: ...


class _Ws(Protocol):
    @property
    def closed(self) -> bool: ...


class Socket(Protocol):
    """What the registry needs of an open socket (WebsocketConsumer is one)."""

    connection_id: str
    last_active: float
    last_heard: float
    busy: bool

    @property
    def settings(self) -> _Settings: ...

    @property
    def ws(self) -> _Ws: ...

    def ping_nowait(self) -> None: ...

    def drop_unresponsive(self) -> None: ...

    async def close(self, *, code: int = ..., message: str = ..., notify: bool = ...) -> None: ...


class ConnectionRegistry:
    """Open consumers of one application, held weakly so a crashed handler never leaks."""

    def __init__(self, *, max_per_ip: int = 200) -> None:
        self._consumers: weakref.WeakSet[Socket] = weakref.WeakSet()
        self.per_ip = ConnectionsPerIp(max_per_ip)
        self.stats = ServerStats()
        self._changed = asyncio.Condition()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._pinged: dict[Socket, float] = {}  # sockets with a ping unanswered, since when
        self._waves = TrimAfterWaves()
        self._trim: asyncio.TimerHandle | None = None
        self.accepting = True

    def __len__(self) -> int:
        return len(self._consumers)

    async def add(self, consumer: Socket) -> None:
        """Count an accepted consumer (and start the sweep with the first one)."""
        self._consumers.add(consumer)
        limits = consumer.settings.limits
        if (limits.idle_timeout or limits.heartbeat) and self._sweeper is None and self.accepting:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(limits.idle_timeout, limits.heartbeat))
        async with self._changed:
            self._changed.notify_all()

    def keep_alive(self, cleanup: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a consumer's clean-up as a task held here until it is done (so it cannot vanish)."""
        task = asyncio.get_running_loop().create_task(cleanup)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    async def discard(self, consumer: Socket) -> None:
        """Forget a consumer whose clean-up has finished."""
        self._consumers.discard(consumer)
        self._pinged.pop(consumer, None)
        if self._waves.observe(len(self._consumers)) and self._trim is None:
            # After thousands of sockets closed at once, hand the freed memory back (once the
            # wave has passed, not per socket).
            self._trim = asyncio.get_running_loop().call_later(1.0, self._release_memory)
        async with self._changed:
            self._changed.notify_all()

    def _release_memory(self) -> None:
        self._trim = None
        release_free_memory()
        log.info("memory.trimmed open=%d", len(self._consumers))

    async def wait_until(self, count: int) -> None:
        """Wait until exactly `count` sockets are open and fully cleaned up (tests, drains)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._consumers) == count)

    async def _sweep(self, idle: float, heartbeat: float) -> None:
        # One task per application instead of timers per socket re-armed on every frame: every few
        # seconds, close the sockets whose user has sent nothing for `idle` seconds, ping the ones
        # quiet for `heartbeat` seconds, and drop those that left a ping unanswered for half of it.
        period = max(0.05, min(idle / 4 if idle else 15.0, heartbeat / 4 if heartbeat else 15.0, 15.0))
        while True:
            await asyncio.sleep(period)
            if idle:
                self._close_idle(time.monotonic() - idle)
            if heartbeat:
                await self._heartbeat(heartbeat)

    def _close_idle(self, deadline: float) -> None:
        for consumer in [c for c in self._consumers if c.last_active < deadline]:
            log.info("ws.idle conn=%s", consumer.connection_id)
            self.keep_alive(consumer.close(code=CLOSE_IDLE, message="idle timeout", notify=True))

    async def _heartbeat(self, interval: float) -> None:
        now = time.monotonic()
        pinged = self._pinged
        consumers = self._consumers
        for consumer, sent in list(pinged.items()):
            if consumer.last_heard >= sent or consumer.last_active >= sent or consumer not in consumers:
                del pinged[consumer]  # answered (any frame from the peer will do), or gone
            elif now - sent >= interval / 2 and not consumer.busy and not consumer.ws.closed:
                # (A busy socket's pong may be waiting unread behind the hook that runs.)
                del pinged[consumer]
                consumer.drop_unresponsive()
        quiet_since = now - interval
        due = [
            c
            for c in consumers
            if c.last_active < quiet_since and c.last_heard < quiet_since and c not in pinged and not c.busy
        ]
        for n, consumer in enumerate(due, 1):
            if consumer in consumers and not consumer.ws.closed:  # still open after the yields below
                pinged[consumer] = now
                consumer.ping_nowait()
            if n % 500 == 0:
                await asyncio.sleep(0)  # thousands of pings at once: let the sockets' frames through

    async def close_all(self, *, code: int = WSCloseCode.GOING_AWAY, message: str = "server shutdown") -> None:
        """Stop accepting and close every open socket (iterating over a copy)."""
        self.accepting = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        consumers = list(self._consumers)
        if consumers:
            log.info("shutdown closing=%d", len(consumers))
            await asyncio.gather(
                *(c.close(code=code, message=message, notify=True) for c in consumers), return_exceptions=True
            )
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
