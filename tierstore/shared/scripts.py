"""The Lua scripts that decide writes in Redis, loaded once and reloaded on ``NOSCRIPT``.

Each write is one script, so the version rule, the value with its expiry, the
sequence number and the invalidation message are one atomic step in Redis:

- Versions travel as decimal strings (Python's ``str(int)``: no sign, no
  leading zeros) and are compared as strings, longer first and then digit by
  digit: Lua numbers are doubles, exact only up to 2**53, and versions go to
  2**63-1. The comparison reads bytes, so the server's locale cannot change it.
- ``SET``: a versioned write lands only above the stored version (entry or
  tombstone); an unversioned one keeps it. The hash gets the envelope, the
  version, the sequence number and the epoch id; ``PEXPIRE`` of the given
  milliseconds (the TTL plus ``stale_ttl``) or ``PERSIST`` for no expiry.
  Returns ``{1, version, seq, epoch}``, or ``{0, stored version}`` when refused.
- ``DELETE``: a tombstone at ``max(version, stored)`` for the given
  milliseconds (``tombstone_ttl``); at version 0 the key is removed outright.
  Returns ``{old envelope or nil, kept version, seq, epoch}``.
- Every accepted write takes ``INCR`` of the namespace's ``seq`` and publishes
  ``seq:version:origin:tagged key`` on its channel (the key last: it may hold
  ``:``). The epoch id is created when missing or of another type (``ARGV[7]`` is a fresh one).
  A landing (``land``) whose envelope is at most ``PUSH_BYTES`` long publishes
  ``seq:version+length+epoch length:origin:tagged key`` followed by the
  envelope and the epoch id instead: a listener holding a copy of the key
  replaces it with this record rather than dropping it, so the next read here
  needs no round trip (see ``listener``). The epoch id says which data set the
  record belongs to: a listener that has since read another one's drops the key.

Every accepted write also deletes the key's load lease (``release``): a fill
that began before it finds its token gone and is refused, in every process.
It keeps the ``keys`` set (entries by tagged key) in step with the hashes.
``land(version)`` is the landing every accepting script of one entry shares
(``SET``, ``add``'s, a fill's): the hash and its expiry, the ``keys`` set, the
lease freed, the seq taken and the message published.

KEYS (``Names.entry_keys``): the entry's hash, the sequence key, the epoch key,
the key's lease, the set of leased keys, the set of stored keys. ARGV: the envelope
(the writer's, its version slot unused: ``v`` is the truth), the version (``""``:
unversioned), the milliseconds to keep the key (``""``: no expiry), the channel,
the origin, the tagged key, a fresh epoch id.

``Scripts`` loads the sources with ``SCRIPT LOAD`` at each subscription of the
listener (the first contact with Redis, which may come after the open, and
each reconnect; the scripts of other modules are registered with ``add`` at
open, or loaded on their first run) and runs them with ``EVALSHA``; a
``NOSCRIPT`` reply (a restarted or flushed server) loads the script again and
runs it once more: a script that was not found did not run.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError

from .client import SharedClient

__all__ = ["Scripts", "SET", "DELETE", "PUSH_BYTES"]

PUSH_BYTES = 1024  # the longest envelope a message carries to the listeners (see the module doc)

_COMMON = (
    f"local PUSH_BYTES = {PUSH_BYTES}\n"
    + """
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return false
end
local function stamp()
  local epoch = redis.pcall('GET', KEYS[3])
  if type(epoch) ~= 'string' then  -- missing, or a name of another type (damage): a new data set id
    epoch = ARGV[7]
    redis.call('SET', KEYS[3], epoch)
  end
  return string.format('%d', redis.call('INCR', KEYS[2])), epoch
end
local function publish(seq, version)
  redis.call('PUBLISH', ARGV[4], seq .. ':' .. version .. ':' .. ARGV[5] .. ':' .. ARGV[6])
end
local function publish_entry(seq, version, epoch)
  local size = #ARGV[1]
  if size > PUSH_BYTES then return publish(seq, version) end
  local sizes = '+' .. size .. '+' .. #epoch
  redis.call('PUBLISH', ARGV[4], seq .. ':' .. version .. sizes .. ':' .. ARGV[5] .. ':' .. ARGV[6] .. ARGV[1] .. epoch)
