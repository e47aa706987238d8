"""The transport guard: slowloris and file-descriptor exhaustion are stopped before aiohttp sees them.

`ConnectionGuard` wraps aiohttp's protocol factory (`runner.server`, a `web.Server`). Each
connection gets a `_Guarded` protocol that forwards every callback to aiohttp's RequestHandler and
meanwhile:

- until the first request head is complete (b"\\r\\n\\r\\n" seen, across chunks) the connection is
  *unfinished*: it has `handshake_timeout` seconds, then it is closed; a peer address with
  `max_unfinished_per_ip` unfinished connections already gets the next one closed at once (trusted
  proxies are exempt: behind one, every client comes from its address). A later request on a
  kept-alive connection is aiohttp's: its keepalive_timeout closes a head that trickles in.
- every open connection is counted; once `fd_budget` are open, a new one gets a bare 503 and is
  closed at once, so the process never runs out of descriptors (Redis, logs and files still open).

The guard keeps forwarding after the head (rather than `transport.set_protocol()`) because it must
see `connection_lost` to count closes; the cost is one Python call per chunk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from .metrics import GuardStats

log = logging.getLogger("chatbot_server.guard")

HEAD_END = b"\r\n\r\n"
SHED_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\n"
)
ACCEPT_ERROR_MESSAGE = "socket.accept() out of system resource"


def open_fds() -> int:
    """File descriptors this process has open now (Linux /proc; 0 where unknown)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (what systemd's LimitNOFILE allows); (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # a platform cap below the hard limit: keep what we have
            pass
    return soft, hard


def fd_budget(*, reserve: int, extra: int = 0) -> int:
    """Connections the guard lets open: soft limit minus fds open now, `extra` (Redis pool) and `reserve`."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - open_fds() - extra - reserve)


class ConnectionGuard:
    """A protocol factory for `loop.create_server` wrapping aiohttp's `runner.server`."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        *,
        handshake_timeout: float,
        max_unfinished_per_ip: int,
        fd_budget: int,
        trusted_proxies: Iterable[str] = (),
        stats: GuardStats | None = None,
    ) -> None:
        self.factory = factory
        self.handshake_timeout = handshake_timeout
        self.max_unfinished_per_ip = max_unfinished_per_ip
        self.fd_budget = fd_budget
        self.trusted = frozenset(trusted_proxies)
        self.stats = stats or GuardStats()
        self.unfinished: Counter[str] = Counter()
        self.open = 0

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self)


class _Guarded(asyncio.Protocol):
    __slots__ = ("counted", "deadline", "guard", "inner", "peer", "tail", "transport")

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.tail = b""
        self.deadline: asyncio.TimerHandle | None = None
        self.counted = False  # whether this connection holds an `open` slot

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        guard, stats = self.guard, self.guard.stats
        self.transport = transport
        if guard.open >= guard.fd_budget:
            stats.shed["fd_reserve"] += 1
            transport.write(SHED_503)
            transport.close()
            return
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if isinstance(peername, tuple) and peername else ""
        if self.peer and self.peer not in guard.trusted:
            if guard.unfinished[self.peer] >= guard.max_unfinished_per_ip:
                stats.shed["per_ip"] += 1
                self.peer = ""  # not counted for its address: connection_lost must not uncount it
                transport.abort()
                return
            guard.unfinished[self.peer] += 1
        else:
            self.peer = ""  # exempt: not counted per address
        guard.open += 1
        self.counted = True
        self.deadline = asyncio.get_running_loop().call_later(guard.handshake_timeout, self._too_slow)
        self.inner = guard.factory()
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        self.deadline = None
        self.guard.stats.shed["handshake_timeout"] += 1
        if self.transport is not None:
            self.transport.abort()  # nothing to flush: free the descriptor now

    def _head_done(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.peer:
            self._uncount_peer()
        self.tail = b""

    def _uncount_peer(self) -> None:
        unfinished = self.guard.unfinished
        unfinished[self.peer] -= 1
        if unfinished[self.peer] <= 0:
            del unfinished[self.peer]
        self.peer = ""

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self.deadline is not None:
            seen = self.tail + data
            if HEAD_END in seen:
                self._head_done()
            else:
                self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.peer:
            self._uncount_peer()
        if self.counted:
            self.guard.open -= 1
            self.counted = False
        inner, self.inner, self.transport = self.inner, None, None
        if inner is not None:
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class AcceptErrorLog:
    """A loop exception handler: accept() out of fds is logged once per `interval`, with a count.

    asyncio reports EMFILE/ENFILE in accept through the loop's exception handler, with a traceback,
    on every retry (once a second per listener, and per backlog entry): 100k lines in 25 s were
    seen. Everything else goes to the default handler.
    """

    def __init__(self, stats: GuardStats, *, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.stats = stats
        self.interval = interval
        self.clock = clock
        self.last = -interval
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_ERROR_MESSAGE:
            loop.default_exception_handler(context)
            return
        self.stats.accept_errors += 1
        now = self.clock()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        self.last = now
        log.error(
            "accept.out_of_resources error=%r suppressed=%d open_fds=%d",
            context.get("exception"),
            self.suppressed,
            open_fds(),
        )
        self.suppressed = 0
