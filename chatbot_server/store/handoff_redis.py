"""The handoff queue on Redis, shared by every process on the same Redis and key prefix.

Each change is one Lua script. Keys under `<prefix>:{<prefix>:handoff}:`: `queue` (sorted set,
score = enqueue time), `preview` (hash), `deadline` (sorted set, score = when the entry lapses),
`ip` (hash conversation → client address), `ipcount` (hash address → entries waiting), `claims`
(hash conversation → agent), `claimid` (hash conversation → the claim's request id),
`agent:<username>` (set of the agent's conversations). They all share one hash tag, so on a Redis
Cluster the queue lives in one slot and every script stays atomic: it is one small queue (entries
wait minutes, a claim is a click), so one shard serving it is no bottleneck. Every call has a
deadline (DEADLINE) and fails with QueueUnavailableError, logged once per kind of failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from ..ops.redis import RedisClient, close_client, redis_client
from .handoff_base import (
    DEADLINE,
    SWEEP_LIMIT,
    Enqueued,
    FaultLog,
    HandoffQueue,
    QueueEntry,
    QueueUnavailableError,
    now_ms,
)  # fmt: skip

T = TypeVar("T")

# KEYS (every script): 1 queue, 2 preview, 3 deadline, 4 ip, 5 ipcount, 6 claims, 7 claimid[, 8 agent set].
_SWEEP_FUNCTIONS = """
local function drop(c)
  redis.call('ZREM', KEYS[1], c)
  redis.call('HDEL', KEYS[2], c)
  redis.call('ZREM', KEYS[3], c)
  local ip = redis.call('HGET', KEYS[4], c)
  if ip then
    redis.call('HDEL', KEYS[4], c)
    if redis.call('HINCRBY', KEYS[5], ip, -1) <= 0 then redis.call('HDEL', KEYS[5], ip) end
  end
end
local function sweep(now, limit)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. now, 'LIMIT', 0, limit)
  for _, c in ipairs(gone) do drop(c) end
  return gone
end
"""
# ARGV: conversation, now, preview, ip, max per ip, deadline, sweep limit.
_ENQUEUE = (
    _SWEEP_FUNCTIONS
    + """
local c = ARGV[1]
local gone = sweep(ARGV[2], ARGV[7])
if redis.call('HEXISTS', KEYS[6], c) == 1 then return {'claimed', 0, gone} end
local since = redis.call('ZSCORE', KEYS[1], c)
if since then
  redis.call('ZADD', KEYS[3], 'GT', ARGV[6], c)
  local preview = redis.call('HGET', KEYS[2], c) or ''
  local changed = 0
  if ARGV[3] ~= '' and preview ~= ARGV[3] then
    redis.call('HSET', KEYS[2], c, ARGV[3])
    preview, changed = ARGV[3], 1
  end
  return {'waiting', redis.call('ZRANK', KEYS[1], c) + 1, gone, since, preview, changed}
end
if ARGV[4] ~= '' and tonumber(redis.call('HGET', KEYS[5], ARGV[4]) or '0') >= tonumber(ARGV[5]) then
  return {'refused', 0, gone}
end
redis.call('ZADD', KEYS[1], ARGV[2], c)
redis.call('HSET', KEYS[2], c, ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[6], c)
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[4], c, ARGV[4])
  redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
end
return {'added', redis.call('ZRANK', KEYS[1], c) + 1, gone, ARGV[2], ARGV[3], 0}
"""
)
# ARGV: now, sweep limit.
_SWEEP = _SWEEP_FUNCTIONS + "return sweep(ARGV[1], ARGV[2])"
# ARGV: deadline. Entries an earlier build queued have no deadline: they get one (once per start).
_ADOPT = """
for _, c in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do redis.call('ZADD', KEYS[3], 'NX', ARGV[1], c) end
return 1
"""
# ARGV: conversation, agent, request id. A retried run of the same claim finds its own request id.
_CLAIM = (
    _SWEEP_FUNCTIONS
    + """
