"""Tier 2: one plyvel LevelDB directory, namespaced by a leading byte (the map is ``keyspace``).

Every call that touches the LevelDB handle goes through a gate, because plyvel
crashes the process when a DB is closed under a call running in another
thread. Scans read in chunks from a snapshot and pass the gate once per chunk,
so an abandoned iterator never holds ``close()`` up.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import msgpack

from ._plyvel import plyvel
from .errors import CorruptRecord, CorruptStore, NotAStore, StoreClosed, StoreForked, TierStoreError
from .keyspace import (
    META_OPEN,
    META_SCHEMA,
    NS_META,
    SCHEMA_VERSION,
    Op,
    check_schema,
    decode_meta,
    meta_key,
    prefix_end,
)
from .leveldb import (
    DEFAULT_CACHE_BYTES,
    damaged_file,
    forked_error,
    leveldb_message,
    make_private_dirs,
    on_fork,
    open_leveldb,
    os_failure,
    read_error,
    write_error,
)

__all__ = [
    "DiskTier",
    "open_leveldb",
    "leveldb_message",
    "DEFAULT_CACHE_BYTES",
    "make_private_dirs",
]

log = logging.getLogger("tierstore")

_LIVE_TABLE = re.compile(rb"^ (\d+):(\d+)\[", re.M)  # a table line of the "leveldb.sstables" property
_CHUNK = 1024
_T = TypeVar("_T")
_META_SCHEMA = meta_key(META_SCHEMA)
_META_OPEN = meta_key(META_OPEN)


class DiskTier:
    """The LevelDB handle, its gate, schema record and namespaced access."""

    def __init__(self, path: str, *, create: bool = True, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        path = os.fspath(path)
        if create:
            try:
                make_private_dirs(path)
            except OSError as exc:
                raise os_failure(exc, f"creating the store directory {path}") from None
        self.path = path
        self._db = open_leveldb(path, create=create, cache_bytes=cache_bytes)
        try:
            self._active: list[None] = []
            self._closed = False
            self.forked = False
            self._close_lock = threading.Lock()
            self._refused: TierStoreError | None = None  # set by a failed write: later writes would be lost
            self.was_clean = self._check_schema()
            self._db.put(_META_OPEN, b"\x01", sync=False)
            self._db_get = self._db.get
            self._db_put = self._db.put
            self._releases: list[Callable[[], None]] = []  # closures holding the plyvel object, let go at close
            on_fork(self)
        except BaseException:
            self._db.close()
            raise

    def _check_schema(self) -> bool:
        """Refuse a newer schema; return whether the last session closed cleanly."""
        raw = self._db.get(_META_SCHEMA)
        if raw is None:
            if any(True for _ in self._db.iterator(prefix=NS_META, include_value=False)):
                raise CorruptStore(f"{self.path}: the schema record is missing beside other meta records")
            if any(True for _ in self._db.iterator(include_value=False)):
                raise NotAStore(f"{self.path} is a LevelDB directory but not a tierstore (no schema record)")
            self._db.put(_META_SCHEMA, msgpack.packb(SCHEMA_VERSION), sync=True)
            return True
        check_schema(raw, self.path)
        return self._db.get(_META_OPEN) is None

    # -- the gate -------------------------------------------------------------
    # Entering appends to a list and then checks the flag; close() sets the flag and
    # then waits for the list to empty. Under the interpreter lock either the closer
    # sees the entry and waits, or the caller sees the flag and backs out.

    def enter(self) -> None:
        self._active.append(None)
        if self._closed:
            self._active.pop()
            raise self.closed_error()

    def closed_error(self) -> TierStoreError:
        """``StoreForked`` in a forked child, else ``StoreClosed``."""
        return forked_error(self.path) if self.forked else StoreClosed(f"store {self.path} is closed")

    def _forked_(self) -> None:
        """In a forked child: every call raises ``StoreForked``; the handle is never touched."""
        self.forked = True
        self._closed = True

    def exit(self) -> None:
        self._active.pop()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- single records ---------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        active = self._active
        active.append(None)
        try:
            if self._closed:
                raise self.closed_error()
            # Checksums are verified: a damaged table block reads as an error, never as a wrong value.
            value: bytes | None = self._db_get(key, verify_checksums=True)
            return value
        except plyvel.Error as exc:
            raise self._read_failed(key, exc) from None
        finally:
            active.pop()

    def _read_failed(self, key: bytes, exc: BaseException) -> TierStoreError:
        """``CorruptRecord`` for damage (a bad block; a table truncated or replaced), else the typed
        error of a table LevelDB could not open (refused access, too many open files)."""
        if isinstance(exc, plyvel.CorruptionError) or damaged_file(exc):
            return CorruptRecord(f"{self.path}: the block holding {key!r} is corrupt: {leveldb_message(exc)}")
        return read_error(self.path, exc, repr(key))

    def decoding_getter(self, decode: Callable[[bytes, int], _T], limit: int) -> Callable[[bytes], _T | None]:
        """``get``, then ``decode(value, limit)`` of what it finds, in one frame: the store's tier-2 read path.

        The gate and the error mapping are ``get``'s; ``decode`` runs once the gate is left.
        """
        active = self._active
        db_get = self._db_get

        def release() -> None:  # close() lets the plyvel object go (see LevelDB.close)
            nonlocal db_get
            db_get = self._refuse_closed

        self._releases.append(release)

        def get_decoded(key: bytes) -> _T | None:
            active.append(None)
            try:
                if self._closed:
                    raise self.closed_error()
                data: bytes | None = db_get(key, verify_checksums=True)
            except plyvel.Error as exc:
                raise self._read_failed(key, exc) from None
            finally:
                active.pop()
            return None if data is None else decode(data, limit)

        return get_decoded

    def put(self, key: bytes, value: bytes) -> None:
        active = self._active
        active.append(None)
        try:
            if self._closed:
                raise self.closed_error()
            self._db_put(key, value)
        except plyvel.Error as exc:
            raise self._write_failed(exc) from None
        finally:
            active.pop()

    def delete(self, key: bytes) -> None:
        self.write(((key, None),))

    def write(self, ops: Iterable[Op], *, sync: bool = False) -> None:
        """Apply puts (value bytes) and deletes (value None) atomically."""
        self.enter()
        try:
            if self._refused is not None:
                raise self._refusal()
            with self._db.write_batch(sync=sync) as batch:
                for key, value in ops:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
        except plyvel.Error as exc:
            raise self._write_failed(exc) from None
        finally:
            self.exit()

    def _write_failed(self, exc: BaseException) -> TierStoreError:
        """Refuse every later write until the store is reopened.

        A failed write leaves LevelDB's log misaligned: records appended after it
        read back as garbage at the next open, so acknowledging them would lose them.
        """
        error = write_error(self.path, exc)
        self._refused = error

        def refuse(key: bytes, value: bytes) -> None:
            raise self._refusal()

        self._db_put = refuse
        return error

    def _refusal(self) -> TierStoreError:
        """The error of a write after a failed one: the same kind, and what to do."""
        first = self._refused
        assert first is not None
        return type(first)(f"{first} (an earlier write failed: reopen the store to write again)")

    def get_meta(self, name: bytes, *, damaged: Any = None) -> Any:
        """The meta record ``name`` (None when missing); ``damaged`` in place of one that does not decode.

        Meta records are derived state: a damaged one is logged and read as
        ``damaged`` (its reader's safe assumption), so it never stops an open.
        """
        try:
            raw = self.get(meta_key(name))  # a damaged block reads as CorruptRecord too
            return None if raw is None else decode_meta(raw)
        except CorruptRecord as exc:
            shown = name.decode(errors="replace")
            log.warning("%s: the meta record %r is damaged and is ignored (%s)", self.path, shown, exc)
            return damaged

    def meta_op(self, name: bytes, value: Any) -> Op:
        return (meta_key(name), None if value is None else msgpack.packb(value))

    def put_meta(self, name: bytes, value: Any, *, sync: bool = False) -> None:
        self.write((self.meta_op(name, value),), sync=sync)

    # -- scans -------------------------------------------------------------------

    def scan(
        self,
        prefix: bytes,
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
        include_value: bool = True,
        snapshot: Any = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(key, value)`` under ``prefix`` in key order, from one snapshot, in chunks.

        ``start`` (inclusive) and ``stop`` (exclusive) narrow the range; both are full keys.
        """
        lower = prefix if start is None else max(start, prefix)
        upper = prefix_end(prefix)
        if stop is not None and (upper is None or stop < upper):
            upper = stop
        own_snapshot = snapshot is None
        if own_snapshot:
            snapshot = self.snapshot()
        try:
            for chunk in self.chunks(snapshot, lower, upper, reverse=reverse):
                yield from chunk
        finally:
            if own_snapshot:
                self.release(snapshot)

    def chunks(
        self,
        snapshot: Any,
        lower: bytes,
        upper: bytes | None,
        *,
        reverse: bool = False,
        exclude_lower: bool = False,
        include_value: bool = True,
        size: int = _CHUNK,
    ) -> Iterator[list[Any]]:
        """Records in ``[lower, upper)`` of ``snapshot``, a list per pass through the gate.

        Items are ``(key, value)`` pairs, or keys alone without ``include_value``. A
        chunk per pass keeps an abandoned read from holding ``close()`` up; after a
        small first chunk (a short page) the chunks grow to the default size.
        """
        include_lower, include_upper = not exclude_lower, False
        while True:
            self.enter()
            try:
                iterator = snapshot.iterator(
                    start=lower,
                    stop=upper,
                    include_start=include_lower,
                    include_stop=include_upper,
                    reverse=reverse,
                    include_value=include_value,
                    verify_checksums=True,
                )
                chunk = list(itertools.islice(iterator, size))
                iterator.close()
            except plyvel.Error as exc:
                if isinstance(exc, plyvel.CorruptionError) or damaged_file(exc):
                    raise CorruptStore(f"{self.path}: a read met a corrupt block: {leveldb_message(exc)}") from None
                raise read_error(self.path, exc, "a range of records") from None
            finally:
                self.exit()
            if chunk:
                yield chunk
            if len(chunk) < size:
                return
            last = chunk[-1][0] if include_value else chunk[-1]
            size = max(size, _CHUNK)
            if reverse:
                upper, include_upper = last, False
            else:
                lower, include_lower = last, False

    def snapshot(self) -> Any:
        self.enter()
        try:
            return self._db.snapshot()
        finally:
            self.exit()

    def release(self, snapshot: Any) -> None:
        self.enter_quietly_and(snapshot.close)

    def enter_quietly_and(self, action: Any) -> None:
        """Run ``action`` under the gate, or not at all once closed (closing releases it anyway)."""
        try:
            self.enter()
        except (StoreClosed, StoreForked):  # closing releases it; a forked child must not touch it
            return
        try:
            action()
        finally:
            self.exit()

    def approximate_size(self, prefix: bytes = b"") -> int:
        self.enter()
        try:
            upper = prefix_end(prefix) or b"\xff" * 8
            return int(self._db.approximate_size(prefix, upper))
        finally:
            self.exit()

    def live_tables(self) -> dict[int, int] | None:
        """LevelDB's live table files, number -> size in bytes (``None`` if LevelDB does not say).

        Only these are complete and immutable: an orphan's number may be reused
        by a table LevelDB is still writing.
        """
        self.enter()
        try:
            listing = self._db.get_property(b"leveldb.sstables")
        finally:
            self.exit()
        if listing is None:
            return None
        return {int(number): int(size) for number, size in _LIVE_TABLE.findall(listing)}

    # -- closing ----------------------------------------------------------------

    def abandon(self) -> None:
        """Release the directory after a failed open, leaving the session marked unclean.

        Whatever the open had begun is then rebuilt by the next open, as after a crash.
        No call can be in flight: the store was never handed out.
        """
        self.close(clean=False)

    def close(self, *, clean: bool = True) -> None:
        """Wait for calls in flight, mark the session clean and release the LevelDB lock."""
        if self.forked:
            raise self.closed_error()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            while clean and self._active:
                time.sleep(0.0005)
            try:
                if clean and self._refused is None:  # else the session stays marked unclean
                    self._db.delete(_META_OPEN, sync=True)
            except plyvel.Error as exc:
                raise write_error(self.path, exc) from None
            finally:
                self._db.close()
                self._let_go()

    def _let_go(self) -> None:
        """Drop every reference to the closed plyvel object, so it is freed now (see ``LevelDB.close``)."""
        self._db_get = self._db_put = self._refuse_closed
        for release in self._releases:
            release()
        self._releases.clear()

    def _refuse_closed(self, *args: object, **kwargs: object) -> Any:
        raise self.closed_error()
