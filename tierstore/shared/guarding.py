"""The existence filter in shared mode: one Bloom filter in Redis, a bitmap, for every process of a namespace.

The hashing is ``bloom``'s (``probe_positions``: one 128-bit MurmurHash3 of the
tagged key, double hashing) with the parameters stored beside the bitmap, so
every process probes the same bits:

- ``<prefix>g:bits``: the bitmap (Redis's bit order: bit ``i`` is the
  ``i % 8``-th most significant bit of byte ``i // 8``);
- ``<prefix>g:params``: a hash of ``seed`` (32 bits, drawn by the store that
  built the filter), ``nbits``, ``nhashes``, ``capacity``, ``error_rate``,
  ``count`` (keys whose add set a new bit) and ``ones`` (bits set);
- ``<prefix>g:building``: a set of the tokens of rebuilds under way, each with
  its carry list ``<prefix>g:carry:<token>`` (and its bitmap built aside,
  ``<prefix>g:build:<token>``).

A store opening with ``guard=True`` finds the filter, or builds one sized by
its ``bloom_capacity``/``bloom_error_rate`` holding every key Redis holds (the
``keys`` set), installed only if no other store installed one first; a filter
found with other parameters is used as it is (``rebuild_guard`` resizes it).
Each check is one script call (``GETBIT`` of every probe; the script checks
the seed the positions were computed for, and a store whose cached
parameters are out of date, after another's rebuild, reads the new ones and
checks again). Adds are one script call (``SETBIT``, counting new keys), written
as steps (``add_steps``, ``add_many_steps``: the writes' admission, run by
their driver, blocking or asyncio).

``rebuild(keys)`` builds the new filter in this process (``guard_build``: new seed, sized for
``max(capacity, 2 * len(keys))``), writes it aside in one ``SET`` and installs
it with its parameters by ``RENAME`` in one script. Keys added by any process
from the start of the rebuild until the swap are carried over: every add
also appends its keys to the carry list of each rebuild under way, and the
swap runs only when it has consumed the whole list (else the rebuilder adds
the rest and tries again). The carry list expires, so
a rebuilder that dies stops the carrying within the hour.

A filter that disappears from Redis while stores use it (Redis lost its data),
or whose names hold another type of value, could have held keys the source still
has, so every check admits (``degraded``) until ``rebuild_guard`` installs a
new one (deleting those names first); adds still run their script, which carries
their keys to rebuilds under way and names a filter installed since (by this
store or another), which the add then fills and every check uses again; a store opening
then builds one from the keys Redis holds. ``save`` and ``close`` have nothing
to do: Redis holds the filter. Thread-safety: Redis orders every step; the
cached parameters are replaced as a whole tuple.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from .. import codec
from ..bloom import BloomFilter, encode_keys, probe_positions
from ..codec import Key
from ..errors import SharedUnavailable, TierStoreError
from ..guard import Guard
from .client import SharedClient, wrong_type
from .guard_build import SWAP, FilterBuild
from .scripts import Scripts
from .steps import Call, Steps, run

__all__ = ["SharedGuard", "CHECK", "ADD", "SWAP"]

log = logging.getLogger("tierstore")

_STALE, _MISSING = -1, -2
_ADD_CHUNK = 2_000
_PARAMS = (b"seed", b"nbits", b"nhashes", b"error_rate")
_Probe = tuple[bytes, bytes, int, float]  # seed and nbits as Redis holds them (the scripts compare them), nhashes, rate
_MAX_BITS = 2**32  # a Redis bitmap's size
_MAX_HASHES = 64  # far past any error rate's need: more is damage, not a filter


def _checked_probe(found: list[Any]) -> _Probe | None:
    """The probe of the parameters ``seed, nbits, nhashes, error_rate`` as Redis holds them; ``None`` when
    any is missing or damaged (a seed not of 32 bits, no bits, a count of hashes no filter has)."""
    seed, nbits, nhashes, error_rate = found
    if not all(isinstance(field, bytes) and field.isdigit() and len(field) <= 10 for field in (seed, nbits, nhashes)):
        return None
    try:
        rate = float(error_rate)
    except (TypeError, ValueError):
        return None
    if int(seed) >= 2**32 or not 0 < int(nbits) <= _MAX_BITS or not 0 < int(nhashes) <= _MAX_HASHES or not 0 < rate < 1:
        return None
    return seed, nbits, int(nhashes), rate


# KEYS: bits, params. ARGV: seed, nbits, positions...
CHECK = """
local p = redis.call('HMGET', KEYS[2], 'seed', 'nbits', 'nhashes', 'error_rate')
if not p[1] then return {-2} end
if p[1] ~= ARGV[1] or p[2] ~= ARGV[2] then return {-1, p[1], p[2], p[3], p[4]} end
for i = 3, #ARGV do
  if redis.call('GETBIT', KEYS[1], ARGV[i]) == 0 then return {0} end