local c = ARGV[1]
if not redis.call('ZSCORE', KEYS[1], c) then
  if ARGV[3] ~= '' and redis.call('HGET', KEYS[7], c) == ARGV[3] and redis.call('HGET', KEYS[6], c) == ARGV[2] then
    return 1
  end
  return 0
end
drop(c)
redis.call('HSET', KEYS[6], c, ARGV[2])
redis.call('SADD', KEYS[8], c)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[7], c, ARGV[3]) end
return 1
"""
)
# ARGV: conversation, agent.
_FINISH = """
if redis.call('HGET', KEYS[6], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[6], ARGV[1])
redis.call('HDEL', KEYS[7], ARGV[1])
redis.call('SREM', KEYS[8], ARGV[1])
return 1
"""
# ARGV: deadline, conversation... Renews the entries that wait (never shortened); returns the
# conversations neither waiting nor claimed: their entries were lost (a failover), not taken.
_TOUCH = """
local missing = {}
for i = 2, #ARGV do
  local c = ARGV[i]
  if redis.call('ZSCORE', KEYS[3], c) then
    redis.call('ZADD', KEYS[3], 'GT', ARGV[1], c)
  elseif redis.call('HEXISTS', KEYS[6], c) == 0 then
    missing[#missing + 1] = c
  end
end
return missing
"""
# Read-only (so they still run while Redis refuses writes). ARGV: conversation, now.
_POSITION = """#!lua flags=no-writes
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
if not rank then return -1 end
local ahead = rank
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2], 'LIMIT', 0, 1000)
for _, c in ipairs(lapsed) do
  local r = redis.call('ZRANK', KEYS[1], c)
  if r and r < rank then ahead = ahead - 1 end
