"""The write path: the version rule and the order of writes over both tiers.

A write takes its key's stripe lock, reads the key's current version (only
when the store holds versions or the write carries one), decides, packs the
envelope, writes tier 2 (through the composed ``writes`` layers) and then tier
1. Between the tier-2 write and the tier-1 update the stripe's epoch is odd, so
no reader promotes an older record meanwhile (see ``memory``).

Decisions:

- Unversioned writes keep the key's current version; a versioned write lands
  only above it (tombstones included). Until the store holds a version above 0
  (the ``versioned`` meta record), unversioned writes know the version is 0
  without reading tier 2; the meta record is written before the first versioned
  entry, so LevelDB's ordered log never keeps the entry without it.
- Every write bumps the key's fill generation (when a load is in flight), so a
  load that began before it never stores its result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from . import codec
from .clock import Jitter, check_ttl
from .codec import NEGATIVE, TOMBSTONE, VERSION, Key, Record, RecordState, record_state
from .disk import DiskTier
from .entries import ABSENT
from .errors import CorruptRecord
from .expiry import index_op
from .flight import Flights
from .keyspace import META_VERSIONED, entry_key, fast_entry_key
from .memory import MemoryTier
from .options import Options
from .stats import Stats
from .stripes import Stripes
from .values import check_value_size, stored_record
from .writes import EntryWrites

__all__ = ["Writer", "MAX_TIME"]

log = logging.getLogger("tierstore")

MAX_TIME = 1e15  # seconds: far past any real clock, well inside a float's exact range
_LIVE = RecordState.LIVE


class Writer:
    """Version-checked writes and deletes of entries. Thread-safety: per-key stripe locks."""

    def __init__(
        self,
        *,
        disk: DiskTier,
        writes: EntryWrites,
        memory: MemoryTier,
        stripes: Stripes,
        flights: Flights,
        stats: Stats,
        options: Options,
        seq: Iterator[int],
        versioned: bool,
        on_corrupt: Callable[[bytes, CorruptRecord], None],
        admit_key: Callable[[Key], None] | None = None,
    ) -> None:
        self._disk = disk
        self._disk_get = disk.get
        self._writes = writes
        self._memory = memory
        self._memory_get = memory.get
        self._stripes = stripes
        self._locks = stripes.locks
        self._stripe_count = stripes.count
        self._packers = [codec.new_packer() for _ in range(stripes.count)]
        self._flights = flights
        self._in_flight = flights.in_flight  # tested without a lock: nearly free when empty
        self._options = options
        self._clock = options.clock
        self._jitter = Jitter(options.ttl_jitter)
        self._max_bytes = options.max_value_bytes
        self._seq = seq
        self.versioned = versioned
        self._on_corrupt = on_corrupt
        self._admit_key = admit_key
        self._count_sets = stats.counts["sets"]
        self._count_rejected = stats.counts["sets_rejected"]
        self._count_deletes = stats.counts["deletes"]

    def write(
        self,
        key: Key,
        value: Any,
        ttl: Any = ...,
        version: int | None = None,
        load_time: float = 0.0,
        admit: Callable[[], bool] | None = None,
        detach: bool | None = None,
    ) -> bool:
        """Store ``value`` under the version rule; ``admit`` (called under the key's lock) may veto a fill.

        ``detach``: the write bumps the key's fill generation (default: when there is no ``admit``,
        as for a ``set``; ``add`` asks for it too). The bump follows the packing, under the key's lock,
        so a value that cannot be stored raises with the load in flight still free to fill.
        """
        disk_key = fast_entry_key(key)
        if version is not None:
            codec.check_version(version)
        negative = value is ABSENT
        if ttl is ...:
            ttl = self._options.negative_ttl if negative else self._options.default_ttl
        elif ttl is not None:
            ttl = check_ttl(ttl)
        stripe = hash(key) % self._stripe_count
        lock = self._locks[stripe]
        lock.acquire()
        try:
            if version is None and not self.versioned:
                current_version = 0  # no record of this store carries a version: nothing to read
            else:
                current = self.current(key, disk_key)
                current_version = current[VERSION] if current is not None else 0
            if version is not None and version <= current_version:
                if admit is None:  # a set: a value no write could store raises all the same
                    self._check_storable(stripe, value)
                    if self._in_flight:
                        self._flights.invalidate(key)  # a refused set still bumps the fill generation
                self._count_rejected()
                return False
            if admit is not None and not admit():
                self._count_rejected()
                return False
            now = self.write_time()
            if ttl is not None and self._jitter.fraction:
                ttl = self._jitter.draw(ttl)
            self._commit(
                stripe,
                key,
                disk_key,
                None if negative else value,
                current_version if version is None else version,
                None if ttl is None else now + ttl,
                NEGATIVE if negative else 0,
                now,
                ttl,
                load_time,
                admit is None if detach is None else detach,
            )
            self._count_sets()
            if self._admit_key is not None and not negative:
                self._admit_key(key)
            return True
        finally:
            lock.release()

    def _check_storable(self, stripe: int, value: Any) -> None:
        """For a ``set`` the version rule refused: raise as its write would have for a value no write can store.

        What a bad value does never depends on the stored version (the shared tier's ``set``
        packs before Redis decides, too). Conditional writes (``add``, fills) keep their
        answer: a live entry refuses them first, whatever the value.
        """
        if value is not ABSENT:  # the envelope's own fields do not count (``check_value_size``)
            data, _ = codec.encode_record(self._packers[stripe], value, 0, None, 0, 0.0, None, 0)
            check_value_size(data, self._max_bytes)

    def drawn_ttl(self, ttl: Any, negative: bool = False) -> float | None:
        """The TTL an entry written now gets: ``...`` is ``default_ttl`` (``negative_ttl`` for a
        negative entry), a number is checked, and ``ttl_jitter`` draws. ``write`` inlines this rule
        (the hot path: the check before the key's lock, the draw once the write is decided)."""
        if ttl is ...:
            ttl = self._options.negative_ttl if negative else self._options.default_ttl
        elif ttl is not None:
            ttl = check_ttl(ttl)
        if ttl is not None and self._jitter.fraction:
            ttl = self._jitter.draw(ttl)
        return ttl  # type: ignore[no-any-return]

    def delete(self, key: Key, version: int | None = None) -> bool:
        """Remove ``key`` from both tiers, leaving a tombstone at its version; ``True`` if it was live."""
        disk_key = entry_key(key)
        if version is not None:
            codec.check_version(version)
        stripe = hash(key) % self._stripe_count
        lock = self._locks[stripe]
        lock.acquire()
        try:
            if self._in_flight:
                self._flights.invalidate(key)  # bump the fill generation
            current = self.current(key, disk_key)
            now = self.write_time()
            was_live = current is not None and record_state(current, now) is _LIVE
            keep_version = max(version or 0, current[VERSION] if current is not None else 0)
            if keep_version:
                ttl = self._options.tombstone_ttl
                self._commit(stripe, key, disk_key, None, keep_version, now + ttl, TOMBSTONE, now, ttl)
            elif current is not None or self._disk_get(disk_key) is not None:  # a damaged record reads as None
                self._memory.begin_write(stripe, key)
                try:
                    self._writes.delete(disk_key)
                finally:
                    self._memory.discard(key, stripe)
            else:
                self._memory.discard(key, stripe)
            self._count_deletes()
            return was_live
        finally:
            lock.release()

    def _commit(
        self,
        stripe: int,
        key: Key,
        disk_key: bytes,
        value: Any,
        version: int,
        expires_at: float | None,
        flags: int,
        now: float,
        ttl: float | None,
        load_time: float = 0.0,
        detach: bool = False,
    ) -> None:
        """Pack the envelope, write tier 2, then tier 1 (the caller holds the stripe lock).

        ``detach``: once the value is packed (a value no write can store raises first, changing
        nothing), bump the key's fill generation, so a load that began before never lands, even
        when the tier-2 write then fails.
        """
        seq = next(self._seq)
        data, value = codec.encode_record(
            self._packers[stripe], value, version, expires_at, flags, now, ttl, seq, load_time
        )
        if len(data) > self._max_bytes:  # only then may the value itself be over (no call otherwise)
            check_value_size(data, self._max_bytes)
        if detach and self._in_flight:
            self._flights.invalidate(key)
        if version and not self.versioned:
            self._mark_versioned()
        memory = self._memory
        memory.begin_write(stripe, key)  # until tier 1 is updated, it holds no record of key
        try:
            # An entry with an expiry lands after its expiry index record (what sweeps read; see writes.py).
            self._writes.put(disk_key, data, seq, None if expires_at is None else [index_op(disk_key, expires_at)])
        except BaseException:
            memory.discard(key, stripe)  # what tier 2 holds is unknown: tier 1 forgets the key
            raise
        # A record is a tuple in codec.Record's field order (make_record, inlined: the size comes first).
        memory.put(key, (len(data), version, expires_at, flags, value, now, ttl, seq, load_time), stripe)

    def write_time(self) -> float:
        """The injected clock's time for a write; a clock that is not a finite number is refused.

        A NaN or infinite time would write a record tier 2 cannot give back.
        """
        now = self._clock()
        if (type(now) is float or type(now) is int) and -MAX_TIME < now < MAX_TIME:
            return now
        raise ValueError(f"clock() returned {now!r}: it must return a finite number of seconds")

    def _mark_versioned(self) -> None:
        self._disk.put_meta(META_VERSIONED, True)
        self.versioned = True

    def mark_versioned(self) -> None:
        """Note that tier 2 holds a version above 0 (for writes of copies that bypass ``write``)."""
        if not self.versioned:
            self._mark_versioned()

    def current(self, key: Key, disk_key: bytes) -> Record | None:
        """The stored record (tombstones and expired ones included), read under the key's stripe lock.

        A record too long for this open's ``max_value_bytes`` (written under a larger limit)
        comes back with its value ``values.UNREADABLE``: reads miss it, but its version still
        holds against older writes, as its tombstone would.
        """
        record = self._memory_get(key)
        if record is not None:
            return record
        try:
            data = self._disk_get(disk_key)
            return None if data is None else stored_record(data, self._max_bytes)
        except CorruptRecord as exc:
            self._on_corrupt(disk_key, exc)
            return None
