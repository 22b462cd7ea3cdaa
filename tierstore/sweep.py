"""Sweeping tier 2: purge expired entries and old tombstones, and keep it under its capacity.

Decisions (also in the README, "Decisions"):

- An entry past its stale window (or a negative entry past its TTL) that carries a
  version > 0 becomes a tombstone (``tombstone_ttl`` from now) instead of
  vanishing, so an older versioned ``set`` is still rejected; with version 0 it is
  deleted. Tombstones go when ``tombstone_ttl`` has passed. Undecodable entry
  records are deleted (they read as misses anyway).
- Eviction (the byte total and the write order are ``capacity.py``'s) walks the
  write order (oldest sequence first): version-0 entries are deleted, versioned
  ones become tombstones (same sequence, so they keep their place), and
  tombstones are never evicted for capacity (they are the memory of versions;
  ``tombstone_ttl`` ends them). If only tombstones are left the store may stay
  above its capacity.
- Every change re-reads the record under its key's lock (given by the store as a
  callable) and applies only when the record is still the one that was scanned,
  so a concurrent write is never lost; no lock is held across batches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import msgpack

from . import codec
from .capacity import Capacity, entry_size, header_seq, order_key, order_op, order_size, parse_order_key
from .codec import TOMBSTONE, Key, Record
from .disk import NS_ENTRY, NS_WRITE_ORDER, DiskTier, Op
from .errors import CorruptRecord

__all__ = ["Sweeper", "STAT_KEYS"]

STAT_KEYS = ("swept_tombstones",)

LockFor = Callable[[Key], AbstractContextManager[Any]]
KeyHook = Callable[[Key], None]  # begin a write of a key in tier 1, or forget the key

_BATCH = 256
_NO_KEY: Any = nullcontext()


class Sweeper:
    """Purges what expired and evicts what exceeds the capacity, batch by batch."""

    def __init__(
        self,
        disk: DiskTier,
        *,
        clock: Callable[[], float],
        stale_ttl: float,
        tombstone_ttl: float,
        lock_for: LockFor,
        begin: KeyHook,
        forget: KeyHook,
        capacity: Capacity | None = None,
    ) -> None:
        self._disk = disk
        self._clock = clock
        self._stale_ttl = stale_ttl
        self._tombstone_ttl = tombstone_ttl
        self._lock_for = lock_for
        self._begin = begin
        self._forget = forget
        self.capacity = capacity
        self._running = threading.Lock()

    def sweep(self) -> dict[str, int]:
        """One pass: purge, then evict down to the capacity. Concurrent calls run one at a time."""
        counts = {"scanned": 0, "expired_purged": 0, "swept_tombstones": 0, "corrupt_purged": 0, "evictions_disk": 0}
        with self._running:
            self._purge(counts)
            self._evict_over(counts)
        return counts

    def evict(self) -> dict[str, int]:
        """Only the capacity part of ``sweep()``."""
        counts = {"scanned": 0, "expired_purged": 0, "swept_tombstones": 0, "corrupt_purged": 0, "evictions_disk": 0}
        with self._running:
            self._evict_over(counts)
        return counts

    def _evict_over(self, counts: dict[str, int]) -> None:
        capacity = self.capacity
        if capacity is not None:
            capacity.rearm()
            if capacity.over:
                self._evict(capacity, counts)

    # -- expiry -------------------------------------------------------------------------

    def _purge(self, counts: dict[str, int]) -> None:
        batch: list[tuple[bytes, bytes, str]] = []
        now = self._clock()
        for disk_key, data in self._disk.scan(NS_ENTRY):
            counts["scanned"] += 1
            verdict = self._verdict(data, now)
            if verdict is not None:
                batch.append((disk_key, data, verdict))
            if len(batch) >= _BATCH:
                self._apply(batch, counts)
                batch = []
                now = self._clock()
        self._apply(batch, counts)

    def _verdict(self, data: bytes, now: float) -> str | None:
        """Which count a record goes to when it should go, else ``None``."""
        try:
            record = codec.unpack_record(data)
        except CorruptRecord:
            return "corrupt_purged"
        expires_at = record.expires_at
        if expires_at is None:
            return None
        if record.flags & TOMBSTONE:
            return "swept_tombstones" if expires_at <= now else None
        if record.negative:
            return "expired_purged" if expires_at <= now else None
        return "expired_purged" if expires_at + self._stale_ttl <= now else None

    def _apply(self, batch: list[tuple[bytes, bytes, str]], counts: dict[str, int]) -> None:
        for lock, items in self._by_lock((disk_key, (data, verdict)) for disk_key, data, verdict in batch):
            with lock:
                ops: list[Op] = []
                done: list[tuple[bytes, str]] = []
                for disk_key, (data, verdict) in items:
                    if self._disk.get(disk_key) != data:
                        continue  # written since the scan
                    ops.extend(self._removal(disk_key, data, keep_version=verdict != "swept_tombstones"))
                    done.append((disk_key, verdict))
                self._commit(ops, done, counts)

    def _removal(self, disk_key: bytes, data: bytes, *, keep_version: bool) -> list[Op]:
        """Ops that remove an entry, leaving a tombstone when it has a version to keep."""
        try:
            record: Record | None = codec.unpack_record(data)
        except CorruptRecord:
            record = None
        seq = record.seq if record is not None else header_seq(data)
        capacity = self.capacity
        if record is not None and keep_version and record.version > 0:
            tombstone = self._tombstone(record)
            if capacity is not None:
                capacity.removed(len(data) - len(tombstone))
                return [(disk_key, tombstone), order_op(record.seq, disk_key, tombstone)]
            return [(disk_key, tombstone)]
        ops: list[Op] = [(disk_key, None)]
        if capacity is not None:
            capacity.removed(entry_size(disk_key, data))
            if seq is not None:
                ops.append((order_key(seq, disk_key), None))
        return ops

    def _tombstone(self, record: Record) -> bytes:
        now = self._clock()
        ttl = self._tombstone_ttl
        packer = msgpack.Packer()
        return codec.pack_record(packer, None, record.version, now + ttl, TOMBSTONE, now, ttl, record.seq)

    def _commit(self, ops: list[Op], done: list[tuple[bytes, str]], counts: dict[str, int]) -> None:
        if not ops:
            return
        keys = [key for key in (_user_key(disk_key) for disk_key, _ in done) if key is not None]
        for key in keys:
            self._begin(key)  # tier 1 takes no older record until the key is forgotten
        try:
            self._disk.write(ops)
        finally:
            for key in keys:
                self._forget(key)
        for _, verdict in done:
            counts[verdict] += 1

    def _by_lock(self, items: Iterable[tuple[bytes, Any]]) -> list[tuple[AbstractContextManager[Any], list[Any]]]:
        """Group records by their key's lock, so each group is one batch under one lock."""
        groups: dict[int, tuple[AbstractContextManager[Any], list[Any]]] = {}
        for disk_key, extra in items:
            key = _user_key(disk_key)
            lock = _NO_KEY if key is None else self._lock_for(key)
            groups.setdefault(id(lock), (lock, []))[1].append((disk_key, extra))
        return list(groups.values())

    # -- capacity -------------------------------------------------------------------------

    def _evict(self, capacity: Capacity, counts: dict[str, int]) -> None:
        """Evict the oldest entries, in write order, until the total is under the target.

        Each round takes just enough order records (by the sizes they hold) to get
        under the target, so grouping a round by lock cannot evict a newer entry
        before an older one; entries that turn out to be tombstones or rewritten
        lead to another round.
        """
        batch: list[bytes] = []
        planned = 0
        for okey, size in self._disk.scan(NS_WRITE_ORDER):
            batch.append(okey)
            planned += order_size(size)
            if len(batch) >= _BATCH or capacity.total - planned <= capacity.target:
                self._evict_batch(batch, counts)
                batch, planned = [], 0
                if not capacity.above_target():
                    return
        self._evict_batch(batch, counts)

    def _evict_batch(self, batch: list[bytes], counts: dict[str, int]) -> None:
        for lock, items in self._by_lock((parse_order_key(okey)[1], okey) for okey in batch):
            with lock:
                ops: list[Op] = []
                done: list[tuple[bytes, str]] = []
                for disk_key, okey in items:
                    self._evict_one(disk_key, okey, ops, done)
                self._commit(ops, done, counts)

    def _evict_one(self, disk_key: bytes, okey: bytes, ops: list[Op], done: list[tuple[bytes, str]]) -> None:
        data = self._disk.get(disk_key)
        seq, _ = parse_order_key(okey)
        if data is None or header_seq(data) != seq:
            ops.append((okey, None))  # left behind by a crash: the entry moved on
            return
        try:
            record = codec.unpack_record(data)
        except CorruptRecord:
            record = None
        if record is not None and record.flags & TOMBSTONE:
            return
        ops.extend(self._removal(disk_key, data, keep_version=True))
        done.append((disk_key, "evictions_disk"))


def _user_key(disk_key: bytes) -> Key | None:
    try:
        return codec.decode_key(disk_key[1:])
    except CorruptRecord:
        return None
