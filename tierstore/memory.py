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
afterwards. Writers of one stripe hold the store's lock of that stripe (see
``stripes``), so epoch updates of a stripe never race each other.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from .codec import SIZE, Key, Record
from .stripes import Stripes

__all__ = ["MemoryTier"]


class MemoryTier:
    """Decoded records of recently used keys; tier 2 stays authoritative.

    Write calls take the key's stripe index (``stripes.of(key)``, computed once
    by the caller). Thread-safety: ``get`` takes no lock (see the module doc);
    every other call takes the tier's lock, except ``epoch`` and ``begin_write``
    (whose stripe's writers are serialized by the caller's stripe lock; it takes
    the tier's lock only to drop a record from a byte-bounded or policy tier).
    """

    def __init__(self, max_items: int, max_bytes: int | None, stripes: Stripes, *, second_read: bool = False) -> None:
        self._data: OrderedDict[Key, Record] = OrderedDict()
        # Admission: keys read from tier 2 once lately; None promotes on every read.
        # Public because the store's read path inlines ``is_first_read``.
        self.first_reads: set[Key] | None = set() if second_read and max_items > 0 else None
        self._max_items = max_items
        self._max_bytes = max_bytes
        # The item-bounded LRU: put and promote inline their insert; anything else goes through _store.
        self._simple = max_bytes is None and max_items > 0
        self._bytes = 0
        self.evictions = 0
        self._lock = threading.Lock()
        self.epochs = [0] * stripes.count
        self.get: Callable[[Key], Record | None] = self._reader()
        # ``get`` as two C calls, for the store's inlined tier-1 hit: ``lookup``, then ``touch``
        # of a key found (a ``KeyError`` from it: the key left meanwhile, and the record read stands).
        self.lookup: Callable[[Key], Record | None] = self._data.get
        self.touch: Callable[[Key], object] = self._data.move_to_end

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

    def epoch(self, stripe: int) -> int:
        """The write epoch of a stripe, read before a tier-2 fetch."""
        return self.epochs[stripe]

    def begin_write(self, stripe: int, key: Key | None = None) -> None:
        """A tier-2 write in ``stripe`` starts: no promotion of its stripe lands until it ends.

        The record held for ``key`` goes first: until ``put``, reads of it go to tier 2, so a
        reader that fetched the new record there never finds the one it replaces here afterwards.
        """
        self.epochs[stripe] |= 1
        if key is not None and key in self._data:  # no promotion lands now: the epoch is odd
            if self._simple:
                self._data.pop(key, None)  # one C call, like a read's: no byte total to keep
            else:
                with self._lock:
                    self._remove(key)

    def put(self, key: Key, record: Record, stripe: int) -> None:
        """Hold ``record`` for ``key``: the write ends (promotions read before it fail)."""
        lock = self._lock
        lock.acquire()
        try:
            epochs = self.epochs
            epochs[stripe] = (epochs[stripe] | 1) + 1  # the next even epoch
            if not self._simple:
                self._store(key, record)
                return
            data = self._data
            data[key] = record
            data.move_to_end(key)
            if len(data) > self._max_items:
                data.popitem(last=False)
                self.evictions += 1
        finally:
            lock.release()

    def discard(self, key: Key, stripe: int) -> None:
        """Forget ``key``: the write that removed it ends (promotions read before it fail)."""
        with self._lock:
            epochs = self.epochs
            epochs[stripe] = (epochs[stripe] | 1) + 1
            self._remove(key)

    def promote(self, key: Key, record: Record, stripe: int, epoch: int) -> bool:
        """Hold a record read from tier 2, subject to admission (``is_first_read``) and ``admit``."""
        if self.first_reads is not None and self.is_first_read(key):
            return False
        return self.admit(key, record, stripe, epoch)

    def is_first_read(self, key: Key) -> bool:
        """The doorkeeper of ``second_read`` admission: whether this read of ``key`` is its first lately.

        A first read is remembered, and the next one is admitted. The memory of first reads holds
        at most ``max_items`` keys and is forgotten at once when full, rather than tracking their age.
        """
        seen = self.first_reads
        if seen is None or key in seen:
            return False
        if len(seen) >= self._max_items:
            seen.clear()
        seen.add(key)
        return True

    def admit(self, key: Key, record: Record, stripe: int, epoch: int) -> bool:
        """Hold a record read from tier 2 if no write of its stripe ran since ``epoch`` was read."""
        if epoch & 1 or not self._max_items:
            return False
        data = self._data
        lock = self._lock
        lock.acquire()
        try:
            if self.epochs[stripe] != epoch or key in data:
                return False
            if not self._simple:
                self._store(key, record)
                return True
            data[key] = record  # a new key: it lands at the most recent end
            if len(data) > self._max_items:
                data.popitem(last=False)
                self.evictions += 1
            return True
        finally:
            lock.release()

    def _store(self, key: Key, record: Record) -> None:
        max_bytes = self._max_bytes
        data = self._data
        if max_bytes is not None:
            if not self._max_items or record[SIZE] > max_bytes:
                self._remove(key)
                return
            old = data.get(key)
            self._bytes += record[SIZE] - (old[SIZE] if old is not None else 0)
        elif not self._max_items:
            return
        data[key] = record
        data.move_to_end(key)
        if len(data) > self._max_items or (max_bytes is not None and self._bytes > max_bytes):
            self._evict()

    def _evict(self) -> None:
        data = self._data
        max_bytes = self._max_bytes
        while len(data) > self._max_items or (max_bytes is not None and self._bytes > max_bytes):
            _, evicted = data.popitem(last=False)
            self.evictions += 1
            if max_bytes is not None:
                self._bytes -= evicted[SIZE]

    def _remove(self, key: Key) -> None:
        record = self._data.pop(key, None)
        if record is not None and self._max_bytes is not None:
            self._bytes -= record[SIZE]

    def clear(self) -> None:
        with self._lock:
            epochs = self.epochs
            for stripe in range(len(epochs)):
                epochs[stripe] = (epochs[stripe] | 1) + 1
            self._data.clear()
            self._bytes = 0

    def discard_under(self, prefix: Key | None) -> None:
        """Forget every key of ``prefix``'s kind (str or bytes) that starts with it (``None``: every key).

        Every stripe's write ends (its epoch turns even): a prefix drop that began with
        ``begin_write`` of every stripe ends here. ``list`` of the dict is one C call,
        atomic against the lock-free reads' ``move_to_end``.
        """
        if prefix is None:
            self.clear()
            return
        kind = str if isinstance(prefix, str) else bytes
        with self._lock:
            epochs = self.epochs
            for stripe in range(len(epochs)):
                epochs[stripe] = (epochs[stripe] | 1) + 1
            for key in list(self._data):
                if isinstance(key, kind) and key.startswith(prefix):  # type: ignore[arg-type]
                    self._remove(key)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        """Encoded bytes held (0 when tier 1 has no byte bound and so keeps no total)."""
        return self._bytes
