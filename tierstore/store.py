"""TierStore: the facade that composes tier 1, tier 2 and the parts around them.

The store owns no algorithm of its own beyond the version rule: a write takes
its key's stripe lock, reads the current record (tier 1, else tier 2), decides,
writes tier 2 and then tier 1. Everything else is delegated to the modules
listed in the README's "Layout", none of which imports this one.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import msgpack

from . import codec
from .capacity import Capacity, open_capacity
from .checkpoint import STAT_KEYS as PERSIST_STAT_KEYS
from .checkpoint import Checkpointer, TrackedDisk
from .clock import Jitter, check_seconds, check_ttl
from .codec import ABSENT, NEGATIVE, TOMBSTONE, Entry, Key, Record, encode_key
from .counters import Counters
from .disk import META_SEQ, META_VERSIONED, NS_ENTRY, DiskTier
from .errors import CorruptRecord, StoreClosed, TierStoreError
from .expiry import ensure_index, index_op
from .flight import Flights
from .guard import Guard, note_unguarded_open
from .leveldb import forked_error, on_fork
from .loading import Loading, StoreCore
from .memory import STRIPES, MemoryTier
from .options import STAT_KEYS, Options
from .ranking import DEFAULT_REFRESH_INTERVAL, IndexRefresher, Pairs, SortedIndex
from .refresh import Handle, Scheduler
from .restore import open_disk
from .sweep import STAT_KEYS as SWEEP_STAT_KEYS
from .sweep import Sweeper

__all__ = ["TierStore"]

log = logging.getLogger("tierstore")

_STRIPES = STRIPES  # the store's key locks and tier 1's write epochs share their stripes
_P = ParamSpec("_P")
_R = TypeVar("_R")


class TierStore:
    """An embedded two-tier cache: an LRU of decoded values over a LevelDB directory.

    Values returned are shared with tier 1 (as in cachetools and functools):
    callers must not mutate them.
    """

    def __init__(self, path: str | None = None, **settings: Any) -> None:
        self._options = options = Options(path=path, **settings)
        self._temp_dir = tempfile.mkdtemp(prefix="tierstore-") if path is None else None
        self.path = str(path) if path is not None else str(self._temp_dir)
        self._clock = options.clock
        self._jitter = Jitter(options.ttl_jitter)
        self._scheduler = Scheduler(workers=2, name="tierstore")  # background work; threads start lazily
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self._flights = Flights(options.lock_timeout, self._stats)
        self._in_flight = self._flights.in_flight  # tested without a lock by writers: nearly free when empty
        self._stripe_locks = [threading.Lock() for _ in range(_STRIPES)]
        self._packers = [msgpack.Packer() for _ in range(_STRIPES)]
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
        self._memory = MemoryTier(options.memory_items, options.memory_bytes)
        self._memory_get = self._memory.get
        self._seq = _next_sequence(self._disk)
        self._versioned = _holds_versions(self._disk)
        self._open_durability(restored)
        self._guard = self._open_guard()  # the existence filter when guard=True
        self._counters = Counters(self._disk)
        self._indexes: dict[Key, SortedIndex] = {}
        self._indexes_lock = threading.Lock()
        self._stats["index_refresh_errors"] = 0
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
        if record is not None and not record.flags:
            expires_at = record.expires_at
            if expires_at is None or expires_at > self._clock():
                self._stats["hits_memory"] += 1
                return record.value
        return self._get_slow(key, record, default)

    def _get_slow(self, key: Key, record: Record | None, default: Any) -> Any:
        from_disk = record is None
        if from_disk:
            record = self._read_disk(key)
        if record is None or record.flags & TOMBSTONE:
            self._stats["misses"] += 1
            return default
        expires_at = record.expires_at
        if expires_at is not None and expires_at <= self._clock():
            self._stats["misses"] += 1
            return default
        if record.flags & NEGATIVE:
            self._stats["negative_hits"] += 1
            return default
        self._stats["hits_disk" if from_disk else "hits_memory"] += 1
        return record.value

    def _read(self, key: Key) -> Record | None:
        """The stored record of ``key`` (tombstones and expired ones included)."""
        if self._closed:
            raise self._unusable()
        record = self._memory_get(key)
        return record if record is not None else self._read_disk(key)

    def _lookup(self, key: Key) -> tuple[Record | None, str]:
        """The stored record of ``key`` and the stat a hit on it counts in (for ``get_or_load``)."""
        try:
            record = self._memory_get(key)
        except TypeError:
            encode_key(key)  # raises the key error callers expect
            raise
        if record is not None:
            return record, "hits_memory"
        return self._read_disk(key), "hits_disk"

    def _read_disk(self, key: Key) -> Record | None:
        disk_key = NS_ENTRY + encode_key(key)
        epoch = self._memory.epoch(key)
        data = self._disk_get(disk_key)
        if data is None:
            return None
        record = self._decode(disk_key, data)
        if record is not None:
            self._memory.promote(key, record, epoch)
        return record

    def _decode(self, disk_key: bytes, data: bytes) -> Record | None:
        try:
            return codec.unpack_record(data, self._options.max_value_bytes)
        except CorruptRecord as exc:
            self._count_corrupt(disk_key, exc)
            return None

    def _count_corrupt(self, disk_key: bytes, exc: CorruptRecord) -> None:
        self._stats["corrupt_records"] += 1
        level = logging.DEBUG if self._corrupt_logged else logging.WARNING
        self._corrupt_logged = True
        log.log(level, "%s: record %r is corrupt and reads as a miss: %s", self.path, disk_key, exc)

    def get_entry(self, key: Key) -> Entry | None:
        """The entry of ``key`` with its metadata; ``stale=True`` within ``stale_ttl`` after expiry."""
        record = self._read(key)
        if record is None or record.flags & TOMBSTONE:
            return None
        return self._entry_of(record, self._clock())

    def _entry_of(self, record: Record, now: float) -> Entry | None:
        negative = bool(record.flags & NEGATIVE)
        expires_at = record.expires_at
        if expires_at is not None and expires_at <= now:
            if negative or now >= expires_at + self._options.stale_ttl:
                return None
            return Entry(record.value, record.version, expires_at, False, True)
        return Entry(ABSENT if negative else record.value, record.version, expires_at, negative, False)

    def _is_live(self, record: Record | None, now: float) -> bool:
        if record is None or record.flags:
            return False
        return record.expires_at is None or record.expires_at > now

    # -- writing ------------------------------------------------------------------

    def set(self, key: Key, value: Any, *, ttl: Any = ..., version: int | None = None) -> bool:
        """Store ``value``; with ``version``, only if it is newer than what is stored."""
        if self._closed:
            raise self._unusable()
        return self._write(key, value, ttl=ttl, version=version)

    def _write(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Any = ...,
        version: int | None = None,
        load_time: float = 0.0,
        admit: Callable[[], bool] | None = None,
    ) -> bool:
        """The version-checked write behind ``set`` and loader fills.

        ``admit``, when given, is called under the key's lock and may veto the write
        (a fill whose generation is no longer current).
        """
        disk_key = NS_ENTRY + encode_key(key)
        if version is not None:
            codec.check_version(version)
        negative = value is ABSENT
        ttl_seconds = self._resolve_ttl(ttl, negative)
        stripe = hash(key) % _STRIPES
        lock = self._stripe_locks[stripe]
        lock.acquire()
        try:
            if self._in_flight and admit is None:
                self._flights.invalidate(key)  # bump the fill generation
            if version is None and not self._versioned:
                current_version = 0  # no record of this store carries a version: nothing to read
            else:
                current = self._current(key, disk_key)
                current_version = current.version if current is not None else 0
            if (version is not None and version <= current_version) or (admit is not None and not admit()):
                self._stats["sets_rejected"] += 1
                return False
            now = self._write_time()
            drawn = self._jitter.draw(ttl_seconds) if self._jitter.fraction else ttl_seconds
            record = self._encode(
                stripe,
                key,
                disk_key,
                None if negative else value,
                current_version if version is None else version,
                None if drawn is None else now + drawn,
                NEGATIVE if negative else 0,
                now,
                drawn,
                load_time,
            )
            self._memory.put(key, record)
            self._stats["sets"] += 1
            if self._guard is not None and not negative:
                self._guard.add(key)
            return True
        finally:
            lock.release()

    def _encode(
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
    ) -> Record:
        """Pack an envelope, write it to tier 2 and return the record tier 1 will hold."""
        seq = next(self._seq)
        data = codec.pack_record(self._packers[stripe], value, version, expires_at, flags, now, ttl, seq, load_time)
        if len(data) > self._options.max_value_bytes:
            raise ValueError(f"value is {len(data)} bytes encoded; max_value_bytes is {self._options.max_value_bytes}")
        if type(value) not in codec.PLAIN_TYPES:
            # decoded as tier 2 would decode it: refuses what tier 2 could not give back, before any write
            value = codec.plain_value(value, data)
        if version and not self._versioned:
            self._mark_versioned()
        self._memory.begin_write(key)  # until tier 1 is updated, no older record is promoted
        try:
            index = None if expires_at is None else index_op(disk_key, expires_at)  # expiry.py: what sweeps read
            if self._capacity is not None:
                self._capacity.put(disk_key, data, seq, index)  # one batch: index, entry, write-order record
            else:
                if index is not None:
                    self._disk.put(*index)  # strictly before its entry: LevelDB applies writes in order
                self._disk.put(disk_key, data)
        except BaseException:
            self._memory.discard(key)  # what tier 2 holds is unknown: tier 1 forgets the key
            raise
        return Record(value, version, expires_at, flags, now, ttl, seq, len(data), load_time)

    def _write_time(self) -> float:
        """The injected clock's time for a write; a clock that is not a finite number is refused.

        A NaN or infinite time would write a record tier 2 cannot give back.
        """
        now = self._clock()
        if (type(now) is float or type(now) is int) and -_MAX_TIME < now < _MAX_TIME:
            return now
        raise ValueError(f"clock() returned {now!r}: it must return a finite number of seconds")

    def _mark_versioned(self) -> None:
        """Record, before the first versioned record lands, that unversioned writes must read versions.

        Until a store holds a version above 0, an unversioned write knows the key's
        version is 0 without reading tier 2. The meta record is written ahead of the
        entry, so LevelDB's ordered log never keeps the entry without it.
        """
        self._disk.put_meta(META_VERSIONED, True)
        self._versioned = True

    def _resolve_ttl(self, ttl: Any, negative: bool) -> float | None:
        if ttl is ...:
            return self._options.negative_ttl if negative else self._options.default_ttl
        return check_ttl(ttl)

    def _current(self, key: Key, disk_key: bytes) -> Record | None:
        """The stored record, read under the key's stripe lock."""
        record = self._memory_get(key)
        if record is not None:
            return record
        data = self._disk_get(disk_key)
        return None if data is None else self._decode(disk_key, data)

    def _current_record(self, key: Key) -> Record | None:
        """``_current`` from the key alone, for a fill's ``admit`` check under the lock."""
        return self._current(key, NS_ENTRY + encode_key(key))

    def _disk_get(self, disk_key: bytes) -> bytes | None:
        """A tier-2 read; a damaged block reads as a miss, counted and logged like a bad record."""
        try:
            return self._disk.get(disk_key)
        except CorruptRecord as exc:
            self._count_corrupt(disk_key, exc)
            return None

    def delete(self, key: Key, *, version: int | None = None) -> bool:
        """Remove ``key`` from both tiers, leaving a tombstone at its version; ``True`` if it was live."""
        if self._closed:
            raise self._unusable()
        disk_key = NS_ENTRY + encode_key(key)
        if version is not None:
            codec.check_version(version)
        stripe = hash(key) % _STRIPES
        lock = self._stripe_locks[stripe]
        lock.acquire()
        try:
            if self._in_flight:
                self._flights.invalidate(key)  # bump the fill generation
            current = self._current(key, disk_key)
            now = self._write_time()
            was_live = self._is_live(current, now)
            keep_version = max(version or 0, current.version if current is not None else 0)
            if keep_version:
                tombstone_ttl = self._options.tombstone_ttl
                record = self._encode(
                    stripe, key, disk_key, None, keep_version, now + tombstone_ttl, TOMBSTONE, now, tombstone_ttl
                )
                self._memory.put(key, record)
            else:
                if current is not None:
                    self._memory.begin_write(key)
                    if self._capacity is None:
                        self._disk.delete(disk_key)
                    else:
                        self._capacity.delete(disk_key)
                self._memory.discard(key)
            self._stats["deletes"] += 1
            return was_live
        finally:
            lock.release()

    # -- loading: get_or_load, recomputation, background work (loading.py) ------------

    def get_or_load(
        self,
        key: Key,
        loader: Callable[[], Any],
        *,
        ttl: Any = ...,
        on_busy: str = "wait",
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

    def refresh_every(self, key: Key, loader: Callable[[], Any], interval: float, *, ttl: Any = ...) -> Handle:
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
        ttl: Any = ...,
        key: Callable[..., Key] | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]: ...

    def cached(
        self,
        fn: Callable[_P, _R] | None = None,
        /,
        *,
        ttl: Any = ...,
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
            write=self._write,
            delete=self.delete,
        )
        return Loading(core, self._options, self._stats, self._flights, self._scheduler, self._guard)

    # -- existence guard (bloom.py) -------------------------------------------------

    def _open_guard(self) -> Guard | None:
        """Load or rebuild the existence filter (guard=True); else mark a saved one incomplete."""
        options = self._options
        if not options.guard:
            note_unguarded_open(self._disk)  # sets in this session will not reach the filter
            return None
        return Guard(self._disk, options.bloom_capacity, options.bloom_error_rate)

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

    def _guard_stats(self) -> dict[str, int]:
        """``guard_keys`` (keys admitted), ``guard_over_capacity`` and ``guard_degraded`` (0/1),
        ``guard_error_ppm`` (estimated false-positive rate, parts per million); zeros without a guard."""
        guard = self._guard
        if guard is None:
            return {"guard_keys": 0, "guard_over_capacity": 0, "guard_degraded": 0, "guard_error_ppm": 0}
        bloom = guard.filter
        return {
            "guard_keys": len(bloom),
            "guard_over_capacity": int(guard.over_capacity),
            "guard_degraded": int(guard.degraded),
            "guard_error_ppm": round(bloom.estimated_error_rate() * 1_000_000),
        }

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
        self._stats["index_refresh_errors"] += 1

    # -- durability: checkpoints and sweeping (checkpoint.py, restore.py, sweep.py) ------------------

    def _open_durability(self, restored: bool) -> None:
        """Wire the checkpointer, the capacity tracker, the sweeper and their timers."""
        options = self._options
        self._stats.update(dict.fromkeys(PERSIST_STAT_KEYS + SWEEP_STAT_KEYS, 0))
        self._stats["restored_from_checkpoint"] = int(restored)
        self._checkpointer: Checkpointer | None = None
        self._capacity: Capacity | None = None
        if options.persist_path is not None:
            assert isinstance(self._disk, TrackedDisk)
            self._checkpointer = Checkpointer(self._disk, str(options.persist_path), rate=options.persist_rate)
        self._capacity = open_capacity(self._disk, options.disk_capacity_bytes)
        ensure_index(self._disk)  # a store from before the expiry index, or restored: one scan builds it
        self._sweeper = Sweeper(
            self._disk,
            clock=self._clock,
            stale_ttl=options.stale_ttl,
            tombstone_ttl=options.tombstone_ttl,
            lock_for=self._stripe_lock_for,
            begin=self._memory.begin_write,
            forget=self._memory.discard,
            capacity=self._capacity,
        )
        if self._capacity is not None:
            self._capacity.on_over = self._evict_soon
        if self._checkpointer is not None and options.checkpoint_interval is not None:
            self._scheduler.every(options.checkpoint_interval, self.checkpoint)
        if options.sweep_interval is not None:
            self._scheduler.every(options.sweep_interval, self.sweep)

    def _stripe_lock_for(self, key: Key) -> threading.Lock:
        return self._stripe_locks[hash(key) % _STRIPES]

    def _evict_soon(self) -> None:
        """Past the capacity: evict in the background rather than on the writer's thread."""
        try:
            self._scheduler.submit(self._evict)
        except StoreClosed:
            pass

    def _evict(self) -> None:
        self._count_sweep(self._sweeper.evict())

    def checkpoint(self) -> dict[str, Any]:
        """Copy what changed since the last checkpoint into ``persist_path`` and sync it.

        Returns ``{"records", "deleted", "scanned", "bytes", "seconds", "full"}``.
        """
        if self._closed:
            raise self._unusable()
        if self._checkpointer is None:
            raise TierStoreError("checkpoint() needs a persist_path; this store has none")
        if self._guard is not None:
            self._guard.save()  # the checkpoint carries a filter as new as its entries
        return self._record_checkpoint(self._checkpointer.checkpoint())

    def _record_checkpoint(self, result: dict[str, Any]) -> dict[str, Any]:
        self._stats["checkpoints"] += 1
        self._stats["checkpoint_ms"] += int(result["seconds"] * 1000)
        return result

    def sweep(self) -> dict[str, int]:
        """Purge expired entries, expired negative entries and old tombstones; enforce the capacity.

        Returns counts: ``scanned`` (expiry index records read: only what fell due), ``expired_purged``,
        ``swept_tombstones``, ``corrupt_purged``, ``evictions_disk``.
        """
        if self._closed:
            raise self._unusable()
        return self._count_sweep(self._sweeper.sweep())

    def _count_sweep(self, counts: dict[str, int]) -> dict[str, int]:
        for name in ("expired_purged", "swept_tombstones", "evictions_disk"):
            self._stats[name] += counts[name]
        return counts

    def _close_durability(self) -> None:
        """At close: save the capacity total, then take the final checkpoint (logged if it fails)."""
        if self._capacity is not None:
            try:
                self._capacity.save()
            except TierStoreError:
                log.exception("%s: could not save the capacity total; the next open recounts it", self.path)
        if self._checkpointer is not None:
            try:
                self._record_checkpoint(self._checkpointer.finish())
            except Exception:
                log.exception("%s: the final checkpoint into %s failed", self.path, self._checkpointer.path)

    # -- mapping protocol -----------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        return self._is_live(self._read(key), self._clock())  # type: ignore[arg-type]

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
            record = self._decode(disk_key, data)
            if record is not None and self._is_live(record, self._clock()):
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
        stats = dict(self._stats)
        stats["evictions_memory"] = self._memory.evictions
        stats["memory_items"] = len(self._memory)
        stats["memory_bytes"] = self._memory.bytes
        stats.update(self._guard_stats())
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
                        self._disk.put_meta(META_SEQ, next(self._seq))
                    finally:
                        self._close_durability()  # capacity total, then the final checkpoint (its own disk)
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
_MAX_TIME = 1e15  # seconds: far past any real clock, well inside a float's exact range


