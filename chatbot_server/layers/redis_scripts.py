"""Lua scripts and wire format of the Redis channel layer.

Wire format of every list entry (process inbox or shared channel): 13 ASCII digits holding the
expiry time in Unix milliseconds, then a JSON document. The fixed-width header lets Lua and the
reader check expiry without decoding JSON.

Inbox documents:
  {"c": [channel, ...], "m": message}      a message for some channels of the owning process
  {"g": group, "m": message}               a group message: the owner delivers to its own members
  {"j": group, "c": channel, "t": unix_s}  another process added one of our channels to a group
  {"l": group, "c": channel}               another process removed one of our channels from a group
  {"p": token}                             this process's own delivery probe (redis_probe.py), written
                                           with SEND like a remote message; never delivered to a channel
Shared channel documents are the bare message.

Keys are `<prefix>:<kind>:{<name>}`: the name is the hash tag, so a process's inbox and heartbeat
share the slot of `{<process id>}` and a group's member set and targets index that of `{<group>}`.
SEND, TARGETS and SWEEP touch only the keys they are given, all in one slot, and run on Redis
Cluster too: a group send there is TARGETS, then SEND per target process, then SWEEP if one was
dead (see redis_fanout.py). GROUP_SEND does it all in one script, building other processes' key
names in Lua: standalone Redis (or a Sentinel-managed primary) only.
"""

from __future__ import annotations

HEADER_WIDTH = 13


def header(expires_at: float) -> bytes:
    """The fixed-width expiry header for a Unix time in seconds."""
    return b"%013d" % int(expires_at * 1000)


# KEYS[1] target list, KEYS[2] heartbeat of its owner (absent for a shared channel: one key)
# ARGV: entry, max length, pexpire ms, now ms
# Returns 1 queued, 0 owner is gone (dropped), -1 full.
# When full, expired entries at the head are dropped first so they stop counting.
SEND = """
if #KEYS > 1 and redis.call('EXISTS', KEYS[2]) == 0 then
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

# KEYS[1] a group's targets index. ARGV: the oldest live score.
# Returns the live targets ("p:<process>", "c:<channel>"), expired ones removed first.
TARGETS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# Lua shared by SWEEP and GROUP_SEND: remove from the group (a sorted set of channel names) every
# channel "<prefix>.<process>!<token>" whose process is a key of `dead`; returns how many.
_DROP_MEMBERS = """
local function drop_members(group, dead)
  local find, sub = string.find, string.sub
  local gone = {}
  for _, ch in ipairs(redis.call('ZRANGE', group, 0, -1)) do
    local bang = find(ch, '!', 1, true)
    if bang then
      local start = 1
      while true do
        local dot = find(ch, '.', start, true)
        if not dot or dot > bang then
          break
        end
        start = dot + 1
      end
      if dead[sub(ch, start, bang - 1)] then
        gone[#gone + 1] = ch
      end
    end
  end
  for i = 1, #gone, 1000 do
    redis.call('ZREM', group, unpack(gone, i, math.min(i + 999, #gone)))
  end
  return #gone
end
"""

# KEYS[1] group (channel names scored by join time), KEYS[2] its targets index ("p:<process>" for
# each process with members, "c:<channel>" for each shared channel, scored by the latest join).
# ARGV: ids of processes a SEND found without a heartbeat.
# Removes them from the targets and their channels from the group, so a SIGKILLed process's
# members stop costing anything. Rare: once per dead process and group. Returns channels removed.
SWEEP = (
    _DROP_MEMBERS
    + """
local dead = {}
for _, name in ipairs(ARGV) do
  dead[name] = true
  redis.call('ZREM', KEYS[2], 'p:' .. name)
end
return drop_members(KEYS[1], dead)
"""
)

# The whole group send in one script, for a standalone Redis (or a Sentinel-managed primary) only:
# it builds other processes' key names in Lua, which Redis Cluster forbids (their slots differ).
# One round trip instead of two (TARGETS, then SEND per process), and the sweep is atomic.
# KEYS[1] group, KEYS[2] its targets index.
# ARGV: prefix, own process id, oldest live score, header, message JSON, group name,
#       inbox cap, inbox pexpire ms, channel capacity, channel pexpire ms
# Returns {inbox entries written, dead processes swept, shared channel entries written}.
GROUP_SEND = (
    _DROP_MEMBERS
    + """
local group, targets_key = KEYS[1], KEYS[2]
local prefix, own = ARGV[1], ARGV[2]
redis.call('ZREMRANGEBYSCORE', targets_key, '-inf', '(' .. ARGV[3])
local targets = redis.call('ZRANGE', targets_key, 0, -1)
local inbox_cap, capacity = tonumber(ARGV[7]), tonumber(ARGV[9])
local entry = ARGV[4] .. '{"g":"' .. ARGV[6] .. '","m":' .. ARGV[5] .. '}'
local dead = {}
local written, swept, queued = 0, 0, 0
for _, target in ipairs(targets) do
  local kind, name = string.sub(target, 1, 2), string.sub(target, 3)
  if kind == 'p:' and name ~= own then
    if redis.call('EXISTS', prefix .. ':process:{' .. name .. '}') == 0 then
      -- The process stopped beating: its members would never read again.
      redis.call('ZREM', targets_key, target)
      dead[name] = true
      swept = swept + 1
    else
      local inbox = prefix .. ':inbox:{' .. name .. '}'
      if redis.call('LLEN', inbox) < inbox_cap then
        redis.call('RPUSH', inbox, entry)
        redis.call('PEXPIRE', inbox, ARGV[8])
        written = written + 1
      end
    end
  elseif kind == 'c:' then
    local key = prefix .. ':channel:{' .. name .. '}'
    if redis.call('LLEN', key) < capacity then
      redis.call('RPUSH', key, ARGV[4] .. ARGV[5])
      redis.call('PEXPIRE', key, ARGV[10])
      queued = queued + 1
    end
  end
end
if swept > 0 then
  drop_members(group, dead)  -- rare: once per dead process
end
return {written, swept, queued}
"""
)
