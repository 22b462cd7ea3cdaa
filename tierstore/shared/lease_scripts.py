"""The Lua scripts of load leases: take, fill, release, and the claim of a periodic job.

A key's load lease is a string holding a random token with ``PX lock_timeout``
(``Names.lease``), its tagged key in the ``leases`` set while it is held. Every
accepted write deletes it (``scripts``), so a token still current proves no
write landed since the lease was taken.

- ``TAKE`` (KEYS: entry, lease, leases set; ARGV: token, milliseconds, tagged
  key): ``SET NX PX`` of the lease, and the entry's hash read in the same step,
  so the holder knows what the entry was when it took the lease. Returns
  ``{1 if taken else 0, envelope, version, seq, epoch}`` (absent fields nil).
- ``FILL`` (KEYS and ARGV 1-7 as ``scripts.SET``; ARGV[8] the token, ARGV[9]
  the seq of the tombstone the holder saw at ``TAKE``, ``""`` if none): refused
  with ``{0, "lease"}`` unless the token is current. Then the version rule of a
  local fill: never below the stored version; at the stored version it renews
  the entry but never a tombstone (the one seen, if the hash is still it: only
  expiry can change a hash while the token is current); unversioned keeps the
  stored version. A refused fill returns ``{0, stored version}`` and frees the
  lease; an accepted one writes as ``SET`` does (expiry, ``seq``, message, the
  ``keys`` set) and frees the lease. Returns ``{1, version, seq, epoch}``.
- ``RELEASE`` (KEYS: lease, leases set; ARGV: token, tagged key): deletes the
  lease only while it holds the token (a loader that raised). 1 if it did.
- ``JOB`` (KEYS: the job's claim; ARGV: token, milliseconds): takes or renews the
  claim unless another token holds it. 1 when the caller holds it now.
- ``UNCLAIM`` (KEYS: the job's claim; ARGV: token): deletes the claim only while
  it holds the token (a store closing). 1 if it did.
"""

from __future__ import annotations

from .scripts import _COMMON

__all__ = ["TAKE", "FILL", "RELEASE", "JOB", "UNCLAIM"]

TAKE = """
local taken = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
if taken then redis.call('ZADD', KEYS[3], 0, ARGV[3]) end
local e = redis.call('HMGET', KEYS[1], 'd', 'v', 's', 'e')
return {taken and 1 or 0, e[1] or false, e[2] or false, e[3] or false, e[4] or false}
"""

FILL = (
    _COMMON
    + """
if redis.call('GET', KEYS[4]) ~= ARGV[8] then return {0, 'lease'} end
local version = ARGV[2]
if version == '' then
  version = current
else
  local tombstone = ARGV[9] ~= '' and redis.call('HGET', KEYS[1], 's') == ARGV[9]
  if gt(current, version) or (version == current and tombstone) then
    release()
    return {0, current}
  end
end
return land(version)
"""
)

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

JOB = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
