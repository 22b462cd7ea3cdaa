"""The dict-like protocol of ``TierStore``: ``in``, ``[]``, ``del``, ``len``, iteration, ``keys()``/``items()``.

``TierStore`` inherits ``MappingCalls`` (``help(TierStore)`` shows its calls as the
store's own). ``store[key]``, ``store[key] = value`` and ``del store[key]`` are the
store's ``get``, ``set`` and ``delete``; ``in`` and the listings keep what
``codec.record_state`` calls live. ``len(store)`` counts live entries with one
scan of tier 2 (O(entries): every record is read and decoded), so an open
store is always true (``bool`` does not scan). A listing scans tier 2 in key order (bytes keys
before str keys) from one snapshot, in chunks (``DiskTier.scan``); a record that
does not decode, or whose key does not, is skipped and counted as corrupt. The
class declares what it uses of the store for the type checker; this module
never imports the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import codec
from .bulk import BulkCalls
from .clock import TTL, Clock
from .codec import VALUE, Key, Record, RecordState, record_state, unpack_record
from .conditional import ConditionalCalls
from .disk import DiskTier
from .errors import CorruptRecord, TierStoreError
from .keyspace import NS_ENTRY, entry_key

__all__ = ["MappingCalls"]

_MISSING = object()
_LIVE = RecordState.LIVE


class MappingCalls(BulkCalls, ConditionalCalls):
    """``in``, ``[]``, ``del``, ``len``, iteration and the listings of live entries, over the store's own calls.

    It also brings in the calls on many keys (``bulk``) and the read-then-write calls (``conditional``).

    What they use of the store, which sets or defines it, is declared here for the type checker.
    """

    _closed: bool
    _clock: Clock
    _disk: DiskTier
    _max_value_bytes: int

    if TYPE_CHECKING:

        def _unusable(self) -> TierStoreError: ...

        def _read(self, key: Key) -> Record | None: ...

        def _count_corrupt(self, disk_key: bytes, exc: CorruptRecord) -> None: ...

        def get(self, key: Key, default: Any = None) -> Any: ...

        def set(self, key: Key, value: Any, *, ttl: TTL = ..., version: int | None = None) -> bool: ...

        def delete(self, key: Key, *, version: int | None = None) -> bool: ...

    def __contains__(self, key: object) -> bool:
        record = self._read(key)  # type: ignore[arg-type]
        return record is not None and record_state(record, self._clock()) is _LIVE

    def __getitem__(self, key: Key) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Key, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: Key) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __len__(self) -> int:
        """The number of live entries: one scan of tier 2, O(entries) (see the module doc)."""
        return sum(1 for _ in self._live_items(None))

    def __bool__(self) -> bool:
        """Always true: an empty store is still a store (and ``len`` would scan)."""
        return True

    def __iter__(self) -> Iterator[Key]:
        return self.keys()

    def keys(self, prefix: Key | None = None) -> Iterator[Key]:
        """Live keys in key order (bytes keys before str keys); ``prefix`` narrows by type and start.

        A bad ``prefix`` or a closed store raises at the call, not at the first ``next()``.
        """
        return (key for key, _ in self._live_items(prefix))

    def items(self, prefix: Key | None = None) -> Iterator[tuple[Key, Any]]:
        """Live ``(key, value)`` pairs in key order (checked at the call, as ``keys``)."""
        return ((key, record[VALUE]) for key, record in self._live_items(prefix))

    def _live_items(self, prefix: Key | None) -> Iterator[tuple[Key, Record]]:
        if self._closed:
            raise self._unusable()
        if prefix is not None:
            if not isinstance(prefix, (str, bytes)):
                raise TypeError(f"prefix must be str or bytes (or None for every key), not {type(prefix).__name__}")
            entry_key(prefix)  # a prefix longer than a key can be, or not valid Unicode: ValueError
        return self._live_records(prefix)

    def _live_records(self, prefix: Key | None) -> Iterator[tuple[Key, Record]]:
        """The live entries under ``prefix`` in tier 2 (the shared tier binds its own over this)."""
        scan_prefix = NS_ENTRY if prefix is None else entry_key(prefix)
        for disk_key, data in self._disk.scan(scan_prefix):
            try:
                record = unpack_record(data, self._max_value_bytes)
            except CorruptRecord as exc:
                self._count_corrupt(disk_key, exc)
                continue
            if record_state(record, self._clock()) is _LIVE:
                try:
                    key = codec.decode_key(disk_key[1:])
                except CorruptRecord as exc:  # a damaged key: skipped and counted, like a damaged envelope
                    self._count_corrupt(disk_key, exc)
                    continue
                yield key, record
