"""The calls of ``TierStore`` on many keys: ``get_many``, ``set_many``, ``delete_many``, ``delete_prefix``, ``clear``.

``TierStore`` inherits ``BulkCalls`` (``help(TierStore)`` shows them as its own).
Every argument is checked before anything is read or written (``TypeError`` for
a key that is not str or bytes, a single str or bytes where an iterable of keys
is expected, a ``set_many`` argument that is not a mapping; ``ValueError`` for a
key past the size limit), so a bad call changes nothing. Writes go through
``batch.Batch`` (stripe locks in order, one LevelDB batch, the version rule,
fill generations, tier-1 epochs). This module never imports the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import codec
from .batch import BatchAccess
from .clock import TTL, Clock, check_ttl
from .codec import VALUE, Key, Record, RecordState, record_state
from .errors import CorruptRecord, TierStoreError
from .keyspace import NS_ENTRY, entry_key

__all__ = ["BulkCalls", "checked_keys", "set_many_items"]

_LIVE, _NEGATIVE = RecordState.LIVE, RecordState.NEGATIVE
_CHUNK = 1000  # keys per LevelDB batch of delete_prefix and clear


def set_many_items(mapping: object, ttl: TTL) -> list[tuple[Key, bytes, Any]]:
    """``set_many``'s items (key, entry key, value), a repeated key's last value winning, ``ttl`` checked."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"set_many takes a mapping of keys to values, not {type(mapping).__name__}")
    distinct = {entry_key(key): (key, value) for key, value in mapping.items()}
    items = [(key, disk_key, value) for disk_key, (key, value) in distinct.items()]
    if ttl is not ... and ttl is not None:
        check_ttl(ttl)
    return items


def checked_keys(keys: object) -> list[tuple[Key, bytes]]:
    """Each distinct key of ``keys`` (first occurrence order) with its LevelDB key; raises before any is used."""
    if isinstance(keys, (str, bytes, bytearray, memoryview)) or not isinstance(keys, Iterable):
        raise TypeError(f"keys must be an iterable of str/bytes keys, not {type(keys).__name__} (pass [key])")
    # By LevelDB key: a batch holds each record once (and so its capacity and write-order records).
    distinct: dict[bytes, Key] = {}
    for key in keys:
        distinct.setdefault(entry_key(key), key)
    return [(key, disk_key) for disk_key, key in distinct.items()]


