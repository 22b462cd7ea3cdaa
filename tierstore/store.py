"""TierStore: the facade that composes tier 1, tier 2 and the parts around them.

The store owns no algorithm of its own: it opens the directory and wires the
parts, reads (the hot ``get`` and the tier-2 fetch), hands writes to the writer
(its key's stripe lock, the version rule, tier 2 and then tier 1) and closes in
order. The calls that only hand on to a part it inherits from ``calls`` and
the dict-like protocol from ``mapping``. Everything else is delegated to the
modules listed in the README's "Layout", none of which imports this one.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .calls import PartCalls
from .clock import TTL
from .codec import SAFE_STR_LEN, VALUE, Key, Record, RecordState, encode_key, record_state, unpack_record
from .counters import Counters
from .durability import Durability
from .entries import Entry, entry_of
from .errors import CorruptRecord, CorruptStore
from .flight import Flights
from .guard import Guard, open_guard
from .keyspace import STR_ENTRY, fast_entry_key
from .leveldb import on_fork
from .load_core import StoreCore
from .loading import Loading
from .mapping import MappingCalls
from .memory_policy import Policy, memory_tier
from .options import STAT_KEYS, Options, check_persist_path
from .ranking import SortedIndex
from .restore import open_disk, restore_damaged
from .scheduler import Scheduler
from .session import holds_versions, next_sequence, save_sequence
from .stats import Stats
from .stripes import STRIPES, Stripes
from .writer import Writer
from .writes import EntryWrites, entry_writes

if TYPE_CHECKING:
    import redis

    from .shared import SharedTier

__all__ = ["TierStore"]

log = logging.getLogger("tierstore")

Admission = Literal["always", "second_read"]


class TierStore(MappingCalls, PartCalls):
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
        memory_policy: Policy = "lru",
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
        shared: str | redis.Redis | None = None,
        namespace: str = "tierstore",
        shared_failure: Literal["local", "raise"] = "local",
        shared_grace: float = 5.0,
        shared_ping_interval: float = 1.0,
    ) -> None:
        """Open (or create) the store at ``path``; every setting is described in the README's "Options".

        ``path=None`` uses a private temporary directory removed on ``close()``.
        """
        arguments = {name: value for name, value in locals().items() if name != "self"}
        self._options = options = Options(**arguments)
        self._temp_dir = tempfile.mkdtemp(prefix="tierstore-") if path is None else None
        try:
            check_persist_path(self._temp_dir, options.persist_path, temporary=True)  # path=None's directory
        except ValueError:
            self._remove_temp_dir()
            raise
        self.path = os.fsdecode(path) if path is not None else str(self._temp_dir)  # any os.PathLike
        self._clock = options.clock
        self._max_value_bytes = options.max_value_bytes
        damage: CorruptStore | None = None
        while not self._open(damage):
            damage = self._damage

    def _open(self, damage: CorruptStore | None) -> bool:
        """Open the directory and build the parts over it; ``False`` (once) when the first scans met
        damage LevelDB's open did not see and a checkpoint may replace the directory: retry restoring."""
        options = self._options
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
        cache_bytes = options.disk_cache_bytes
        try:
            # restores from the checkpoint when the working directory is missing or corrupt
            if damage is None:
                self._disk, restored = open_disk(self.path, options.persist_path, cache_bytes=cache_bytes)
            else:
                self._disk, restored = restore_damaged(self.path, options.persist_path, damage, cache_bytes), True
        except BaseException:
            self._remove_temp_dir()
            raise
        try:
            self._open_parts(restored)
            on_fork(self)
            return True
        except CorruptStore as exc:  # a damaged table block, met by a scan at open
            retry = not restored and options.persist_path is not None and self._temp_dir is None
            self._abandon_open()
            if not retry:
                raise
            self._damage = exc
            return False
        except BaseException:
            self._abandon_open()
            raise

    def _open_parts(self, restored: bool) -> None:
        """Everything built over the open directory; a failure here is undone by ``_abandon_open``."""
        options = self._options
        self._guard: Guard | None = None
        policy: Policy = options.memory_policy  # type: ignore[assignment]  # validated by Options
        second_read = options.memory_admission == "second_read"
        memory_items, memory_bytes = options.memory_items, options.memory_bytes
        self._memory = memory_tier(policy, memory_items, memory_bytes, self._stripes, second_read=second_read)
        self._memory_get = self._memory.get
        self._memory_lookup, self._memory_touch = self._memory.lookup, self._memory.touch
        self._epochs = self._memory.epochs
        self._get_record = self._disk.decoding_getter(unpack_record, options.max_value_bytes)
        self._first_reads = self._memory.first_reads
        self._memory_items = options.memory_items
        self._admit = self._memory.admit
        self._seq = next_sequence(self._disk)
        self._durability = Durability(
            self._disk, options, path=self.path, restored=restored, stats=self._stats,
            scheduler=self._scheduler, memory=self._memory, stripes=self._stripes,
        )  # fmt: skip
        self._durability.schedule(self.checkpoint, self.sweep)
        # In shared mode the existence filter is Redis's (bound by the shared tier), not this directory's.
        local_guard = options.guard and options.shared is None
        self._guard = open_guard(self._disk, local_guard, options.bloom_capacity, options.bloom_error_rate)
        if self._guard is not None:
            self._guard.defer = self._scheduler.submit
        writes = entry_writes(self._disk, self._durability.capacity)
        self._writer = Writer(
            disk=self._disk,
            writes=writes,
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
        self._delete = self._writer.delete
        self._counters = Counters(self._disk, self._stripes)
        self._indexes = {}
        self._indexes_lock = threading.Lock()
        self._make_index = functools.partial(SortedIndex, self._disk)
        self._stats.declare(["index_refresh_errors"])
        self._shared: SharedTier | None = None
        if options.shared is not None:
            self._open_shared(writes)
        self._loading = self._open_loading()  # after the shared tier: it may bind the guard
        if self._shared is not None:
            self._loading.lease = self._shared.leases  # one load of a key at a time across processes

    def _open_shared(self, writes: EntryWrites) -> None:
        """Compose the shared tier (Redis) over the local tiers, once: no call branches on the mode."""
        from .shared import SharedTier  # only shared mode imports redis-py

        self._shared = SharedTier(
            options=self._options, stats=self._stats, disk=self._disk, writes=writes, memory=self._memory,
            stripes=self._stripes, seq=self._seq, writer=self._writer, get_record=self._get_record,
            on_corrupt=self._count_corrupt, flights=self._flights,
        )  # fmt: skip
        self._shared.bind(self.__dict__)

    def _abandon_open(self) -> None:
        """Undo a failed open: stop the timers and release the directory (left marked unclean)."""
        self._closed = True
        try:
            self._close_shared()
            self._scheduler.close(timeout=self._options.lock_timeout)
            self._disk.abandon()
        finally:
            self._remove_temp_dir()

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
            record = self._memory_lookup(key)  # MemoryTier.get, inlined: lookup, then touch (tests/test_memory.py)
        except TypeError:
            encode_key(key)  # raises the key error callers expect
            raise
        if record is not None:
            try:
                self._memory_touch(key)
            except KeyError:  # evicted or replaced since the lookup: the record read stands
                pass
            if not record[3]:  # FLAGS: codec.record_state's LIVE test, inlined (tests/property/test_record_rule.py)
                expires_at = record[2]  # EXPIRES_AT (literal indices: a constant beats a global lookup)
                if expires_at is None or expires_at > self._clock():
                    self._hit_memory()
                    return record[4]  # VALUE
            return self._answer(record, default, self._hit_memory)
        record = self._fetch(key)
        if record is None:
            self._miss()
            return default
        if not record[3]:  # FLAGS; the same inlined LIVE test as above, for a tier-2 hit
            expires_at = record[2]  # EXPIRES_AT
            if expires_at is None or expires_at > self._clock():
                self._hit_disk()
                return record[4]  # VALUE
        return self._answer(record, default, self._hit_disk)

    def _answer(self, record: Record, default: Any, count_hit: Callable[[], int]) -> Any:
        """What ``get`` returns for a stored record that is not a plain live hit."""
        state = record_state(record, self._clock())
        if state is _LIVE:
            count_hit()
            return record[VALUE]
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
        """The record of ``key`` in tier 2, promoted into tier 1 unless a write of its stripe ran meanwhile.

        ``fast_entry_key``'s str case and ``MemoryTier.is_first_read`` are inlined (tests tie them).
        """
        if type(key) is str and len(key) <= _SAFE_STR:
            try:
                disk_key = _STR_ENTRY + key.encode()
            except UnicodeEncodeError:
                disk_key = fast_entry_key(key)
        else:
            disk_key = fast_entry_key(key)
        stripe = hash(key) % _STRIPE_COUNT
        epoch = self._epochs[stripe]
        try:
            record = self._get_record(disk_key)
        except CorruptRecord as exc:  # a damaged block or record reads as a miss, counted and logged
            self._count_corrupt(disk_key, exc)
            return None
        if record is not None:
            seen = self._first_reads
            if seen is not None and key not in seen:  # a first read: remembered, not promoted
                if len(seen) >= self._memory_items:
                    seen.clear()
                seen.add(key)
            else:
                self._admit(key, record, stripe, epoch)
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
        return self._delete(key, version)

    # -- loading: get_or_load, recomputation, background work (loading.py, calls.py) ------------

    def _open_loading(self) -> Loading:
        """The loading algorithm, wired to this store's primitives and shared parts."""
        core = StoreCore(
            path=self.path,
            is_closed=lambda: self._closed,
            lookup=self._lookup,
            read=self._read,
            current=lambda key: self._writer.current(key, fast_entry_key(key)),  # a fill's admit check
            write=self._writer.write,
            delete=self.delete,
        )
        return Loading(core, self._options, self._stats, self._flights, self._scheduler, self._guard)

    # -- introspection and lifetime ---------------------------------------------------

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
                # Order matters: stop the listener and background work, then save what
                # lives in memory, then release the directory.
                self._close_shared()
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

    def _close_shared(self) -> None:
        shared = getattr(self, "_shared", None)
        if shared is not None:
            shared.close()

    def _remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


_LIVE, _NEGATIVE = RecordState.LIVE, RecordState.NEGATIVE
_STRIPE_COUNT = STRIPES  # the store's Stripes() has the default count
_SAFE_STR = SAFE_STR_LEN
_STR_ENTRY = STR_ENTRY
