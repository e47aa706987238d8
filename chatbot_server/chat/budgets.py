"""What one client address may take from this process: replayed frames, and bytes stored.

Two token buckets per address, shared by all of that address's sockets in this process (not
across processes: with N processes an address may take N times as much). Every address is limited,
loopback too (an attack script on the same host is still an anonymous client); only a trusted
proxy's own address is not (then X-Forwarded-For names the client, see sockets/ratelimit.py). A
proxy on the same host that is not listed in server.trusted_proxies makes every user look like
127.0.0.1 and share one budget: the first refusal of a loopback address says so in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Final

from ..sockets.ratelimit import is_loopback

log = logging.getLogger("chatbot_server.chat")

REPLAY_WINDOW: Final = 60.0  # limits.replay_per_ip is per minute
QUOTA_WINDOW: Final = 3600.0  # history.quota_per_ip is per hour


class AddressBuckets:
    """A token bucket per address: `capacity` units, refilled evenly over `window` seconds."""

    __slots__ = ("_buckets", "_swept", "_told", "capacity", "name", "rate")

    def __init__(self, capacity: int, window: float, *, name: str = "budget") -> None:
        self.name = name
        self._told = False
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
            self._refused(address)
            return False
        self._set(address, tokens - amount, now)
        return True

    def charge(self, address: str, amount: int, now: float | None = None) -> None:
        """Take `amount` units whatever is left: what was stored already counts (may go below zero)."""
        now = time.monotonic() if now is None else now
        self._set(address, self.tokens(address, now) - amount, now)

    def _refused(self, address: str) -> None:
        if not self._told and is_loopback(address):
            self._told = True  # once per process: the likely cause, not a line per refusal
            log.warning(
                "budget.refused what=%s address=%s: if a proxy on this host is in front, list it in "
                "server.trusted_proxies, or every user shares this address's budget",
                self.name,
                address,
            )

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
    """The application's per-address budgets (one per application: app.setup() makes it)."""

    __slots__ = ("quota", "replay")

    def __init__(self, *, replay_per_ip: int, quota_per_ip: int) -> None:
        self.replay = AddressBuckets(replay_per_ip, REPLAY_WINDOW, name="replay")
        self.quota = AddressBuckets(quota_per_ip, QUOTA_WINDOW, name="quota")

    def of(self, address: str, trusted_proxies: Collection[str] = ()) -> ClientBudgets | None:
        """These budgets if `address` is limited, else None (see is_limited)."""
        return self if is_limited(address, trusted_proxies) else None


def is_limited(address: str, trusted_proxies: Collection[str] = ()) -> bool:
    """Whether an address is limited: every one but a trusted proxy's own (and an empty peer)."""
    return bool(address) and address not in trusted_proxies