end
return {1}
"""

# KEYS: bits, params, rebuilds under way. ARGV: seed, nbits, nhashes, carry-list prefix, then per key its
# tagged form and positions.
ADD = """
local p = redis.call('HMGET', KEYS[2], 'seed', 'nbits', 'nhashes', 'error_rate')
local carries = {}
for _, token in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local list = ARGV[4] .. token
  if redis.call('EXISTS', list) == 1 then carries[#carries + 1] = list else redis.call('SREM', KEYS[3], token) end
end
local k = tonumber(ARGV[3])
local stale = p[1] ~= ARGV[1] or p[2] ~= ARGV[2]
local keys, ones = 0, 0
for i = 5, #ARGV, k + 1 do
  for _, list in ipairs(carries) do redis.call('RPUSH', list, ARGV[i]) end
  if not stale then
    local new = 0
    for j = i + 1, i + k do
      if redis.call('SETBIT', KEYS[1], ARGV[j], 1) == 0 then new = new + 1 end
    end
    if new > 0 then keys = keys + 1; ones = ones + new end
  end
end
if not p[1] then return {-2} end
if stale then return {-1, p[1], p[2], p[3], p[4]} end
if keys == 0 then return {1, 0} end
return {1, keys, redis.call('HINCRBY', KEYS[2], 'count', keys), redis.call('HINCRBY', KEYS[2], 'ones', ones)}
"""


class SharedGuard(Guard):
    """``Guard``'s interface on the Redis bitmap (the store binds it as its ``_guard``)."""

    def __init__(
        self, client: SharedClient, scripts: Scripts, capacity: int, error_rate: float, *, raising: bool = False
    ) -> None:
        prefix = client.names.prefix
        self._client = client
        self._raising = raising  # shared_failure="raise": a check Redis cannot answer raises, else it admits
        self._redis = client.redis
        self._scripts = scripts
        self._capacity = capacity
        self._error_rate = error_rate
        self._bits = prefix + b"g:bits"
        self._params = prefix + b"g:params"
        self._carry_prefix = prefix + b"g:carry:"
        self._aside = prefix + b"g:build:"
        self._building = prefix + b"g:building"
        self._build = FilterBuild(
            client, scripts, bits=self._bits, params=self._params, building=self._building,
            carry_prefix=self._carry_prefix, aside_prefix=self._aside,
        )  # fmt: skip
        self._warned = False
        self.over_capacity = False
        self.degraded = False
        self._last_stats = {"guard_keys": 0, "guard_over_capacity": 0, "guard_degraded": 0, "guard_error_ppm": 0}
        self._probe: _Probe | None = None
        self._opening = threading.Lock()
        self._unopened = True
        try:
            self._find()
        except SharedUnavailable as exc:
            if not self._admits(exc):
                raise  # with "local" a store opens with Redis unreachable: the filter is found once it answers

    def _find(self) -> None:
        """Find the filter in Redis, or build one of the keys Redis holds (at open, or at the first check
        or add once Redis answers, for a store opened without it: those calls block for it, once)."""
        with self._opening:
            if self._unopened:
                self._read_params()
                if self._probe is None:
                    self._install(self._keys_in_redis(), only_if_missing=True)
                    self._read_params()
                self.degraded = self._probe is None
                self._unopened = False

    # -- parameters -------------------------------------------------------------------

    def _read_params(self) -> _Probe | None:
        """The filter's parameters as Redis holds them, or ``None`` when there is no filter."""
        found: Any = self._client.call("guard", self._redis.hmget, self._params, list(_PARAMS))
        return None if found[0] is None else self._adopt([0, *found])

    def _adopt(self, reply: Any) -> _Probe | None:
        """Use the parameters of a reply (``[_, seed, nbits, nhashes, error_rate]``); damaged ones (not what
        a store writes) leave the filter degraded, admitting every key, until ``rebuild_guard``."""
        probe = _checked_probe(reply[1:5])
        if probe is None:
            if not self.degraded:
                log.warning("the shared existence filter's parameters in Redis are damaged; every key is admitted "
                            "until rebuild_guard()")  # fmt: skip
            self.degraded = True
        self._probe = probe
        return probe

    def _positions(self, data: bytes, probe: _Probe) -> list[int]:
        return probe_positions(data, int(probe[0]), int(probe[1]), probe[2])

    # -- keys -----------------------------------------------------------------------------

    def might_contain(self, key: Key) -> bool:
        """``False`` only for a key never admitted (by any process): one script call."""
        return run(self.might_contain_steps(key), self._scripts)

    def might_contain_steps(self, key: Key) -> Steps[bool]:
        """``might_contain`` as steps."""
        data = codec.encode_key(key)
        try:
            if self._unopened:
                self._find()
        except SharedUnavailable as exc:
            if not self._admits(exc):
                raise
            return True
        for _ in range(3):  # parameters replaced by another store's rebuild meanwhile: read again
            probe = self._probe
            if probe is None:
                return True
            positions = map(str, self._positions(data, probe))
            try:
                reply = yield Call("guard check", CHECK, [self._bits, self._params], [probe[0], probe[1], *positions])
            except SharedUnavailable as exc:
                if not self._admits(exc):
                    raise
                return True
            if reply[0] == _MISSING:
                self._lost()
                return True
            if reply[0] != _STALE:
                self.degraded = False
                return bool(reply[0])
            self._adopt(reply)
        return True  # the filter keeps changing under us: admitting is never a wrong answer

    def add(self, key: Key) -> None:
        """Admit ``key``: one script call."""
        run(self.add_steps(key), self._scripts)

    def add_steps(self, key: Key) -> Steps[None]:
        """``add`` as steps (the writes' admission hook)."""
        yield from self._add_steps([codec.encode_key(key)])

    def add_many(self, keys: Iterable[Key]) -> None:
        """Admit every key (all validated first: a bad key changes nothing); a script call per 2,000 keys."""
        run(self.add_many_steps(keys), self._scripts)

    def add_many_steps(self, keys: Iterable[Key]) -> Steps[None]:
        """``add_many`` as steps (``set_many``'s admission hook)."""
        encoded = encode_keys(keys)
        for start in range(0, len(encoded), _ADD_CHUNK):
            yield from self._add_steps(encoded[start : start + _ADD_CHUNK])

    def _add_steps(self, encoded: list[bytes]) -> Steps[None]:
        try:
            if self._unopened:
                self._find()  # while Redis is unreachable this raises, as the write would
        except SharedUnavailable as exc:
            if not wrong_type(exc):
                raise
            self._damaged()
        for _ in range(3):
            probe = self._probe
            # Degraded (no filter known): the script still carries the keys to the rebuilds under way and
            # names a filter another store installed since, which this add then fills: none is left out.
            args: list[bytes | str] = [b"", b"", "0"] if probe is None else [probe[0], probe[1], str(probe[2])]
            args.append(self._carry_prefix)
            for data in encoded:
                args.append(data)
                if probe is not None:
                    args.extend(map(str, self._positions(data, probe)))
            try:
                reply = yield Call("guard add", ADD, [self._bits, self._params, self._building], args)
            except SharedUnavailable as exc:
                if not wrong_type(exc):
                    raise
                self._damaged()  # the write goes on: a degraded filter admits every key
                return
            if reply[0] == _MISSING:
                self._lost()
                return
            if reply[0] != _STALE:
                if reply[1] and probe is not None:  # new bits were set: the fill rate moved
                    self._note_fill(int(reply[2]), int(reply[3]), probe)
                return
            if self._adopt(reply) is None:
                return  # damaged parameters: degraded until rebuild_guard
            self.degraded = False

    def _admits(self, exc: SharedUnavailable) -> bool:
        """Whether a check Redis did not answer admits its key: when Redis is unreachable with "local" (the
        read is a miss that loads and stores nothing), or when a name of the filter holds another type."""
        if wrong_type(exc):
            self._damaged()
            return True
        return not self._raising and self._client.down

    def _damaged(self) -> None:
        if not self.degraded:
            log.warning("a name of the shared existence filter holds another type in Redis; every key is admitted "
                        "until rebuild_guard()")  # fmt: skip
        self.degraded = True
        self._probe = None
        self._unopened = False

    def _lost(self) -> None:
        if not self.degraded:
            log.warning("the shared existence filter is gone from Redis; every key is admitted until rebuild_guard()")
        self.degraded = True
        self._probe = None

    def _note_fill(self, count: int, ones: int, probe: _Probe) -> None:
        """Over capacity: the error rate estimated from the bits set is past twice the target (one warning)."""
        rate = (ones / int(probe[1])) ** probe[2]
        self.over_capacity = rate > 2 * probe[3]
        if self.over_capacity and not self._warned:
            self._warned = True
            log.warning(
                "the shared existence filter is over capacity (%d keys; estimated error rate %.4f, target %g); "
                "rebuild_guard() replaces it with one sized for its keys",
                count,
                rate,
                probe[3],
            )

    # -- rebuilding -----------------------------------------------------------------------

    def rebuild(self, keys: Iterable[Key]) -> None:
        """Replace the filter with one of ``keys`` (plus keys any process adds meanwhile)."""
        self._build.clear_wrong_types()  # damage rebuild_guard is there to repair
        self._install(encode_keys(keys), only_if_missing=False)
        self._probe = None
        self._unopened = False
        self._read_params()
        self.degraded = self._probe is None
        self._warned = False
        self.over_capacity = False

    def _keys_in_redis(self) -> list[bytes]:
        return self._build.keys_in_redis()

    def _install(self, encoded: list[bytes], *, only_if_missing: bool) -> None:
        capacity = self._capacity if only_if_missing else max(self._capacity, 2 * len(encoded))
        self._build.install(encoded, capacity, self._error_rate, only_if_missing=only_if_missing)

    # -- the rest of Guard's interface ----------------------------------------------------

    def save(self, *, clean: bool = False) -> None:
        """Nothing to save: Redis holds the filter."""

    def close(self) -> None:
        """Nothing to save: Redis holds the filter."""

    @property
    def filter(self) -> BloomFilter:
        raise TierStoreError("the shared existence filter lives in Redis; stats() reports on it")

    @property
    def pending(self) -> int:
        return 0

    def stats(self) -> dict[str, int]:
        """The ``guard_*`` stats of the filter in Redis (one ``HMGET``); the last ones read while Redis fails."""
        fields = (b"count", b"ones", b"nbits", b"nhashes", b"error_rate")
        try:
            found: Any = self._client.call("guard stats", self._redis.hmget, self._params, list(fields))
        except SharedUnavailable:
            return {**self._last_stats, "guard_degraded": int(self.degraded)}
        count, ones, nbits, nhashes, error_rate = found
        probe = _checked_probe([b"0", nbits, nhashes, error_rate])
        if probe is None or not (ones or b"0").isdigit() or not (count or b"0").isdigit():
            stats = {"guard_keys": 0, "guard_over_capacity": 0, "guard_degraded": 1, "guard_error_ppm": 0}
        else:
            rate = (int(ones or 0) / int(nbits)) ** int(nhashes)
            stats = {
                "guard_keys": int(count or 0),
                "guard_over_capacity": int(rate > 2 * float(error_rate)),
                "guard_degraded": int(self.degraded),
                "guard_error_ppm": round(rate * 1_000_000),
            }
        self._last_stats = stats
        return dict(stats)
