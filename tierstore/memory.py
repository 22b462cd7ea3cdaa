"""Tier 1: an LRU of decoded records, bounded by items and by encoded bytes.

The LRU is an ``OrderedDict`` of the project's own rather than cachetools'
``LRUCache`` (which stays the reference model in the tests): every step that
touches the order is one C call, atomic under the interpreter lock. Writes take
the tier's lock. Reads do not: a read is ``dict.get`` and ``move_to_end`` (a
key evicted between the two raises ``KeyError``, which the read ignores), and
an eviction is ``popitem(last=False)``, so a reader can never break a writer's
eviction half way (cachetools evicts with ``next(iter(order))`` in Python,
which a concurrent ``move_to_end`` breaks with ``RuntimeError``).

A per-stripe write epoch keeps promotions from going back in time. A write is
``begin_write`` (the epoch turns odd), the tier-2 write, then ``put`` or
``discard`` (the epoch turns even again). A reader that fetched a record from
tier 2 promotes it only if the epoch it read before the fetch was even and is
unchanged: so no record read before or during a write lands in tier 1, and a
reader that saw the new value in tier 2 never finds the old one in tier 1
afterwards. Writers of one stripe hold the store's lock of that stripe, so
epoch updates of a stripe never race each other.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from .codec import Key, Record

__all__ = ["MemoryTier", "STRIPES"]

STRIPES = 64


class MemoryTier:
    """Decoded records of recently used keys; tier 2 stays authoritative.

    Thread-safety: ``get`` takes no lock (see the module doc); every other call
    takes the tier's lock.
    """

    def __init__(self, max_items: int, max_bytes: int | None = None) -> None:
        self._data: OrderedDict[Key, Record] = OrderedDict()
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._bytes = 0
        self.evictions = 0
        self._lock = threading.Lock()
        self._epochs = [0] * STRIPES
        self.get: Callable[[Key], Record | None] = self._reader()

    def _reader(self) -> Callable[[Key], Record | None]:
        """The lock-free read: the record held for a key (marked recently used), or None."""
        data_get = self._data.get
        move_to_end = self._data.move_to_end

        def get(key: Key) -> Record | None:
            record = data_get(key)
            if record is not None:
                try:
                    move_to_end(key)
                except KeyError:  # evicted or replaced between the two calls: the record read stands
                    pass
            return record

        return get

    def epoch(self, key: Key) -> int:
        """The write epoch of ``key``'s stripe, read before a tier-2 fetch."""
        return self._epochs[hash(key) % STRIPES]

    def begin_write(self, key: Key) -> None:
        """A write of ``key`` to tier 2 starts: no promotion of its stripe lands until it ends."""
        stripe = hash(key) % STRIPES
        self._epochs[stripe] |= 1

    def put(self, key: Key, record: Record) -> None:
        """Hold ``record`` for ``key``: the write ends (promotions read before it fail)."""
        with self._lock:
            self._end_write(key)
            self._store(key, record)

    def discard(self, key: Key) -> None:
        """Forget ``key``: the write that removed it ends (promotions read before it fail)."""
        with self._lock:
            self._end_write(key)
            self._remove(key)

    def _end_write(self, key: Key) -> None:
        stripe = hash(key) % STRIPES
        self._epochs[stripe] = (self._epochs[stripe] | 1) + 1  # the next even epoch

    def promote(self, key: Key, record: Record, epoch: int) -> bool:
        """Hold a record read from tier 2 if no write of its stripe ran since ``epoch`` was read."""
        if not self._max_items or epoch & 1:
            return False
        with self._lock:
            if self._epochs[hash(key) % STRIPES] != epoch or key in self._data:
                return False
            self._store(key, record)
            return True

    def _store(self, key: Key, record: Record) -> None:
        max_bytes = self._max_bytes
        if not self._max_items or (max_bytes is not None and record.size > max_bytes):
            self._remove(key)
            return
        data = self._data
        if max_bytes is not None:
            old = data.get(key)
            self._bytes += record.size - (old.size if old is not None else 0)
        data[key] = record
        data.move_to_end(key)
        while len(data) > self._max_items or (max_bytes is not None and self._bytes > max_bytes):
            _, evicted = data.popitem(last=False)
            self.evictions += 1
            if max_bytes is not None:
                self._bytes -= evicted.size

    def _remove(self, key: Key) -> None:
        record = self._data.pop(key, None)
        if record is not None and self._max_bytes is not None:
            self._bytes -= record.size

    def clear(self) -> None:
        with self._lock:
            for stripe in range(STRIPES):
                self._epochs[stripe] = (self._epochs[stripe] | 1) + 1
            self._data.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        """Encoded bytes held (0 when tier 1 has no byte bound and so keeps no total)."""
        return self._bytes
