"""The Lua scripts of the read-then-write calls on one key: ``add``, ``pop``, and ``touch``/``replace_value``.

They run with the KEYS of ``Names.entry_keys`` and the ARGV of ``scripts``
(envelope, version, milliseconds to keep, channel, origin, tagged key, a fresh
epoch id), plus ``ARGV[8]``; each accepted write takes one seq and publishes one
message, as ``set`` and ``delete`` do.

- ``ENTRY_STATE`` (Lua): the state of a stored envelope at a time, as
  ``codec.record_state`` decides it, read from the envelope's header alone
  (array header, format, version slot, expiry, flags; msgpack ints and floats
  decoded with Redis's ``struct``), so a large value is never decoded in Redis:
  ``live``, ``negative``, ``expired`` (stale included), ``tombstone`` or
  ``damaged`` (a header no writer of this store packs). ``ARGV[8]`` is the
  writer's clock (``repr`` of a float: Lua's ``tonumber`` reads it exactly).
  ``intact()``: whether the hash has the ``v``, ``s`` and ``e`` a read needs
  (``s`` a decimal seq): ``ADD`` and ``POP`` treat a hash a read calls damaged as a
  damaged entry, not a live one.
- ``ADD``: ``SET`` behind one more check: refused (``{0, version}``) while a live
  entry is stored.
- ``POP``: ``DELETE`` with the local ``pop``'s rule: a tombstone already stored is
  left as it is (its expiry too), and so is an envelope longer than ``ARGV[9]``
  (too long for the caller's ``max_value_bytes``: its value could not be given
  back, state ``too long``). Returns ``{old envelope or nil, version, seq,
  epoch, state of the old entry ("missing" without one), action}``, action ``w``
  (a tombstone written), ``r`` (removed) or ``n`` (nothing changed).
- ``REWRITE``: a compare-and-set of the entry's envelope for ``touch`` and
  ``replace_value``, which read the entry, decide and pack in Python (a new
  expiry or value around the stored one) and land only if the entry's write
  stamp (``s``, ``e``) is still what they read; ``{0}`` when it moved (the caller
  reads again). ``ARGV[2]``/``ARGV[8]`` are the stamp read, ``ARGV[3]`` the
  milliseconds to keep (``""``: no expiry, ``"-"``: the key's expiry unchanged),
  ``ARGV[9]`` ``"1"`` to release the key's load lease (a new value) or ``"0"``
  (``touch`` keeps the value: a fill in flight may still land, as locally).
"""

from __future__ import annotations

from .scripts import _COMMON, SET

__all__ = ["ENTRY_STATE", "ADD", "POP", "REWRITE"]

ENTRY_STATE = """
local function mp_number(s, i)
  local b = string.byte(s, i)
  if not b then return nil, i end
  if b < 0x80 then return b, i + 1 end
  if b >= 0xe0 then return b - 256, i + 1 end
  if b == 0xc0 then return false, i + 1 end
  local size, format
  if b == 0xcb then size, format = 8, '>d'
  elseif b == 0xca then size, format = 4, '>f'
  elseif b >= 0xcc and b <= 0xcf then size = 2 ^ (b - 0xcc); format = '>I' .. size
  elseif b >= 0xd0 and b <= 0xd3 then size = 2 ^ (b - 0xd0); format = '>i' .. size
  else return nil, i end
  if #s < i + size then return nil, i end
  return (struct.unpack(format, s, i + 1)), i + 1 + size
end
local function entry_state(s, now)
  local b = string.byte(s, 1)
  local i
  if not b then return 'damaged' end
  if b >= 0x90 and b <= 0x9f then i = 2 elseif b == 0xdc then i = 4 elseif b == 0xdd then i = 6
  else return 'damaged' end
  local format, version, expires, flags
  format, i = mp_number(s, i)
  if format ~= 1 then return 'damaged' end
  version, i = mp_number(s, i)
  if type(version) ~= 'number' then return 'damaged' end
  expires, i = mp_number(s, i)
  if expires == nil then return 'damaged' end
  flags = mp_number(s, i)
  if type(flags) ~= 'number' or flags < 0 or flags > 3 then return 'damaged' end
  if flags >= 2 then return 'tombstone' end
  if expires and expires <= now then return 'expired' end
  if flags ~= 0 then return 'negative' end
  return 'live'
end
local function intact()
  local f = redis.call('HMGET', KEYS[1], 'v', 's', 'e')
  return f[1] ~= false and f[3] ~= false and f[2] ~= false and #f[2] <= 19 and string.find(f[2], '^%d+$') ~= nil
end
"""

ADD = (
    _COMMON
    + ENTRY_STATE
    + """
local stored = redis.call('HGET', KEYS[1], 'd')
if stored and entry_state(stored, tonumber(ARGV[8])) == 'live' and intact() then return {0, current} end
"""
    + SET[len(_COMMON) :]
)

POP = (
    _COMMON
    + ENTRY_STATE
    + """
local old = redis.call('HGET', KEYS[1], 'd')
local seq, epoch = stamp()
local state, action = 'missing', 'n'
if old then
  state = entry_state(old, tonumber(ARGV[8]))
  if not intact() then state = 'damaged' end
  if state ~= 'damaged' and #old > tonumber(ARGV[9]) then
    state = 'too long'
  elseif state ~= 'tombstone' then
    if current == '0' or state == 'damaged' then
      redis.call('DEL', KEYS[1])
      redis.call('ZREM', KEYS[6], ARGV[6])
      action = 'r'
    else
      redis.call('HSET', KEYS[1], 'd', ARGV[1], 's', seq, 'e', epoch)
      redis.call('PEXPIRE', KEYS[1], ARGV[3])
      action = 'w'
    end
  end
end
release()
publish(seq, current)
return {old, current, seq, epoch, state, action}
"""
)

REWRITE = (
    _COMMON
    + """
local stamped = redis.call('HMGET', KEYS[1], 's', 'e')
if stamped[1] ~= ARGV[2] or stamped[2] ~= ARGV[8] then return {0} end
local seq, epoch = stamp()
redis.call('HSET', KEYS[1], 'd', ARGV[1], 's', seq, 'e', epoch)
if ARGV[3] == '' then redis.call('PERSIST', KEYS[1])
elseif ARGV[3] ~= '-' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if ARGV[9] == '1' then release() end
publish(seq, current)
return {1, current, seq, epoch}
"""
)
