"""The Lua scripts of the calls on many keys: ``set_many``, ``delete_many``, ``delete_prefix``/``clear``, pruning.

KEYS start with the namespace's seq, epoch, leases set and keys set; ARGV with
the channel, the origin, a fresh epoch id (made the epoch when it is missing)
and the writer's clock (``repr`` of a float).

- ``SET_MANY``: then per key its entry hash and lease in KEYS and ``tagged key,
  envelope, milliseconds to keep`` (``""``: no expiry) in ARGV. Each key is
  written as an unversioned ``SET`` (its stored version kept), its lease released,
  with its own seq and message, so the listeners' ``seq == last + 1`` check holds.
  Returns ``{epoch, {version, seq, ...}}``.
- ``DELETE_MANY``: per key its entry hash and lease in KEYS, its tagged key in
  ARGV after the tombstone envelope and its milliseconds. The local
  ``delete_many``'s rule per key: a tombstone already stored stays as it is, an
  entry at version 0 (or a damaged one) is removed, any other becomes a
  tombstone at its version; every lease released, one seq and message per key.
  Returns ``{epoch, live count, {action, version, seq, ...}}`` (``POP``'s actions).
- ``DELETE_PREFIX``: every entry whose tagged key starts with ``ARGV[9]``
  (``""``: every entry, ``clear``), found by ``ZRANGEBYLEX`` on the keys set in
  pages of 1,000 (a tagged key is the key's tag byte then its bytes, so a key's
  prefix is its tagged key's prefix), deleted by ``DELETE_MANY``'s rule; members
  whose hash expired are pruned; every lease under the prefix is deleted (those
  of the entries found and of the leases set's members under it), so a fill
  begun before is refused in every process. ONE seq and ONE message,
  ``seq:P:origin:tagged prefix``: the listeners drop every copy under it.
  Returns ``{live, changed, seq, epoch}``. It runs as one step, so it holds
  Redis for the time it takes: O(entries under the prefix).
- ``PRUNE``: KEYS the keys set and then entry hashes, ARGV their tagged keys:
  each member whose hash is gone (expired) leaves the set, atomically with the
  check (a member written again meanwhile stays). Returns how many left.

Redis Cluster: ``DELETE_PREFIX`` builds the names of the entries and leases it
finds (``ARGV[7]``, ``ARGV[8]`` are their name prefixes), so they are not declared
in KEYS; every name of a namespace carries its hash tag, ``{namespace}``, so
they all sit on the slot of the declared ones.
"""

from __future__ import annotations

from .conditional_scripts import ENTRY_STATE

__all__ = ["SET_MANY", "DELETE_MANY", "DELETE_PREFIX", "PRUNE"]

_BULK_COMMON = (
    ENTRY_STATE
    + """
local function stamp()
  local epoch = redis.pcall('GET', KEYS[2])
  if type(epoch) ~= 'string' then  -- missing, or a name of another type (damage): a new data set id
    epoch = ARGV[3]
    redis.call('SET', KEYS[2], epoch)
  end
  return string.format('%d', redis.call('INCR', KEYS[1])), epoch
end
local function publish(seq, version, tagged)
  redis.call('PUBLISH', ARGV[1], seq .. ':' .. version .. ':' .. ARGV[2] .. ':' .. tagged)
end
local now = tonumber(ARGV[4])
local function remove(entry, tagged, tomb, keep_ms, seq, epoch)
  local old = redis.call('HGET', entry, 'd')
  local version = redis.call('HGET', entry, 'v') or '0'
  if not old then return 'n', version, false end
  local state = entry_state(old, now)
  if state == 'tombstone' then return 'n', version, false end
  if version == '0' or state == 'damaged' then
    redis.call('DEL', entry)
    redis.call('ZREM', KEYS[4], tagged)
    return 'r', version, state == 'live'
  end
  redis.call('HSET', entry, 'd', tomb, 's', seq, 'e', epoch)
  redis.call('PEXPIRE', entry, keep_ms)
  return 'w', version, state == 'live'
end
"""
)

