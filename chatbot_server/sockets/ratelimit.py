"""Per-connection token bucket and per-IP connection counting."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable

from aiohttp import web


class TokenBucket:
    """`rate` tokens per second up to `burst`; each accepted message takes one."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, *, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        """Take a token if there is one (`now`: time.monotonic(), if the caller has it already)."""
        if now is None:
            now = time.monotonic()
        tokens = self._tokens + (now - self._stamp) * self.rate
        if tokens > self.burst:  # runs per message: a compare, not a min() call
            tokens = self.burst
        self._stamp = now
        if tokens >= 1:
            self._tokens = tokens - 1
            return True
        self._tokens = tokens
        return False


def client_ip(request: web.Request, trusted_proxies: Iterable[str]) -> str:
    """The client's address: X-Forwarded-For is believed only when the peer is a trusted proxy."""
    peer = request.remote or ""
    trusted = set(trusted_proxies)
    if peer not in trusted:
        return peer
    forwarded = request.headers.get("X-Forwarded-For", "")
    # The rightmost address not added by one of our own proxies is the client.
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if hop not in trusted:
            return hop
    return peer


def forwarded_proto(request: web.Request, trusted_proxies: Iterable[str]) -> str:
    """The scheme the client used: X-Forwarded-Proto, believed as X-Forwarded-For is (above)."""
    if request.secure:
        return "https"
    if (request.remote or "") not in set(trusted_proxies):
        return request.scheme
    # The proxy nearest to us speaks last; nginx's `proxy_set_header` sends exactly one value.
    proto = request.headers.get("X-Forwarded-Proto", "").rpartition(",")[2].strip().lower()
    return proto or request.scheme


def is_loopback(ip: str) -> bool:
    """Whether `ip` is a loopback address (False for what is not an address)."""
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class ConnectionsPerIp:
    """Counts open sockets per client address; loopback peers are not limited.

    A proxy on the same host that is not listed in server.trusted_proxies makes every user look
    like 127.0.0.1: limiting that address would lock everyone out, so loopback is left alone.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, ip: str) -> bool:
        """Count one more socket for `ip`, unless it already has `limit`."""
        if is_loopback(ip):
            return True
        count = self._open.get(ip, 0)
        if count >= self.limit:
            return False
        self._open[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        """Forget one socket of `ip`."""
        if is_loopback(ip):
            return
        count = self._open.get(ip, 0) - 1
        if count > 0:
            self._open[ip] = count
        else:
            self._open.pop(ip, None)
