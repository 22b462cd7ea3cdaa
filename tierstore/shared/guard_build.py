"""Building the shared existence filter: a Bloom filter built in this process, written aside, swapped in.

``FilterBuild`` is ``guarding.SharedGuard``'s builder (at a first open, and
``rebuild_guard``): the new filter is built here from the given tagged keys
(new seed), ``SET`` aside in one call and installed with its parameters by
``RENAME`` in one script (``SWAP``). Keys that any process adds from the start
of the build until the swap are carried over: every add appends its keys to
the carry list of each build under way (``<prefix>g:carry:<token>``, listed in
``<prefix>g:building``), and the swap runs only once the builder has consumed
the whole list. The carry list and the filter aside expire, so a builder that
dies leaves nothing behind for more than an hour. ``clear_wrong_types`` deletes
the filter's names that hold another type of value (damage a rebuild repairs).

Thread-safety: none needed; Redis orders every step.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from ..bloom import BloomFilter, probe_positions
from ..errors import TierStoreError
from .client import SharedClient
from .scripts import Scripts

__all__ = ["FilterBuild", "SWAP"]

_CARRY_TTL_MS = 3_600_000

# KEYS: bits, params, bits built aside, carry list, rebuilds under way. ARGV: token, carry entries consumed, "1" to
# install only when there is no filter, then the parameters as field/value pairs.
SWAP = """
if redis.call('EXISTS', KEYS[3]) == 0 then return {3} end
local n = redis.call('LLEN', KEYS[4])
if n ~= tonumber(ARGV[2]) then return {0, n} end
redis.call('SREM', KEYS[5], ARGV[1])
if ARGV[3] == '1' and redis.call('HEXISTS', KEYS[2], 'seed') == 1 then
  redis.call('DEL', KEYS[3], KEYS[4])
  return {2}
end
redis.call('RENAME', KEYS[3], KEYS[1])
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('DEL', KEYS[4])
return {1}
"""

_REVERSED = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))  # LSB-first bytes to Redis's MSB-first


class FilterBuild:
    """The builds of one namespace's filter (its names in Redis given by ``SharedGuard``)."""

    def __init__(
        self, client: SharedClient, scripts: Scripts, *, bits: bytes, params: bytes, building: bytes,
        carry_prefix: bytes, aside_prefix: bytes,
    ) -> None:  # fmt: skip
        self._client = client
        self._redis = client.redis
        self._scripts = scripts
        self._bits = bits
        self._params = params
        self._building = building
        self._carry_prefix = carry_prefix
        self._aside = aside_prefix

    def clear_wrong_types(self) -> None:
        """Delete the parameters hash or the set of builds when Redis holds another type there (damage: the
        build would fail on it); the swap writes the parameters anew."""
        expected = {self._params: b"hash", self._building: b"set"}

        def types() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for name in expected:
                pipe.type(name)
            return pipe.execute()

        found = self._client.call("guard rebuild", types)
        wrong = [name for name, kind in zip(expected, found, strict=True) if kind not in (expected[name], b"none")]
        if wrong:
            self._client.call("guard rebuild", self._redis.delete, *wrong)

    def keys_in_redis(self) -> list[bytes]:
        """The tagged keys Redis holds entries for (the ``keys`` set), read in chunks."""
        found: list[bytes] = []
        after = b"-"
        while True:  # by member, not by rank: members removed meanwhile shift no later chunk
            chunk: Any = self._client.call(
                "guard", self._redis.zrangebylex, self._client.names.keys, after, b"+", 0, 10_000
            )
            found.extend(chunk)
            if len(chunk) < 10_000:
                return found
            after = b"(" + chunk[-1]

    def install(self, encoded: list[bytes], capacity: int, error_rate: float, *, only_if_missing: bool) -> None:
        """Build a filter of ``encoded`` (tagged keys) sized for ``capacity``, write it aside and swap it in
        with its parameters, carrying over the keys added meanwhile; ``only_if_missing``: unless one is there."""
        token = os.urandom(8).hex().encode()
        carry, aside = self._carry_prefix + token, self._aside + token
        call = self._client.call
        pipe = self._redis.pipeline(transaction=False)
        pipe.rpush(carry, b"")  # the list exists while the rebuild runs: adds append to it
        pipe.pexpire(carry, _CARRY_TTL_MS)
        pipe.sadd(self._building, token)
        call("guard rebuild", pipe.execute)
        try:
            bloom = BloomFilter(capacity, error_rate, seed=secrets.randbits(32))
            for data in encoded:
                bloom.add_encoded(data)
            call("guard rebuild", self._redis.set, aside, bloom.bit_array().translate(_REVERSED), None, _CARRY_TTL_MS)
            consumed = 1
            while True:
                fields = {
                    b"seed": bloom.seed, b"nbits": bloom.nbits, b"nhashes": bloom.nhashes, b"capacity": bloom.capacity,
                    b"error_rate": repr(bloom.error_rate), b"count": len(bloom), b"ones": bloom.bits_set,
                }  # fmt: skip
                args: list[bytes | str] = [token, str(consumed), "1" if only_if_missing else "0"]
                args.extend(x for field, value in fields.items() for x in (field, str(value)))
                reply = self._scripts.run(
                    "guard rebuild", SWAP, [self._bits, self._params, aside, carry, self._building], args
                )
                if reply[0] == 0 and int(reply[1]) > consumed:
                    consumed = self._carry_over(bloom, carry, aside, consumed, int(reply[1]))
                elif reply[0] in (1, 2):
                    return
                else:  # the filter built aside or its carry list expired: an hour went by
                    raise TierStoreError("the existence filter's rebuild outlived its keys in Redis; nothing changed")
        except BaseException:
            try:
                undo = self._redis.pipeline(transaction=False)
                undo.delete(carry, aside)
                undo.srem(self._building, token)
                call("guard rebuild", undo.execute)
            except Exception:  # the first error matters; both expire anyway
                pass
            raise

    def _carry_over(self, bloom: BloomFilter, carry: bytes, aside: bytes, consumed: int, length: int) -> int:
        """Set the bits of the keys appended to ``carry`` since ``consumed`` in the filter built aside."""
        added: Any = self._client.call("guard rebuild", self._redis.lrange, carry, consumed, length - 1)
        pipe = self._redis.pipeline(transaction=False)
        for data in added:
            if bloom.add_encoded(data):
                for position in probe_positions(data, bloom.seed, bloom.nbits, bloom.nhashes):
                    pipe.setbit(aside, position, 1)
        self._client.call("guard rebuild", pipe.execute)
        return consumed + len(added)
