"""Agent presence, capacity and assignment on Redis, beside the handoff queue's keys.

Keys under the queue's hash tag `<prefix>:{<prefix>:handoff}:` (one slot: every script is
atomic with the queue): `pstatus` (hash agent → online | away), `pexp` (sorted set
"<agent>|<process>" → when that process's renewal lapses, ms), `pcap` (hash agent → capacity),
`plast` (hash agent → when last given a conversation, ms), `assigned` (hash conversation → JSON
[agent, at, since, preview] of auto-assigned conversations still waiting for a first reply) and
`wait` (hash: `avg`, the moving average of waits in ms). An agent's load is the size of the
queue's `agent:<username>` set. Calls have the queue's deadline and fail with
QueueUnavailableError.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from ..ops.redis import RedisClient
from .handoff_base import DEADLINE, FaultLog, QueueEntry, now_ms
from .handoff_redis import _SWEEP_FUNCTIONS, _text, guarded
from .routing import ALPHA, AgentLoad, AgentRouting, Assignment, Reassigned, Status, TransferResult

T = TypeVar("T")

# KEYS: 1 queue .. 7 claimid (as handoff_redis.py), 8 pstatus, 9 pexp, 10 pcap, 11 plast,
# 12 assigned, 13 wait. ARGV[1] is always now (ms), ARGV[2] the prefix of the agents' sets (same
# hash tag, so the same slot as KEYS).
_FUNCTIONS = (
    _SWEEP_FUNCTIONS
    + f"""
