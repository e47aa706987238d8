"""Unanswered questions in Redis (store/unanswered.py says what is kept).

One list per UTC day, `<prefix>:unanswered:{<yyyymmdd>}`, of JSON records: `RPUSH`, `LTRIM` to
`agents.unanswered_per_day`, `EXPIRE` `agents.unanswered_days` + 1 days after the day's last add.
"""

from __future__ import annotations

import time

import orjson

from ..ops.redis import RedisClient
from .ratings import day_of, days_back
from .ratings_redis import redis_call
from .unanswered import Unanswered, UnansweredStore


class RedisUnansweredStore(UnansweredStore):
    """Questions in Redis; the client is the application's (closed by whoever made it)."""

    backend = "redis"

    def __init__(self, client: RedisClient, *, prefix: str = "chatbot", days: int = 30, per_day: int = 5000):
        self._client = client
        self.prefix = prefix
        self.days = days
        self.per_day = per_day

    def _day_key(self, day: str) -> str:
        return f"{self.prefix}:unanswered:{{{day}}}"

    async def add(self, item: Unanswered) -> None:
        key = self._day_key(day_of(item.ts))
        pipe = self._client.pipeline(transaction=False)  # one key, one slot
        pipe.rpush(key, orjson.dumps(item.record()))
        pipe.ltrim(key, -self.per_day, -1)
        pipe.expire(key, (self.days + 1) * 86400)
        await redis_call(pipe.execute(), "unanswered questions")

    async def recent(self, days: int) -> list[Unanswered]:
        out: list[Unanswered] = []
        for day in reversed(days_back(time.time_ns() // 1_000_000, min(days, self.days))):
            raw = await redis_call(self._client.lrange(self._day_key(day), 0, -1), "unanswered questions")
            out.extend(Unanswered.from_record(orjson.loads(item)) for item in raw)
        return out
