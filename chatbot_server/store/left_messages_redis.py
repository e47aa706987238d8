"""Left messages in Redis, shared by every process on the same Redis and key prefix.

Keys under `<prefix>:{<prefix>:messages}:` (one hash tag: one slot on a cluster, so each script is
atomic): `open` (sorted set, id → arrival number from `seq`, so messages of one millisecond keep
their order), `seq` (counter), `items` (hash id → JSON), `ip:<address>`
(the address's count in the current hour, expiring with it). Every call has a deadline and fails
with StoreUnavailableError.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from redis import exceptions as redis_errors

from ..errors import StoreUnavailableError
from ..ops.redis import RedisClient
from .left_messages import WINDOW, Added, LeftMessage, LeftMessages, new_id

T = TypeVar("T")

#: Seconds a call may take (a user's form, an agent's click) before it counts as failed.
DEADLINE = 2.0

# KEYS: open, items, seq, ip counter. ARGV: id, ts, json, per ip, max open, window ms.
_ADD = """
local count = tonumber(redis.call('GET', KEYS[4]) or '0')
if count >= tonumber(ARGV[4]) then return 'ip_limit' end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then return 'full' end
if redis.call('INCR', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[6]) end
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 'ok'
"""
# KEYS: open, items. ARGV: id.
_CLOSE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""
# KEYS: open, items. The open messages' JSON, oldest first.
_OPEN = """#!lua flags=no-writes
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""


class RedisLeftMessages(LeftMessages):
    """Left messages on the application's Redis client (closed by whoever made it)."""

    backend = "redis"

    def __init__(self, client: RedisClient, *, prefix: str = "chatbot", per_ip: int = 3, max_open: int = 1000) -> None:
        super().__init__(per_ip=per_ip, max_open=max_open)
        self._client = client
        self._base = f"{prefix}:{{{prefix}:messages}}"
        self._keys = [f"{self._base}:open", f"{self._base}:items"]
        register = client.register_script
        self._add, self._close, self._open = register(_ADD), register(_CLOSE), register(_OPEN)

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(DEADLINE):
                return await call
        except (TimeoutError, redis_errors.RedisError) as exc:
            detail = f"no answer within {DEADLINE:g} s" if isinstance(exc, TimeoutError) else str(exc)[:200]
            raise StoreUnavailableError(f"left messages unavailable: {detail}") from None

    async def add(self, contact: str, text: str, *, conversation: str, ip: str, now: float | None = None) -> Added:
        now = time.time() if now is None else now
        message = LeftMessage(new_id(), int(now * 1000), contact, text, conversation)
        keys = [*self._keys, f"{self._base}:seq", f"{self._base}:ip:{ip}"]
        args: list[Any] = [
            message.id, message.ts, orjson.dumps(message.item()), self.per_ip, self.max_open, int(WINDOW * 1000),
        ]  # fmt: skip
        status = await self._call(self._add(keys=keys, args=args))
        status = status.decode() if isinstance(status, bytes) else str(status)
        if status == "ip_limit":
            return Added(refused="ip_limit")
        if status == "full":
            return Added(refused="full")
        return Added(message)

    async def open(self) -> list[LeftMessage]:
        raw: list[Any] = await self._call(self._open(keys=self._keys, args=[]))
        out = []
        for record in raw:
            if record is None:  # pragma: no cover - both keys change in one script
                continue
            data = orjson.loads(record)
            out.append(
                LeftMessage(str(data["id"]), int(data["ts"]), data["contact"], data["text"], data["conversation"])
            )
        return out

    async def close(self, message_id: str) -> bool:
        return bool(await self._call(self._close(keys=self._keys, args=[message_id])))
