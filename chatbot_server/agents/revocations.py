"""Signed-out sessions kept in Redis, so that every process refuses them, even one that was not
listening when the sign-out was announced.

The sign-out itself travels as a layer message (routes.SignOutListener): instant, but only for
processes up and connected at that moment. A process that starts later, or whose Redis link was
cut just then, would accept the copied cookie until it expires (found after #14). So a sign-out is
also written to one sorted set (member: session id, score: when the cookie expires anyway), and
every process reads the set at start and then every RESYNC seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from ..ops.redis import RedisClient

log = logging.getLogger("chatbot_server.agents")

RESYNC = 30.0  # seconds between reads of the set: the longest a cut-off process may lag
DEADLINE = 2.0  # seconds a read or write may take (a sign-out must not hang on a paused Redis)


class Revocations(Protocol):
    """Where sign-outs outlive the message that announced them."""

    async def add(self, session_id: str, expires: float) -> None:
        """Remember the session as signed out until `expires` (time.time())."""

    async def current(self) -> dict[str, float]:
        """Signed-out sessions not yet expired: session id -> expiry."""


class LocalRevocations:
    """One process (memory backend): LiveSessions already knows every sign-out."""

    async def add(self, session_id: str, expires: float) -> None:
        return None

    async def current(self) -> dict[str, float]:
        return {}


# KEYS: the set. ARGV: session id, its expiry, now. One key: one slot on a Redis Cluster too.
# The set lives as long as its latest expiry: a sign-out of a session that expires sooner (signed
# in earlier) must not cut short the set and with it a later one still to be refused.
_ADD = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if latest[2] then redis.call('EXPIREAT', KEYS[1], math.floor(tonumber(latest[2])) + 1) end
return 1
"""


class RedisRevocations:
    """The sorted set `<prefix>:agents:revoked`; expired members are trimmed on every write."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._client = client
        self.key = f"{prefix}:agents:revoked"
        self._add = client.register_script(_ADD)

    async def add(self, session_id: str, expires: float) -> None:
        try:
            async with asyncio.timeout(DEADLINE):
                await self._add(keys=[self.key], args=[session_id, repr(float(expires)), repr(time.time())])
        except (RedisError, TimeoutError, OSError) as exc:  # down, paused, out of memory
            # The sign-out still holds here and (through the layer) on every connected process;
            # only a process that starts before Redis is back would not know. Said, not raised.
            log.warning("agents.revocation_write_failed error=%s", type(exc).__name__)

    async def current(self) -> dict[str, float]:
        try:
            async with asyncio.timeout(DEADLINE):
                pairs = await self._client.zrangebyscore(self.key, time.time(), "+inf", withscores=True)
        except (RedisError, TimeoutError, OSError) as exc:  # retried at the next RESYNC
            log.warning("agents.revocation_read_failed error=%s", type(exc).__name__)
            return {}
        revoked: dict[str, float] = {}
        for pair in pairs:  # (member, score) with withscores=True
            member, score = pair[0], pair[1]
            revoked[member.decode() if isinstance(member, bytes) else str(member)] = float(score)
        return revoked