class BulkCalls(BatchAccess):
    """Reads and writes of many keys; the store sets the attributes declared here when it opens."""

    path: str
    _closed: bool
    _clock: Clock

    if TYPE_CHECKING:

        def _unusable(self) -> TierStoreError: ...

        def _fetch(self, key: Key) -> Record | None: ...

        def _count_corrupt(self, disk_key: bytes, exc: CorruptRecord) -> None: ...

    def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """The live values of ``keys`` that have one, as ``{key: value}``.

        One pass over tier 1, then the tier-2 reads of the keys it did not hold,
        each promoted into tier 1 as ``get`` does; stats count as ``get`` counts.
        In shared mode the reads Redis must answer share round trips (a pipeline).
        Thread-safety: as ``get`` (no lock; each key is read as one ``get`` would).
        """
        if self._closed:
            raise self._unusable()
        wanted = checked_keys(keys)
        found: dict[Key, Any] = {}
        counts = self._stats.counts
        now = self._clock()
        memory_get = self._memory.get
        missing = []
        for key, _ in wanted:
            record = memory_get(key)
            if record is None:
                missing.append(key)
            else:
                self._tally(found, key, record, now, "hits_memory")
        for key, record in zip(missing, self._fetch_many(missing), strict=True):
            if record is None:
                counts["misses"]()
            else:
                self._tally(found, key, record, now, "hits_disk")
        return found

    def _fetch_many(self, keys: list[Key]) -> list[Record | None]:
        """The tier-2 reads of ``get_many``, each as ``get`` reads (shared mode binds one that pipelines
        the reads Redis answers)."""
        fetch = self._fetch
        return [fetch(key) for key in keys]

    def _tally(self, found: dict[Key, Any], key: Key, record: Record, now: float, hit: str) -> None:
        state = record_state(record, now)
        if state is _LIVE:
            self._stats.counts[hit]()
            found[key] = record[VALUE]
        elif state is _NEGATIVE:
            self._stats.counts["negative_hits"]()
        else:
            self._stats.counts["misses"]()

    def set_many(self, mapping: Mapping[Key, Any], *, ttl: TTL = ...) -> int:
        """Store every ``key: value`` of ``mapping`` in one LevelDB batch; returns how many were written.

        All or nothing: a key or value that cannot be stored raises (``TypeError``/
        ``ValueError``) before anything is written. Unversioned, like ``set``
        without ``version``: each key keeps its current version (a tombstone's
        included); ``ABSENT`` stores a negative entry. Every key's fill generation
        is bumped. Thread-safety: holds the stripe locks of all its keys at once.
        """
        if self._closed:
            raise self._unusable()
        items = set_many_items(mapping, ttl)
        if not items:
            return 0
        return self._batch.set_many(items, ttl)

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Delete ``keys`` as ``delete`` does, in one LevelDB batch; returns how many had a live entry.

        Tombstones keep the keys' versions; every key's fill generation is bumped
        (counted in ``deletes`` once per distinct key). Thread-safety: holds the
        stripe locks of all its keys at once.
        """
        if self._closed:
            raise self._unusable()
        wanted = checked_keys(keys)
        if not wanted:
            return 0
        outcome = self._batch.delete_many(wanted)
        self._stats.add("deletes", len(wanted))
        return outcome.live

    def delete_prefix(self, prefix: Key) -> int:
        """Delete every entry whose key starts with ``prefix``; returns how many were live.

        A str prefix matches str keys, a bytes prefix bytes keys (``""`` every str
        key). Runs in batches of 1000 keys, each its own LevelDB batch, leaving
        tombstones as ``delete`` does. A ``get_or_load`` of a key under the prefix
        whose load began before this call never stores its result, even for a key
        that was not stored. Entries written while it runs may survive it.
        Thread-safety: each batch holds the stripe locks of its keys.
        """
        if self._closed:
            raise self._unusable()
        if not isinstance(prefix, (str, bytes)):
            raise TypeError(f"prefix must be str or bytes, not {type(prefix).__name__}")
        return self._delete_under(prefix, entry_key(prefix))

    def clear(self) -> int:
        """Delete every entry (``delete_prefix`` of both key kinds); returns how many were live.

        Entries only: counters, sorted indexes, the existence filter and stats stay,
        and tombstones keep deleted keys' versions. Every load in flight never stores
        its result. Thread-safety: as ``delete_prefix``.
        """
        if self._closed:
            raise self._unusable()
        return self._delete_under(None, NS_ENTRY)

    def _delete_under(self, prefix: Key | None, scan_prefix: bytes) -> int:
        batch = self._batch
        # Detach the loads in flight under the prefix, then wait out every write holding a
        # stripe lock (a fill admitted just before): the scan below sees what they wrote.
        self._flights.invalidate_prefix(prefix)
        batch.barrier()
        live = changed = 0
        chunk: list[tuple[Key, bytes]] = []
        for disk_key, _ in self._disk.scan(scan_prefix):
            try:
                chunk.append((codec.decode_key(disk_key[len(NS_ENTRY) :]), disk_key))
            except CorruptRecord as exc:  # a damaged key: skipped and counted, as the listings do
                self._count_corrupt(disk_key, exc)
                continue
            if len(chunk) >= _CHUNK:
                outcome = batch.delete_many(chunk)
                live, changed, chunk = live + outcome.live, changed + outcome.changed, []
        if chunk:
            outcome = batch.delete_many(chunk)
            live, changed = live + outcome.live, changed + outcome.changed
        self._stats.add("deletes", changed)
        return live
