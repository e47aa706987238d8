"""Ratings in Redis, shared by every process (store/ratings.py says what is kept).

`<prefix>:conv:{<id>}:rating` is the pending rating (the agent's username), in the conversation's
slot, taken with `GETDEL` so exactly one answer wins on any process. Given ratings are JSON in the
list `<prefix>:ratings:{<yyyymmdd>}` (capped, expiring `agents.rating_days` after its day).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from redis.exceptions import RedisError

from ..errors import StoreUnavailableError
from ..ops.redis import RedisClient
from .ratings import MAX_PER_DAY, Rating, RatingStore, day_of, days_back

#: Seconds a call may take (the store's own deadline).
CALL_TIMEOUT = 2.0


async def redis_call(command: Awaitable[Any], what: str) -> Any:
    """Await one Redis command under CALL_TIMEOUT; failures become StoreUnavailableError."""
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            return await command
    except (RedisError, OSError, TimeoutError) as exc:
        detail = f"no answer from Redis within {CALL_TIMEOUT:g} s" if type(exc) is TimeoutError else str(exc)
        raise StoreUnavailableError(f"{what} unreachable: {detail}") from exc


class RedisRatingStore(RatingStore):
    """Ratings in Redis; the client is the application's (closed by whoever made it)."""

    backend = "redis"

    def __init__(self, client: RedisClient, *, prefix: str = "chatbot", pending_ttl: float = 86400.0, days: int = 30):
        self._client = client
        self.prefix = prefix
        self.pending_ms = int(pending_ttl * 1000)
        self.days = days

    def _pending_key(self, conversation: str) -> str:
        return f"{self.prefix}:conv:{{{conversation}}}:rating"

    def _day_key(self, day: str) -> str:
        return f"{self.prefix}:ratings:{{{day}}}"

    async def ask(self, conversation: str, agent: str) -> None:
        await redis_call(self._client.set(self._pending_key(conversation), agent, px=self.pending_ms), "ratings")

    async def take(self, conversation: str) -> str | None:
        raw = await redis_call(self._client.getdel(self._pending_key(conversation)), "ratings")
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    async def add(self, rating: Rating) -> None:
        day = day_of(rating.ts)
        key = self._day_key(day)
        pipe = self._client.pipeline(transaction=False)  # one key, one slot
        pipe.rpush(key, orjson.dumps(rating.record()))
        pipe.ltrim(key, -MAX_PER_DAY, -1)
        pipe.expire(key, (self.days + 1) * 86400)  # renewed by each add: the day's last one counts
        await redis_call(pipe.execute(), "ratings")

    async def recent(self, days: int) -> list[Rating]:
        out: list[Rating] = []
        for day in reversed(days_back(time.time_ns() // 1_000_000, days)):
            raw = await redis_call(self._client.lrange(self._day_key(day), 0, -1), "ratings")
            out.extend(Rating.from_record(orjson.loads(item)) for item in raw)
        return out
