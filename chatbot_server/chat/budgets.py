"""What one client address may take from this process: replayed frames, and bytes stored.

Two token buckets per address, shared by all of that address's sockets in this process (not
across processes: with N processes an address may take N times as much). Loopback peers are not
limited, like the per-IP connection cap (sockets/ratelimit.py): a proxy on the same host that is
not listed in server.trusted_proxies makes every user look like 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import time
import weakref
from typing import Final

from aiohttp import web

from ..config import Settings

REPLAY_WINDOW: Final = 60.0  # limits.replay_per_ip is per minute
QUOTA_WINDOW: Final = 3600.0  # history.quota_per_ip is per hour


class AddressBuckets:
    """A token bucket per address: `capacity` units, refilled evenly over `window` seconds."""

    __slots__ = ("_buckets", "_swept", "capacity", "rate")

    def __init__(self, capacity: int, window: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / window
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, stamp)
        self._swept = float("-inf")  # the first write sweeps (an empty table: nothing to do)

    def tokens(self, address: str, now: float) -> float:
        """The address's tokens now (an unknown address has a full bucket)."""
        entry = self._buckets.get(address)
        if entry is None:
            return self.capacity
        return min(self.capacity, entry[0] + (now - entry[1]) * self.rate)

    def take(self, address: str, amount: int, now: float | None = None) -> bool:
        """Take `amount` units if the address has them (all or nothing).

        An amount above the capacity is granted from a full bucket (which it leaves in debt), so a
        setting smaller than one page cannot refuse every page forever."""
        now = time.monotonic() if now is None else now
        tokens = self.tokens(address, now)
        if tokens < min(amount, self.capacity):
            return False
        self._set(address, tokens - amount, now)
        return True

    def charge(self, address: str, amount: int, now: float | None = None) -> None:
        """Take `amount` units whatever is left: what was stored already counts (may go below zero)."""
        now = time.monotonic() if now is None else now
        self._set(address, self.tokens(address, now) - amount, now)

    def __len__(self) -> int:
        return len(self._buckets)

    def _set(self, address: str, tokens: float, now: float) -> None:
        self._buckets[address] = (tokens, now)
        # Full buckets are the same as absent ones: drop them now and then, so the table holds
        # only addresses active within the window (not every address ever seen).
        if now - self._swept >= 60.0:
            self._swept = now
            full = [a for a in self._buckets if self.tokens(a, now) >= self.capacity]
            for a in full:
                del self._buckets[a]


class ClientBudgets:
    """The application's per-address budgets (one per application, see `budgets_for`)."""

    __slots__ = ("__weakref__", "quota", "replay")

    def __init__(self, *, replay_per_ip: int, quota_per_ip: int) -> None:
        self.replay = AddressBuckets(replay_per_ip, REPLAY_WINDOW)
        self.quota = AddressBuckets(quota_per_ip, QUOTA_WINDOW)


_BY_APP: weakref.WeakKeyDictionary[web.Application, ClientBudgets] = weakref.WeakKeyDictionary()


def budgets_for(app: web.Application, settings: Settings) -> ClientBudgets:
    """The budgets of the application `app` (made on first use: they are shared by its sockets).

    Kept beside the application rather than in it: a running application is frozen."""
    budgets = _BY_APP.get(app)
    if budgets is None:
        budgets = _BY_APP[app] = ClientBudgets(
            replay_per_ip=settings.limits.replay_per_ip, quota_per_ip=settings.history.quota_per_ip
        )
    return budgets


def is_limited(address: str) -> bool:
    """Whether an address is limited: every one but loopback (and an unparsable empty peer)."""
    try:
        return not ipaddress.ip_address(address).is_loopback
    except ValueError:
        return bool(address)