SET_MANY = (
    _BULK_COMMON
    + """
local out = {}
local epoch
for j = 1, (#KEYS - 4) / 2 do
  local entry, lease = KEYS[3 + 2 * j], KEYS[4 + 2 * j]
  local a = 5 + 3 * (j - 1)
  local tagged, data, keep_ms = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local version = redis.call('HGET', entry, 'v') or '0'
  local seq
  seq, epoch = stamp()
  redis.call('HSET', entry, 'd', data, 'v', version, 's', seq, 'e', epoch)
  if keep_ms == '' then redis.call('PERSIST', entry) else redis.call('PEXPIRE', entry, keep_ms) end
  redis.call('ZADD', KEYS[4], 0, tagged)
  redis.call('DEL', lease)
  redis.call('ZREM', KEYS[3], tagged)
  publish(seq, version, tagged)
  out[#out + 1] = version
  out[#out + 1] = seq
end
return {epoch, out}
"""
)

DELETE_MANY = (
    _BULK_COMMON
    + """
local out = {}
local live = 0
local epoch
for j = 1, (#KEYS - 4) / 2 do
  local entry, lease, tagged = KEYS[3 + 2 * j], KEYS[4 + 2 * j], ARGV[6 + j]
  local seq
  seq, epoch = stamp()
  local action, version, was_live = remove(entry, tagged, ARGV[5], ARGV[6], seq, epoch)
  if was_live then live = live + 1 end
  redis.call('DEL', lease)
  redis.call('ZREM', KEYS[3], tagged)
  publish(seq, version, tagged)
  out[#out + 1] = action
  out[#out + 1] = version
  out[#out + 1] = seq
end
return {epoch, live, out}
"""
)

DELETE_PREFIX = (
    _BULK_COMMON
    + """
local prefix = ARGV[9]
local low, high = '-', '+'
if prefix ~= '' then
  low = '[' .. prefix
  local i = #prefix
  while i > 0 and string.byte(prefix, i) == 255 do i = i - 1 end
  if i > 0 then high = '(' .. string.sub(prefix, 1, i - 1) .. string.char(string.byte(prefix, i) + 1) end
end
local seq, epoch = stamp()
local live, changed = 0, 0
local from = low
while true do
  local page = redis.call('ZRANGEBYLEX', KEYS[4], from, high, 'LIMIT', 0, 1000)
  for _, tagged in ipairs(page) do
    local entry = ARGV[7] .. tagged
    if redis.call('EXISTS', entry) == 0 then
      redis.call('ZREM', KEYS[4], tagged)
    else
      local action, _, was_live = remove(entry, tagged, ARGV[5], ARGV[6], seq, epoch)
      if was_live then live = live + 1 end
      if action ~= 'n' then changed = changed + 1 end
    end
    redis.call('DEL', ARGV[8] .. tagged)
  end
  if #page < 1000 then break end
  from = '(' .. page[#page]
end
from = low
while true do
  local page = redis.call('ZRANGEBYLEX', KEYS[3], from, high, 'LIMIT', 0, 1000)
  for _, tagged in ipairs(page) do
    redis.call('DEL', ARGV[8] .. tagged)
    redis.call('ZREM', KEYS[3], tagged)
  end
  if #page < 1000 then break end
  from = '(' .. page[#page]
end
redis.call('PUBLISH', ARGV[1], seq .. ':P:' .. ARGV[2] .. ':' .. prefix)
return {live, changed, seq, epoch}
"""
)

PRUNE = """
local pruned = 0
for j = 1, #ARGV do
  if redis.call('EXISTS', KEYS[1 + j]) == 0 then
    pruned = pruned + redis.call('ZREM', KEYS[1], ARGV[j])
  end
end
return pruned
"""
