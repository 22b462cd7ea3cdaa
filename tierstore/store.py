"""TierStore: the facade that composes tier 1, tier 2 and the parts around them.

The store owns no algorithm of its own beyond the version rule: a write takes
its key's stripe lock, reads the current record (tier 1, else tier 2), decides,
writes tier 2 and then tier 1. Everything else is delegated to the modules
listed in DESIGN.md §2, none of which imports this one.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import msgpack

from . import codec
from .clock import Jitter, check_ttl
from .codec import ABSENT, NEGATIVE, TOMBSTONE, Entry, Key, Record, encode_key
from .disk import NS_ENTRY, DiskTier
from .errors import CorruptRecord, StoreClosed
from .memory import MemoryTier
from .options import STAT_KEYS, Options
from .refresh import Scheduler

__all__ = ["TierStore"]

log = logging.getLogger("tierstore")

_STRIPES = 64


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
        self._stripe_locks = [threading.Lock() for _ in range(_STRIPES)]
        self._packers = [msgpack.Packer() for _ in range(_STRIPES)]
        self._corrupt_logged = False
        self._closed = False
        self._close_lock = threading.Lock()
        try:
            self._disk = DiskTier(self.path)
        except BaseException:
            self._remove_temp_dir()
            raise
        self._memory = MemoryTier(options.memory_items, options.memory_bytes)
        self._memory_get = self._memory.get
        self._seq = _next_sequence(self._disk)
        self._guard: Any = None  # the existence filter when guard=True (issue 4)

    # -- reading ------------------------------------------------------------------

    def get(self, key: Key, default: Any = None) -> Any:
        """The live value of ``key`` (tier 1, then tier 2), else ``default``."""
        if self._closed:
            raise StoreClosed(f"store {self.path} is closed")
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
            raise StoreClosed(f"store {self.path} is closed")
        record = self._memory_get(key)
        return record if record is not None else self._read_disk(key)

    def _read_disk(self, key: Key) -> Record | None:
        disk_key = NS_ENTRY + encode_key(key)
        epoch = self._memory.epoch(key)
        data = self._disk.get(disk_key)
        if data is None:
            return None
        record = self._decode(disk_key, data)
        if record is not None:
            self._memory.promote(key, record, epoch)
        return record

    def _decode(self, disk_key: bytes, data: bytes) -> Record | None:
        try:
            return codec.unpack_record(data)
        except CorruptRecord as exc:
            self._stats["corrupt_records"] += 1
            level = logging.DEBUG if self._corrupt_logged else logging.WARNING
            self._corrupt_logged = True
            log.log(level, "%s: record %r is corrupt and reads as a miss: %s", self.path, disk_key, exc)
            return None

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
        return self._write(key, value, ttl=ttl, version=version)

    def _write(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Any = ...,
        version: int | None = None,
        load_time: float = 0.0,
        admit: Any = None,
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
            current = self._current(key, disk_key)
            current_version = current.version if current is not None else 0
            if (version is not None and version <= current_version) or (admit is not None and not admit()):
                self._stats["sets_rejected"] += 1
                return False
            now = self._clock()
            drawn = self._jitter.draw(ttl_seconds) if self._jitter.fraction else ttl_seconds
            record = self._encode(
                stripe,
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
            return True
        finally:
            lock.release()

    def _encode(
        self,
        stripe: int,
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
        self._disk.put(disk_key, data)
        if type(value) not in codec.PLAIN_TYPES:
            value = codec.plain_value(value, data)
        return Record(value, version, expires_at, flags, now, ttl, seq, len(data), load_time)

    def _resolve_ttl(self, ttl: Any, negative: bool) -> float | None:
        if ttl is ...:
            return self._options.negative_ttl if negative else self._options.default_ttl
        return check_ttl(ttl)

    def _current(self, key: Key, disk_key: bytes) -> Record | None:
        """The stored record, read under the key's stripe lock."""
        record = self._memory_get(key)
        if record is not None:
            return record
        data = self._disk.get(disk_key)
        return None if data is None else self._decode(disk_key, data)

    def delete(self, key: Key, *, version: int | None = None) -> bool:
        """Remove ``key`` from both tiers, leaving a tombstone at its version; ``True`` if it was live."""
        disk_key = NS_ENTRY + encode_key(key)
        if version is not None:
            codec.check_version(version)
        stripe = hash(key) % _STRIPES
        lock = self._stripe_locks[stripe]
        lock.acquire()
        try:
            current = self._current(key, disk_key)
            now = self._clock()
            was_live = self._is_live(current, now)
            keep_version = max(version or 0, current.version if current is not None else 0)
            if keep_version:
                tombstone_ttl = self._options.tombstone_ttl
                record = self._encode(
                    stripe, disk_key, None, keep_version, now + tombstone_ttl, TOMBSTONE, now, tombstone_ttl
                )
                self._memory.put(key, record)
            else:
                if current is not None:
                    self._disk.delete(disk_key)
                self._memory.discard(key)
            self._stats["deletes"] += 1
            return was_live
        finally:
            lock.release()

    # -- loading: get_or_load, recomputation, background work (flight.py, refresh.py) --

    # -- existence guard (bloom.py) -------------------------------------------------

    # -- counters and sorted indexes (counters.py, ranking.py) ------------------------

    # -- durability: checkpoints and sweeping (persist.py, sweep.py) ------------------

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
        """Live keys in key order (str keys before bytes keys); ``prefix`` narrows by type and start."""
        for key, _ in self._live_items(prefix):
            yield key

    def items(self, prefix: Key | None = None) -> Iterator[tuple[Key, Any]]:
        """Live ``(key, value)`` pairs in key order."""
        for key, record in self._live_items(prefix):
            yield key, record.value

    def _live_items(self, prefix: Key | None) -> Iterator[tuple[Key, Record]]:
        if self._closed:
            raise StoreClosed(f"store {self.path} is closed")
        scan_prefix = NS_ENTRY if prefix is None else NS_ENTRY + encode_key(prefix)
        for disk_key, data in self._disk.scan(scan_prefix):
            record = self._decode(disk_key, data)
            if record is not None and self._is_live(record, self._clock()):
                yield codec.decode_key(disk_key[1:]), record

    # -- introspection and lifetime ---------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters of what the store did since it was opened."""
        stats = dict(self._stats)
        stats["evictions_memory"] = self._memory.evictions
        stats["memory_items"] = len(self._memory)
        stats["memory_bytes"] = self._memory.bytes
        return stats

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop background work, wait for calls in flight, flush and release the directory."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            try:
                # Order matters: stop background work, then save what lives in memory,
                # then release the directory.
                self._scheduler.close(timeout=self._options.lock_timeout)
                self._disk.put_meta(_META_SEQ, next(self._seq))
                self._disk.close()
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
_META_SEQ = b"seq"


def _next_sequence(disk: DiskTier) -> Iterator[int]:
    """A store-wide write counter that stays ahead of every sequence written before.

    It starts at the wall clock in microseconds or past the high-water mark saved at
    the last clean close, whichever is larger: no store writes a million records a
    second for long, so even after a crash new writes sort after old ones.
    """
    saved = disk.get_meta(_META_SEQ)
    start = max(saved if type(saved) is int else 0, time.time_ns() // 1000)
    return itertools.count(start + 1)