def _next_sequence(disk: DiskTier) -> Iterator[int]:
    """A store-wide write counter that stays ahead of every sequence written before.

    It starts at the wall clock in microseconds or past the high-water mark saved at
    the last clean close, whichever is larger: no store writes a million records a
    second for long, so even after a crash new writes sort after old ones.
    """
    now = time.time_ns() // 1000
    saved = disk.get_meta(META_SEQ)
    if type(saved) is not int or not 0 <= saved <= _MAX_SAVED_SEQ:
        if saved is not None:
            log.warning("%s: the saved write sequence %r is impossible; restarting it from the clock", disk.path, saved)
        saved = 0
    return itertools.count(max(saved, now) + 1)


# Sequences are packed in 64 bits; one saved past 2**62 (146,000 years of
# microseconds) did not come from a clock: damaged, and it would overflow.
_MAX_SAVED_SEQ = 2**62


def _holds_versions(disk: DiskTier) -> bool:
    """Whether an entry of the store may carry a version above 0 (unversioned writes then read it).

    The ``versioned`` record says so. When it is damaged the answer is ``True``
    (safe); when it is missing (a new store, or one that lost it) one scan of
    the entries decides and records the answer.
    """
    saved = disk.get_meta(META_VERSIONED, damaged=True)
    if type(saved) is bool:
        return saved
    if saved is not None:
        log.warning("%s: the meta record 'versioned' holds %r; assuming the store holds versions", disk.path, saved)
        return True
    versioned = any(codec.envelope_version(data) for _, data in disk.scan(NS_ENTRY))
    disk.put_meta(META_VERSIONED, versioned)
    return versioned
