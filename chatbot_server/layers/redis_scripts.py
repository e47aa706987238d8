"""Lua scripts and wire format of the Redis channel layer.

Wire format of every list entry (process inbox or shared channel): 13 ASCII digits holding the
expiry time in Unix milliseconds, then a JSON document. The fixed-width header lets Lua and the
reader check expiry without decoding JSON.

Inbox documents:
  {"c": [channel, ...], "m": message}      a message for some channels of the owning process
  {"j": group, "c": channel, "t": unix_s}  another process added one of our channels to a group
  {"l": group, "c": channel}               another process removed one of our channels from a group
Shared channel documents are the bare message.

The scripts build key names from the prefix inside Lua, so they target standalone Redis (or a
Sentinel-managed primary), not Redis Cluster.
"""

from __future__ import annotations

HEADER_WIDTH = 13


def header(expires_at: float) -> bytes:
    """The fixed-width expiry header for a Unix time in seconds."""
    return b"%013d" % int(expires_at * 1000)


# KEYS[1] target list, KEYS[2] heartbeat of the owner ("" for a shared channel)
# ARGV: entry, max length, pexpire ms, now ms
# Returns 1 queued, 0 owner is gone (dropped), -1 full.
# When full, expired entries at the head are dropped first so they stop counting.
SEND = """
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local cap = tonumber(ARGV[2])
if redis.call('LLEN', KEYS[1]) >= cap then
  local now = tonumber(ARGV[4])
  while true do
    local head = redis.call('LINDEX', KEYS[1], 0)
    if not head or tonumber(string.sub(head, 1, 13)) > now then
      break
    end
    redis.call('LPOP', KEYS[1])
  end
  if redis.call('LLEN', KEYS[1]) >= cap then
    return -1
  end
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] group
# ARGV: prefix, own process id, oldest live score, header, message JSON,
#       inbox cap, inbox pexpire ms, channel capacity, channel pexpire ms
# Returns {inbox entries written, members swept, shared channel entries written}.
# Members of this process are skipped: the caller delivers to them from its own memory.
GROUP_SEND = """
local group = KEYS[1]
local prefix, own = ARGV[1], ARGV[2]
redis.call('ZREMRANGEBYSCORE', group, '-inf', '(' .. ARGV[3])
local members = redis.call('ZRANGE', group, 0, -1)
local byproc, order, shared = {}, {}, {}
for _, ch in ipairs(members) do
  local bang = string.find(ch, '!', 1, true)
  if bang then
    local proc = string.match(string.sub(ch, 1, bang - 1), '([^.]*)$')
    if proc ~= own then
      local list = byproc[proc]
      if not list then
        list = {}
        byproc[proc] = list
        order[#order + 1] = proc
      end
      list[#list + 1] = ch
    end
  else
    shared[#shared + 1] = ch
  end
end
local written, swept, queued = 0, 0, 0
local inbox_cap = tonumber(ARGV[6])
for _, proc in ipairs(order) do
  local list = byproc[proc]
  if redis.call('EXISTS', prefix .. ':process:' .. proc) == 0 then
    -- The owner stopped beating: its members would never read again.
    for i = 1, #list, 1000 do
      redis.call('ZREM', group, unpack(list, i, math.min(i + 999, #list)))
    end
    swept = swept + #list
  else
    local inbox = prefix .. ':inbox:' .. proc
    if redis.call('LLEN', inbox) < inbox_cap then
      -- Names passed validation ([A-Za-z0-9._-] and one "!"), so they need no JSON escaping.
      redis.call('RPUSH', inbox, ARGV[4] .. '{"c":["' .. table.concat(list, '","') .. '"],"m":' .. ARGV[5] .. '}')
      redis.call('PEXPIRE', inbox, ARGV[7])
      written = written + 1
    end
  end
end
local capacity = tonumber(ARGV[8])
for _, ch in ipairs(shared) do
  local key = prefix .. ':channel:' .. ch
  if redis.call('LLEN', key) < capacity then
    redis.call('RPUSH', key, ARGV[4] .. ARGV[5])
    redis.call('PEXPIRE', key, ARGV[9])
    queued = queued + 1
  end
end
return {written, swept, queued}
"""