end
return ahead + 1
"""
# ARGV: now. The live entries as conversation, since, preview triples.
_WAITING = """#!lua flags=no-writes
local out = {}
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local c = entries[i]
  local deadline = redis.call('ZSCORE', KEYS[3], c)
  if not deadline or tonumber(deadline) >= tonumber(ARGV[1]) then
    out[#out + 1] = c
    out[#out + 1] = entries[i + 1]
    out[#out + 1] = redis.call('HGET', KEYS[2], c) or ''
  end
end
return out
"""

# ARGV: conversation. The user cancels: the entry goes, its address's count with it.
_CANCEL = (
    _SWEEP_FUNCTIONS
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
drop(ARGV[1])
return 1
"""
)


def _text(value: bytes | str) -> str:
    # Replies are bytes on the shared client; a host's own client may decode them already.
    return value.decode() if isinstance(value, bytes) else str(value)


def _kind(error: Exception) -> str:
    if isinstance(error, (TimeoutError, redis_errors.TimeoutError)):
        return "timeout"
    if isinstance(error, redis_errors.ConnectionError):
        return "connection"
    if isinstance(error, redis_errors.ResponseError) and str(error).startswith("OOM"):
        return "oom"
    return "error"


async def guarded(call: Awaitable[T], faults: FaultLog, deadline: float) -> T:
    """One Redis call within `deadline`; a failure becomes QueueUnavailableError, logged once per
    outage by `faults` (the queue's and the routing's calls alike)."""
    try:
        async with asyncio.timeout(deadline):
            result = await call
    except (TimeoutError, redis_errors.RedisError) as error:
        failure = QueueUnavailableError(_kind(error), str(error)[:200])
        faults.failed(failure)
        raise failure from None
    faults.ok()
    return result


class RedisHandoffQueue(HandoffQueue):
    """The queue shared by every process using the same Redis and key prefix."""

    backend = "redis"

    def __init__(
        self,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "chatbot",
        client: RedisClient | None = None,
        grace: float = 120.0,
        max_per_ip: int = 2,
        deadline: float = DEADLINE,
    ) -> None:
        super().__init__(grace=grace, max_per_ip=max_per_ip)
        # A client given in (the application's one client) is closed by whoever made it. Replies
        # are bytes (the shared client does not decode): what is read is decoded here.
        self._own_client = client is None
        self._client: RedisClient = client if client is not None else redis_client(url)
        self.deadline = deadline
        base = f"{prefix}:{{{prefix}:handoff}}"  # one hash tag: one slot on a cluster
        self._keys = [f"{base}:{k}" for k in ("queue", "preview", "deadline", "ip", "ipcount", "claims", "claimid")]
        self._agent_prefix = f"{base}:agent:"
        register = self._client.register_script
        self._enqueue, self._sweep, self._claim = register(_ENQUEUE), register(_SWEEP), register(_CLAIM)
        self._finish, self._position, self._waiting = register(_FINISH), register(_POSITION), register(_WAITING)
        self._adopt, self._touch = register(_ADOPT), register(_TOUCH)
        self._adopted = False

    @property
    def client(self) -> RedisClient:
        """The Redis client the queue uses (routing_redis.py shares it)."""
        return self._client

    async def close(self) -> None:
        await super().close()
        if self._own_client:
            await close_client(self._client)

    async def _call(self, call: Awaitable[T]) -> T:
        return await guarded(call, self.faults, self.deadline)

    async def enqueue(self, conversation: str, preview: str, *, ip: str = "", since: int | None = None) -> Enqueued:
        now = now_ms()
        args: list[str | int] = [
            conversation, since or now, preview, ip, self.max_per_ip, now + int(self.grace * 1000), SWEEP_LIMIT,
        ]  # fmt: skip
        reply: list[Any] = await self._call(self._enqueue(keys=self._keys, args=args))
        status, position, gone = _text(reply[0]), int(reply[1]), tuple(_text(c) for c in reply[2])
        if status in ("claimed", "refused"):
            return Enqueued(status, expired=gone)  # type: ignore[arg-type]
        entry = QueueEntry(conversation, int(float(_text(reply[3]))), _text(reply[4]))
        return Enqueued(status, position, entry, bool(int(reply[5])), gone)  # type: ignore[arg-type]

    async def touch(self, conversations: Sequence[str]) -> list[str]:
        deadline = now_ms() + int(self.grace * 1000)
        missing: list[str] = []
        for start in range(0, len(conversations), 1000):
            chunk = conversations[start : start + 1000]
            lost: list[Any] = await self._call(self._touch(keys=self._keys, args=[deadline, *chunk]))
            missing += [_text(c) for c in lost]
        return missing

    async def sweep(self) -> list[str]:
        if not self._adopted:
            await self._call(self._adopt(keys=self._keys, args=[now_ms() + int(self.grace * 1000)]))
            self._adopted = True
        gone: list[Any] = await self._call(self._sweep(keys=self._keys, args=[now_ms(), SWEEP_LIMIT]))
        return [_text(c) for c in gone]

    async def position(self, conversation: str) -> int | None:
        rank = int(await self._call(self._position(keys=self._keys, args=[conversation, now_ms()])))
        return None if rank < 0 else rank

    async def waiting(self) -> list[QueueEntry]:
        flat: list[Any] = await self._call(self._waiting(keys=self._keys, args=[now_ms()]))
        return [
            QueueEntry(_text(flat[i]), int(float(_text(flat[i + 1]))), _text(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]

    async def claim(self, conversation: str, agent: str, request_id: str = "") -> bool:
        keys = [*self._keys, self._agent_prefix + agent]
        return bool(await self._call(self._claim(keys=keys, args=[conversation, agent, request_id])))

    async def agent_of(self, conversation: str) -> str | None:
        agent = await self._call(self._client.hget(self._keys[5], conversation))
        return None if agent is None else _text(agent)

    async def active(self, agent: str) -> list[str]:
        members: set[Any] = await self._call(self._client.smembers(self._agent_prefix + agent))
        return sorted(_text(m) for m in members)

    async def finish(self, conversation: str, agent: str) -> bool:
        keys = [*self._keys, self._agent_prefix + agent]
        return bool(await self._call(self._finish(keys=keys, args=[conversation, agent])))

    async def cancel(self, conversation: str) -> bool:
        script = self._client.register_script(_CANCEL)  # kept apart from __init__ (issue #16)
        return bool(await self._call(script(keys=self._keys, args=[conversation])))
