"""TierStore: the facade that composes tier 1, tier 2 and the parts around them.

The store owns no algorithm of its own beyond the version rule: a write takes
its key's stripe lock, reads the current record (tier 1, else tier 2), decides,
writes tier 2 and then tier 1. Everything else is delegated to the modules
listed in the README's "Layout", none of which imports this one.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

from . import codec
from .clock import TTL, check_seconds
from .codec import Entry, Key, Record, RecordState, encode_key, entry_of, record_state, unpack_record
from .counters import Counters
from .durability import Durability
from .errors import CorruptRecord, StoreClosed, TierStoreError
from .flight import Flights
from .guard import Guard, guard_stats, open_guard
from .keyspace import NS_ENTRY
from .leveldb import forked_error, on_fork
from .loading import Loading, StoreCore
from .memory import MemoryTier
from .options import STAT_KEYS, Options
from .ranking import DEFAULT_REFRESH_INTERVAL, IndexRefresher, Pairs, SortedIndex
from .restore import open_disk
from .scheduler import Handle, Scheduler
from .session import holds_versions, next_sequence, save_sequence
from .stats import Stats
from .stripes import STRIPES, Stripes
from .writer import Writer, fast_entry_key
from .writes import entry_writes

__all__ = ["TierStore"]

log = logging.getLogger("tierstore")

Admission = Literal["always", "second_read"]
OnBusy = Literal["wait", "stale", "default"]
_P = ParamSpec("_P")
_R = TypeVar("_R")


class TierStore:
    """An embedded two-tier cache: an LRU of decoded values over a LevelDB directory.

    Values returned are shared with tier 1 (as in cachetools and functools):
    callers must not mutate them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        memory_items: int = 10_000,
        memory_bytes: int | None = None,
        memory_admission: Admission = "second_read",
        default_ttl: float | None = None,
        ttl_jitter: float = 0.0,
        negative_ttl: float = 60.0,
        stale_ttl: float = 0.0,
        refresh_ahead: float = 0.0,
        early_beta: float = 0.0,
        min_refresh_interval: float = 1.0,
        lock_timeout: float = 30.0,
        guard: bool = False,
        bloom_capacity: int = 1_000_000,
        bloom_error_rate: float = 0.01,
        persist_path: str | os.PathLike[str] | None = None,
        checkpoint_interval: float | None = 60.0,
        persist_rate: float | None = None,
        disk_capacity_bytes: int | None = None,
        tombstone_ttl: float = 86_400.0,
        sweep_interval: float | None = 60.0,
        max_value_bytes: int = 64 * 1024 * 1024,
        disk_cache_bytes: int = 32 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (or create) the store at ``path``; every setting is described in the README's "Options".

        ``path=None`` uses a private temporary directory removed on ``close()``.
        """
        self._options = options = Options(
            path=path,  # type: ignore[arg-type]  # validated and turned into a str by Options
            memory_items=memory_items,
            memory_bytes=memory_bytes,
            memory_admission=memory_admission,
            default_ttl=default_ttl,
            ttl_jitter=ttl_jitter,
            negative_ttl=negative_ttl,
            stale_ttl=stale_ttl,
            refresh_ahead=refresh_ahead,
            early_beta=early_beta,
            min_refresh_interval=min_refresh_interval,
            lock_timeout=lock_timeout,
            guard=guard,
            bloom_capacity=bloom_capacity,
            bloom_error_rate=bloom_error_rate,
            persist_path=persist_path,  # type: ignore[arg-type]
            checkpoint_interval=checkpoint_interval,
            persist_rate=persist_rate,
            disk_capacity_bytes=disk_capacity_bytes,
            tombstone_ttl=tombstone_ttl,
            sweep_interval=sweep_interval,
            max_value_bytes=max_value_bytes,
            disk_cache_bytes=disk_cache_bytes,
            clock=clock,
        )
        self._temp_dir = tempfile.mkdtemp(prefix="tierstore-") if path is None else None
        self.path = str(path) if path is not None else str(self._temp_dir)
        self._clock = options.clock
        self._max_value_bytes = options.max_value_bytes
        self._scheduler = Scheduler(workers=2, name="tierstore")  # background work; threads start lazily
        self._stats = Stats(STAT_KEYS)
        counts = self._stats.counts
        self._hit_memory, self._hit_disk, self._miss = counts["hits_memory"], counts["hits_disk"], counts["misses"]
        self._flights = Flights(options.lock_timeout, self._stats)
        self._stripes = Stripes()
        self._corrupt_logged = False
        self._closed = False
        self._forked = False
        self._close_lock = threading.Lock()
        try:
            # restores from the checkpoint when the working directory is missing or corrupt
            self._disk, restored = open_disk(self.path, options.persist_path, cache_bytes=options.disk_cache_bytes)
        except BaseException:
            self._remove_temp_dir()
            raise
        try:
            self._open_parts(restored)
            on_fork(self)
        except BaseException:
            self._abandon_open()
            raise

    def _open_parts(self, restored: bool) -> None:
        """Everything built over the open directory; a failure here is undone by ``_abandon_open``."""
        options = self._options
        self._guard: Guard | None = None
        self._memory = MemoryTier(
            options.memory_items,
            options.memory_bytes,
            self._stripes,
            second_read=options.memory_admission == "second_read",
        )
        self._memory_get = self._memory.get
        self._epochs = self._memory.epochs
        self._disk_get = self._disk.get
        self._seq = next_sequence(self._disk)
        self._durability = Durability(
            self._disk,
            options,
            path=self.path,
            restored=restored,
            stats=self._stats,
            scheduler=self._scheduler,
            memory=self._memory,
            stripes=self._stripes,
        )
        self._durability.schedule(self.checkpoint, self.sweep)
        self._guard = open_guard(self._disk, options.guard, options.bloom_capacity, options.bloom_error_rate)
        self._writer = Writer(
            disk=self._disk,
            writes=entry_writes(self._disk, self._durability.capacity),
            memory=self._memory,
            stripes=self._stripes,
            flights=self._flights,
            stats=self._stats,
            options=options,
            seq=self._seq,
            versioned=holds_versions(self._disk),
            on_corrupt=self._count_corrupt,
            admit_key=None if self._guard is None else self._guard.add,
        )
        self._write = self._writer.write
        self._counters = Counters(self._disk, self._stripes)
        self._indexes: dict[Key, SortedIndex] = {}
        self._indexes_lock = threading.Lock()
        self._stats.declare(["index_refresh_errors"])
        self._loading = self._open_loading()

    def _abandon_open(self) -> None:
        """Undo a failed open: stop the timers and release the directory (left marked unclean)."""
        self._closed = True
        try:
            self._scheduler.close(timeout=self._options.lock_timeout)
            self._disk.abandon()
        finally:
            self._remove_temp_dir()

    def _unusable(self) -> TierStoreError:
        """The error of a call on a closed store, or on one inherited by a forked child."""
        if self._forked:
            return forked_error(self.path)
        return StoreClosed(f"store {self.path} is closed")

    def _forked_(self) -> None:
        """In a forked child (see leveldb.py): every call raises ``StoreForked``, nothing is touched."""
        self._forked = True
        self._closed = True

    # -- reading ------------------------------------------------------------------

    def get(self, key: Key, default: Any = None) -> Any:
        """The live value of ``key`` (tier 1, then tier 2), else ``default``."""
        if self._closed:
            raise self._unusable()
        try:
            record = self._memory_get(key)
        except TypeError:
            encode_key(key)  # raises the key error callers expect
            raise
        if record is not None:
            if not record.flags:  # codec.record_state's LIVE test, inlined (tests/property/test_record_rule.py)
                expires_at = record.expires_at
                if expires_at is None or expires_at > self._clock():
                    self._hit_memory()
                    return record.value
            return self._answer(record, default, self._hit_memory)
        record = self._fetch(key)
        if record is None:
            self._miss()
            return default
        if not record.flags:  # the same inlined LIVE test as above, for a tier-2 hit
            expires_at = record.expires_at
            if expires_at is None or expires_at > self._clock():
                self._hit_disk()
                return record.value
        return self._answer(record, default, self._hit_disk)

    def _answer(self, record: Record, default: Any, count_hit: Callable[[], int]) -> Any:
        """What ``get`` returns for a stored record that is not a plain live hit."""
        state = record_state(record, self._clock())
        if state is _LIVE:
            count_hit()
            return record.value
        if state is _NEGATIVE:
            self._stats.counts["negative_hits"]()
            return default
        self._miss()
        return default

    def _read(self, key: Key) -> Record | None:
        """The stored record of ``key`` (tombstones and expired ones included)."""
        if self._closed:
            raise self._unusable()
        record = self._memory_get(key)
        return record if record is not None else self._fetch(key)

    def _lookup(self, key: Key) -> tuple[Record | None, str]:
        """The stored record of ``key`` and the stat a hit on it counts in (for ``get_or_load``)."""
        try:
            record = self._memory_get(key)
        except TypeError:
            encode_key(key)  # raises the key error callers expect
            raise
        if record is not None:
            return record, "hits_memory"
        return self._fetch(key), "hits_disk"

    def _fetch(self, key: Key) -> Record | None:
        """The record of ``key`` in tier 2, promoted into tier 1 unless a write of its stripe ran meanwhile."""
        disk_key = fast_entry_key(key)
        stripe = hash(key) % _STRIPE_COUNT
        epoch = self._epochs[stripe]
        try:
            data = self._disk_get(disk_key)
            if data is None:
                return None
            record = unpack_record(data, self._max_value_bytes)
        except CorruptRecord as exc:  # a damaged block or record reads as a miss, counted and logged
            self._count_corrupt(disk_key, exc)
            return None
        self._memory.promote(key, record, stripe, epoch)
        return record

    def _count_corrupt(self, disk_key: bytes, exc: CorruptRecord) -> None:
        self._stats.counts["corrupt_records"]()
        level = logging.DEBUG if self._corrupt_logged else logging.WARNING
        self._corrupt_logged = True
        log.log(level, "%s: record %r is corrupt and reads as a miss: %s", self.path, disk_key, exc)

    def get_entry(self, key: Key) -> Entry | None:
        """The entry of ``key`` with its metadata; ``stale=True`` within ``stale_ttl`` after expiry."""
        record = self._read(key)
        return None if record is None else entry_of(record, self._clock(), self._options.stale_ttl)

    # -- writing (writer.py) ---------------------------------------------------------

    def set(self, key: Key, value: Any, *, ttl: TTL = ..., version: int | None = None) -> bool:
        """Store ``value``; with ``version``, only if it is newer than what is stored."""
        if self._closed:
            raise self._unusable()
        return self._write(key, value, ttl, version)

    def delete(self, key: Key, *, version: int | None = None) -> bool:
        """Remove ``key`` from both tiers, leaving a tombstone at its version; ``True`` if it was live."""
        if self._closed:
            raise self._unusable()
        return self._writer.delete(key, version)

    def _current_record(self, key: Key) -> Record | None:
        """The stored record from the key alone, for a fill's ``admit`` check under the key's lock."""
        return self._writer.current(key, fast_entry_key(key))

    # -- loading: get_or_load, recomputation, background work (loading.py) ------------

    def get_or_load(
        self,
        key: Key,
        loader: Callable[[], Any],
        *,
        ttl: TTL = ...,
        on_busy: OnBusy = "wait",
        wait_timeout: float | None = None,
        default: Any = None,
    ) -> Any:
        """The value of ``key``; on a miss ``loader()`` runs once across callers and fills both tiers.

        While another caller loads the key, ``on_busy`` decides: ``"wait"`` for its
        result (``LoadTimeout`` past ``wait_timeout`` seconds), ``"stale"`` returns a
        stale value at once when there is one, ``"default"`` returns ``default``.
        ``None`` or ``ABSENT`` from the loader stores a negative entry and returns
        ``default``; ``Versioned(value, version)`` stamps the version. The full rules
        (fills dropped after a write, refresh-ahead, XFetch, stats) are in ``tierstore.loading``.
        """
        if self._closed:
            raise self._unusable()
        return self._loading.get_or_load(key, loader, ttl, on_busy, wait_timeout, default)

    def refresh_every(self, key: Key, loader: Callable[[], Any], interval: float, *, ttl: TTL = ...) -> Handle:
        """Recompute ``key`` with ``loader()`` every ``interval`` seconds in the background.

        The first load is queued at once (``drain()`` waits for it). A round finding a
        load of the key already running skips. ``min_refresh_interval`` does not apply.
        Failures are logged and counted in ``refresh_errors``; the old value stays.
        Returns a handle whose ``cancel()`` stops later rounds.
        """
        if self._closed:
            raise self._unusable()
        return self._loading.refresh_every(key, loader, interval, ttl)

    def invalidate(self, key: Key, *, again_after: float | None = None) -> None:
        """``delete(key)`` now and, with ``again_after``, again that many seconds later in the background.

        The second delete (the "delayed double delete") catches a stale value that a
        reader who read the source before the write put back in the meantime; the
        caller never waits for it.
        """
        if self._closed:
            raise self._unusable()
        self._loading.invalidate(key, again_after)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for background work queued or running now (and timers already due); ``False`` on timeout."""
        if self._forked:
            raise self._unusable()
        return self._scheduler.drain(timeout)

    @overload
    def cached(self, fn: Callable[_P, _R], /) -> Callable[_P, _R]: ...

    @overload
    def cached(
        self,
        fn: None = None,
        /,
        *,
        ttl: TTL = ...,
        key: Callable[..., Key] | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]: ...

    def cached(
        self,
        fn: Callable[_P, _R] | None = None,
        /,
        *,
        ttl: TTL = ...,
        key: Callable[..., Key] | None = None,
        name: str | None = None,
    ) -> Any:
        """A decorator memoizing a function through ``get_or_load``; bare ``@store.cached`` works too.

        The key is ``name`` (default: the function's module and ``__qualname__``) plus
        its arguments encoded with msgpack (``TypeError`` when they cannot be); keyword
        arguments are sorted by name, and ``f(1)`` and ``f(a=1)`` are different keys (as
        in ``functools.lru_cache``). Keys longer than the key limit use a SHA-256 of the
        arguments. ``key=`` is a callable building the key from the arguments instead.
        A lambda or a function defined inside another needs ``name=`` or ``key=``
        (``TypeError`` at decoration): two closures must never share entries.
        """
        decorate = self._loading.cached(ttl, key, name)
        return decorate if fn is None else decorate(fn)

    def _open_loading(self) -> Loading:
        """The loading algorithm, wired to this store's primitives and shared parts."""
        core = StoreCore(
            path=self.path,
            is_closed=lambda: self._closed,
            lookup=self._lookup,
            read=self._read,
            current=self._current_record,
            write=self._writer.write,
            delete=self.delete,
        )
        return Loading(core, self._options, self._stats, self._flights, self._scheduler, self._guard)

    # -- existence guard (bloom.py) -------------------------------------------------

    def guard_keys(self, keys: Iterable[Key]) -> None:
        """Admit keys that exist in the source to the existence filter and save it before returning.

        A bad key raises (``TypeError``/``ValueError``) before any key is admitted; so
        does a single str or bytes (``TypeError``: pass ``[key]``).
        Without ``guard=True`` there is no filter: ``TierStoreError``.
        """
        guard = self._require_guard()
        guard.add_many(keys)
        guard.save()

    def rebuild_guard(self, keys: Iterable[Key]) -> None:
        """Replace the existence filter with one holding ``keys`` (and keys set meanwhile), and save it.

        The way to shrink a filter (a Bloom filter never forgets deleted keys) or to
        grow one past its capacity: it is sized for ``max(bloom_capacity, 2 * len(keys))``.
        It also ends the admit-everything mode of a store whose saved filter was damaged.
        """
        self._require_guard().rebuild(keys)

    def _require_guard(self) -> Guard:
        if self._closed:
            raise self._unusable()
        if self._guard is None:
            raise TierStoreError("this store was opened without guard=True: it keeps no existence filter")
        return self._guard

    # -- counters and sorted indexes (counters.py, ranking.py) ------------------------

    def incr(self, key: Key, delta: int = 1) -> int:
        """Add ``delta`` to the durable counter ``key`` and return the new count.

        Counters have their own namespace (a counter and a cached value may share a
        name) and are signed 64-bit: ``OverflowError`` past it, nothing changed.
        """
        if self._closed:
            raise self._unusable()
        return self._counters.incr(key, delta)

    def decr(self, key: Key, delta: int = 1) -> int:
        """Subtract ``delta`` from the counter ``key`` and return the new count."""
        if self._closed:
            raise self._unusable()
        return self._counters.decr(key, delta)

    def counter(self, key: Key) -> int:
        """The count of ``key``; 0 for a counter never touched."""
        if self._closed:
            raise self._unusable()
        return self._counters.get(key)

    def index(self, name: Key) -> SortedIndex:
        """The sorted index ``name`` (the same object on every call), created empty on first use."""
        if self._closed:
            raise self._unusable()
        encode_key(name)  # validate before looking up
        with self._indexes_lock:
            index = self._indexes.get(name)
            if index is None:
                index = self._indexes[name] = SortedIndex(self._disk, name)
            return index

    def keep_fresh(
        self,
        name: Key,
        rebuild: Callable[[], Pairs],
        *,
        stamp: Callable[[], Any] | None = None,
        interval: float = DEFAULT_REFRESH_INTERVAL,
    ) -> Handle:
        """Rebuild index ``name`` in the background whenever its source stamp moves.

        The first round runs at once, then one every ``interval`` seconds (default
        5). The source stamp is ``stamp()`` when given, else the index's dirty stamp
        (see ``SortedIndex.mark_dirty``). Failures are logged and counted in
        ``stats()["index_refresh_errors"]``; the old index stays. Each call starts its
        own refresher (one per index is the intended use); ``cancel()`` on the handle
        or ``close()`` stops it.
        """
        if self._closed:
            raise self._unusable()
        seconds = check_seconds(interval, "interval", allow_zero=False)
        assert seconds is not None  # not optional, so never None
        refresher = IndexRefresher(self.index(name), rebuild, stamp=stamp, on_error=self._count_refresh_error)
        return self._scheduler.every(seconds, refresher, first_delay=0.0)

    def _count_refresh_error(self, exc: BaseException) -> None:
        self._stats.counts["index_refresh_errors"]()

    # -- durability: checkpoints and sweeping (durability.py) ----------------------------

    def checkpoint(self) -> dict[str, Any]:
        """Copy what changed since the last checkpoint into ``persist_path`` and sync it.

        Returns ``{"records", "deleted", "scanned", "bytes", "seconds", "full"}``.
        """
        if self._closed:
            raise self._unusable()
        return self._durability.checkpoint(self._guard)

    def sweep(self) -> dict[str, int]:
        """Purge expired entries, expired negative entries and old tombstones; enforce the capacity.

        Returns counts: ``scanned`` (expiry index records read: only what fell due), ``expired_purged``,
        ``swept_tombstones``, ``corrupt_purged``, ``evictions_disk``.
        """
        if self._closed:
            raise self._unusable()
        return self._durability.sweep()

    # -- mapping protocol -----------------------------------------------------------

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

    def __iter__(self) -> Iterator[Key]:
        return self.keys()

    def keys(self, prefix: Key | None = None) -> Iterator[Key]:
        """Live keys in key order (bytes keys before str keys); ``prefix`` narrows by type and start."""
        for key, _ in self._live_items(prefix):
            yield key

    def items(self, prefix: Key | None = None) -> Iterator[tuple[Key, Any]]:
        """Live ``(key, value)`` pairs in key order."""
        for key, record in self._live_items(prefix):
            yield key, record.value

    def _live_items(self, prefix: Key | None) -> Iterator[tuple[Key, Record]]:
        if self._closed:
            raise self._unusable()
        scan_prefix = NS_ENTRY if prefix is None else NS_ENTRY + encode_key(prefix)
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

    # -- introspection and lifetime ---------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters of what the store did since it was opened."""
        if self._forked:
            raise self._unusable()
        stats = self._stats.snapshot()
        stats["evictions_memory"] = self._memory.evictions
        stats["memory_items"] = len(self._memory)
        stats["memory_bytes"] = self._memory.bytes
        stats.update(guard_stats(self._guard))
        return stats

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop background work, wait for calls in flight, flush and release the directory.

        In a forked child it raises ``StoreForked`` and touches nothing: the parent owns the store.
        """
        if self._forked:
            raise self._unusable()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            try:
                # Order matters: stop background work, then save what lives in memory,
                # then release the directory.
                self._scheduler.close(timeout=self._options.lock_timeout)
                if self._guard is not None:
                    self._guard.close()  # logs instead of raising: the next open rebuilds
                try:
                    try:
                        save_sequence(self._disk, self._seq)
                    finally:
                        self._durability.close()  # capacity total, then the final checkpoint (its own disk)
                finally:
                    self._disk.close()  # released even when a full disk refused the writes above
            finally:
                self._memory.clear()
                self._remove_temp_dir()

    def _remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def __enter__(self) -> TierStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"TierStore({self.path!r}, {state})"


_MISSING = object()
_LIVE, _NEGATIVE = RecordState.LIVE, RecordState.NEGATIVE
_STRIPE_COUNT = STRIPES  # the store's Stripes() has the default count