end
local function release()
  redis.call('DEL', KEYS[4])
  redis.call('ZREM', KEYS[5], ARGV[6])
end
local function land(version)
  local seq, epoch = stamp()
  redis.call('HSET', KEYS[1], 'd', ARGV[1], 'v', version, 's', seq, 'e', epoch)
  if ARGV[3] == '' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
  redis.call('ZADD', KEYS[6], 0, ARGV[6])
  release()
  publish_entry(seq, version, epoch)
  return {1, version, seq, epoch}
end
local current = redis.call('HGET', KEYS[1], 'v') or '0'
"""
)

SET = (
    _COMMON
    + """
local version = ARGV[2]
if version == '' then
  version = current
elseif not gt(version, current) then
  return {0, current}
end
return land(version)
"""
)

DELETE = (
    _COMMON
    + """
local old = redis.call('HGET', KEYS[1], 'd')
local keep = current
if ARGV[2] ~= '' and gt(ARGV[2], current) then keep = ARGV[2] end
local seq, epoch = stamp()
if keep == '0' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[6], ARGV[6])
else
  redis.call('HSET', KEYS[1], 'd', ARGV[1], 'v', keep, 's', seq, 'e', epoch)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[6], 0, ARGV[6])
end
release()
publish(seq, keep)
return {old, keep, seq, epoch}
"""
)


class Scripts:
    """The write scripts of one client: loaded at contact, run by digest, reloaded when Redis forgot them."""

    def __init__(self, client: SharedClient) -> None:
        self._client = self.client = client
        self._digests = {source: hashlib.sha1(source.encode()).hexdigest() for source in (SET, DELETE)}
        self.reloads = 0

    def add(self, *sources: str) -> None:
        """Register more scripts (a part of the shared tier with scripts of its own): loaded with these."""
        for source in sources:
            self._digests[source] = hashlib.sha1(source.encode()).hexdigest()

    def load(self) -> None:
        """Load every script (the listener, once subscribed: Redis may be marked down until it is done)."""
        for source in list(self._digests):  # a first run elsewhere may register one meanwhile
            self._load(source, while_down=True)

    def _load(self, source: str, *, what: str = "SCRIPT LOAD", while_down: bool = False) -> None:
        """``SCRIPT LOAD`` of ``source``; ``what`` names the call it is for in a ``SharedUnavailable``."""
        call = self._client.call
        digest = call(what, self._client.redis.script_load, source, while_down=while_down)
        if digest != self._digests[source]:  # the server hashes the source as we do
            raise RuntimeError(f"Redis returned digest {digest!r} for a script whose SHA-1 is {self._digests[source]}")

    def digest(self, source: str) -> str:
        """The SHA-1 ``EVALSHA`` runs ``source`` by (registered now if new, so ``load`` reloads it too)."""
        digest = self._digests.get(source)
        if digest is None:
            digest = self._digests.setdefault(source, hashlib.sha1(source.encode()).hexdigest())
        return digest

    def run(self, what: str, source: str, keys: list[bytes], args: list[bytes | str]) -> Any:
        """Run ``source`` with ``keys`` and ``args``; ``SharedUnavailable`` when Redis fails."""
        digest = self._digests.get(source)
        if digest is None:  # a script of another module, run for the first time: loaded now
            digest = self._digests.setdefault(source, hashlib.sha1(source.encode()).hexdigest())
            self._load(source, what=f"{what} (SCRIPT LOAD)")
        result = self._client.call(what, self._evalsha, digest, keys, args)
        if result is _FORGOTTEN:
            self.reloads += 1
            self._load(source, what=f"{what} (SCRIPT LOAD)")
            result = self._client.execute(what, b"EVALSHA", digest, len(keys), *keys, *args)
        return result

    def _evalsha(self, digest: str, keys: list[bytes], args: list[bytes | str]) -> Any:
        try:
            return self._client.send(b"EVALSHA", digest, len(keys), *keys, *args)
        except NoScriptError:
            return _FORGOTTEN


_FORGOTTEN = object()  # EVALSHA found no script: it did not run