local now, sets = tonumber(ARGV[1]), ARGV[2]
local function present()
  local out, seen = {{}}, {{}}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[9], now, '+inf')) do
    local a = string.match(m, '^(.*)|[^|]*$')
    if a and not seen[a] then seen[a] = true; out[#out + 1] = a end
  end
  table.sort(out)
  return out
end
local function agent(a)
  return {{name = a, status = redis.call('HGET', KEYS[8], a) or 'online', load = redis.call('SCARD', sets .. a),
    cap = tonumber(redis.call('HGET', KEYS[10], a) or '1'), last = tonumber(redis.call('HGET', KEYS[11], a) or '0')}}
end
local function waited(since)
  local w = math.max(0, now - tonumber(since))
  local avg = redis.call('HGET', KEYS[13], 'avg')
  if avg then w = {ALPHA} * w + (1 - {ALPHA}) * tonumber(avg) end
  redis.call('HSET', KEYS[13], 'avg', tostring(w))
end
"""
)
_ROSTER = (
    "#!lua flags=no-writes\n"
    + _FUNCTIONS
    + """
local out = {}
for _, a in ipairs(present()) do
  local r = agent(a)
  out[#out + 1] = {r.name, r.status, r.load, r.cap}
end
return out
"""
)
# ARGV: now, sets, "1" to remember each assignment for silent().
_ASSIGN = (
    _FUNCTIONS
    + """
local agents = {}
for _, a in ipairs(present()) do
  local r = agent(a)
  if r.status == 'online' and r.load < r.cap then agents[#agents + 1] = r end
end
local out = {}
if #agents == 0 then return out end
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local c, since = entries[i], entries[i + 1]
  local deadline = redis.call('ZSCORE', KEYS[3], c)
  if not deadline or tonumber(deadline) >= now then
    local best = nil
    for _, a in ipairs(agents) do
      if a.load < a.cap and (best == nil or a.load < best.load
          or (a.load == best.load and (a.last < best.last or (a.last == best.last and a.name < best.name)))) then
        best = a
      end
    end
    if not best then break end
    local preview = redis.call('HGET', KEYS[2], c) or ''
    drop(c)
    redis.call('HSET', KEYS[6], c, best.name)
    redis.call('SADD', sets .. best.name, c)
    if ARGV[3] == '1' then redis.call('HSET', KEYS[12], c, cjson.encode({best.name, ARGV[1], since, preview})) end
    redis.call('HSET', KEYS[11], best.name, ARGV[1])
    waited(since)
    best.load, best.last = best.load + 1, now
    out[#out + 1] = c
    out[#out + 1] = best.name
  end
end
return out
"""
)
# ARGV: now, sets, conversation, agent, request id, capacity. -1: the agent is full.
_CLAIM = (
    _FUNCTIONS
    + """
local c, a = ARGV[3], ARGV[4]
local since = redis.call('ZSCORE', KEYS[1], c)
if not since then
  if ARGV[5] ~= '' and redis.call('HGET', KEYS[7], c) == ARGV[5] and redis.call('HGET', KEYS[6], c) == a then
    return 1
  end
  return 0
end
if redis.call('SCARD', sets .. a) >= tonumber(ARGV[6]) then return -1 end
drop(c)
redis.call('HSET', KEYS[6], c, a)
redis.call('SADD', sets .. a, c)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[7], c, ARGV[5]) end
redis.call('HSET', KEYS[11], a, ARGV[1])
waited(since)
return 1
"""
)
# ARGV: now, sets, timeout ms, grace ms.
_SILENT = (
    _FUNCTIONS
    + """
local out = {}
local all = redis.call('HGETALL', KEYS[12])
for i = 1, #all, 2 do
  local c, v = all[i], cjson.decode(all[i + 1])
  if tonumber(v[2]) + tonumber(ARGV[3]) <= now then
    redis.call('HDEL', KEYS[12], c)
    if redis.call('HGET', KEYS[6], c) == v[1] then
      redis.call('HDEL', KEYS[6], c)
      redis.call('HDEL', KEYS[7], c)
      redis.call('SREM', sets .. v[1], c)
      redis.call('ZADD', KEYS[1], v[3], c)
      redis.call('HSET', KEYS[2], c, v[4])
      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), c)
      redis.call('HSET', KEYS[8], v[1], 'away')
      out[#out + 1] = {c, v[1], v[3], v[4]}
    end
  end
end
return out
"""
)
# ARGV: now, sets, conversation, agent, to.
_TRANSFER = (
    _FUNCTIONS
    + """
local c, a, to = ARGV[3], ARGV[4], ARGV[5]
if redis.call('HGET', KEYS[6], c) ~= a then return 'not_yours' end
if to == a then return 'same' end
local live = false
for _, name in ipairs(present()) do if name == to then live = true end end
local r = agent(to)
if not live or r.status ~= 'online' then return 'offline' end
if r.load >= r.cap then return 'full' end
redis.call('HSET', KEYS[6], c, to)
redis.call('HDEL', KEYS[7], c)
redis.call('SREM', sets .. a, c)
redis.call('SADD', sets .. to, c)
redis.call('HDEL', KEYS[12], c)
redis.call('HSET', KEYS[11], to, ARGV[1])
return 'ok'
"""
)
# ARGV: now, sets, agent, capacity, expiry, member.
_CONNECT = """
redis.call('HSET', KEYS[8], ARGV[3], 'online')
redis.call('HSET', KEYS[10], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[9], ARGV[5], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', '(' .. ARGV[1])
return 1
"""


class RedisRouting(AgentRouting):
    """Routing shared by every process on one Redis and key prefix."""

    def __init__(
        self, client: RedisClient, prefix: str, *, grace: float = 120.0, ttl: float = 30.0, process: str = ""
    ) -> None:
        super().__init__(ttl=ttl, process=process)
        self._client = client
        self.grace = grace
        base = f"{prefix}:{{{prefix}:handoff}}"
        names: tuple[str, ...] = ("queue", "preview", "deadline", "ip", "ipcount", "claims", "claimid")
        names += ("pstatus", "pexp", "pcap", "plast", "assigned", "wait")
        self._keys = [f"{base}:{k}" for k in names]
        self._sets = f"{base}:agent:"
        self.faults = FaultLog()
        register = client.register_script
        self._roster, self._assign, self._claim = register(_ROSTER), register(_ASSIGN), register(_CLAIM)
        self._silent, self._transfer, self._connect = register(_SILENT), register(_TRANSFER), register(_CONNECT)

    async def _call(self, call: Awaitable[T]) -> T:
        return await guarded(call, self.faults, DEADLINE)

    def _member(self, agent: str) -> str:
        return f"{agent}|{self.process}"

    def _expiry(self) -> int:
        return now_ms() + int(self.ttl * 1000)

    async def connect(self, agent: str, capacity: int) -> None:
        args: list[str | int] = [now_ms(), self._sets, agent, capacity, self._expiry(), self._member(agent)]
        await self._call(self._connect(keys=self._keys, args=args))

    async def disconnect(self, agent: str) -> None:
        await self._call(self._client.zrem(self._keys[8], self._member(agent)))

    async def renew(self, agents: list[str]) -> None:
        if agents:
            expiry = self._expiry()
            await self._call(self._client.zadd(self._keys[8], {self._member(a): expiry for a in agents}))

    async def set_status(self, agent: str, status: Status) -> None:
        await self._call(self._client.hset(self._keys[7], agent, status))

    async def roster(self) -> list[AgentLoad]:
        rows: list[Any] = await self._call(self._roster(keys=self._keys, args=[now_ms(), self._sets]))
        return [
            AgentLoad(_text(r[0]), "away" if _text(r[1]) == "away" else "online", int(r[2]), int(r[3])) for r in rows
        ]

    async def assign(self, *, track: bool = True) -> list[Assignment]:
        args: list[str | int] = [now_ms(), self._sets, "1" if track else "0"]
        flat: list[Any] = await self._call(self._assign(keys=self._keys, args=args))
        return [Assignment(_text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def claim(self, conversation: str, agent: str, capacity: int, request_id: str = "") -> bool | None:
        args: list[str | int] = [now_ms(), self._sets, conversation, agent, request_id, capacity]
        won = int(await self._call(self._claim(keys=self._keys, args=args)))
        return None if won < 0 else bool(won)

    async def replied(self, conversation: str) -> None:
        await self._call(self._client.hdel(self._keys[11], conversation))

    async def silent(self, timeout: float) -> list[Reassigned]:
        args: list[str | int] = [now_ms(), self._sets, int(timeout * 1000), int(self.grace * 1000)]
        rows: list[Any] = await self._call(self._silent(keys=self._keys, args=args))
        return [
            Reassigned(_text(r[0]), _text(r[1]), QueueEntry(_text(r[0]), int(float(_text(r[2]))), _text(r[3])))
            for r in rows
        ]

    async def transfer(self, conversation: str, agent: str, to: str) -> TransferResult:
        args: list[str | int] = [now_ms(), self._sets, conversation, agent, to]
        result = _text(await self._call(self._transfer(keys=self._keys, args=args)))
        return result  # type: ignore[return-value]

    async def wait_average(self) -> float | None:
        value = await self._call(self._client.hget(self._keys[12], "avg"))
        return None if value is None else float(_text(value))


__all__ = ["RedisRouting"]
