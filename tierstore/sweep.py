"""Sweeping tier 2: purge expired entries and old tombstones, and keep it under its capacity.

Decisions (also in the README, "Decisions"):

- The sweep reads the expiry index (``expiry.py``) from its start up to now, and
  nothing else: its cost follows the index records that fell due (what it
  removes, and the records rewrites left behind), not the size of the store. A
  sweep that removes nothing reads nothing. ``scanned`` counts the index records
  read.
- For each due index record the entry is re-read under its key's lock: gone, or
  with another ``expires_at`` (a rewrite), and only the index record is deleted;
  not purgeable yet (inside its ``stale_ttl`` window) and the record moves to the
  moment it becomes purgeable, so it is read once more, not by every sweep;
  purgeable and it goes, with its index record, in one batch.
- An entry past its stale window (or a negative entry past its TTL) that carries a
  version > 0 becomes a tombstone (``tombstone_ttl`` from now, with its own index
  record in the same batch) instead of vanishing, so an older versioned ``set``
  is still rejected; with version 0 it is deleted. Tombstones go when
  ``tombstone_ttl`` has passed.
- Undecodable entry records are no longer found by the sweep (it does not scan
  the entries): they read as counted misses and ``tierstore verify`` reports
  them. One an index record leads to (a due entry) is purged (``corrupt_purged``).
- Eviction (the byte total and the write order are ``capacity.py``'s) walks the
  write order (oldest sequence first): version-0 entries are deleted, versioned
  ones become tombstones (same sequence, so they keep their place), and
  tombstones are never evicted for capacity (they are the memory of versions;
  ``tombstone_ttl`` ends them). If only tombstones are left the store may stay
  above its capacity. An evicted entry's index record at its ``expires_at`` is
  deleted with it (one moved into the stale window is dropped by a later sweep).
- Every change re-reads the record under its key's lock (given by the store as a
  callable) and decides on what it reads, so a concurrent write is never lost;
  no lock is held across batches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from . import codec
from .capacity import Capacity, entry_size, header_seq, order_key, order_op, order_size, parse_order_key
from .codec import EXPIRES_AT, FLAGS, SEQ, TOMBSTONE, VERSION, Key, Record
from .disk import DiskTier
from .errors import CorruptRecord
from .expiry import due_records, encode_time, index_disk_key, index_key, index_op
from .keyspace import NS_WRITE_ORDER, Op

__all__ = ["Sweeper", "STAT_KEYS"]

STAT_KEYS = ("swept_tombstones",)

LockFor = Callable[[Key], AbstractContextManager[Any]]
KeyHook = Callable[[Key], None]  # begin a write of a key in tier 1, or forget the key
Done = list[tuple[bytes, str]]  # the entries a batch removes, with the count each goes to

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
        """Settle every index record due by now, a batch at a time."""
        batch: list[tuple[bytes, bytes]] = []
        for item in due_records(self._disk, self._now()):
            counts["scanned"] += 1
            batch.append(item)
            if len(batch) >= _BATCH:
                self._settle_batch(batch, counts)
                batch = []
        self._settle_batch(batch, counts)

    def _now(self) -> float:
        """The clock's time; NaN (a broken injected clock) would make every record due, so it raises."""
        now = self._clock()
        if now != now:
            raise ValueError("clock() returned NaN: the sweep cannot tell what is due")
        return now

    def _settle_batch(self, batch: list[tuple[bytes, bytes]], counts: dict[str, int]) -> None:
        now = self._now()
        for lock, items in self._by_lock((index_disk_key(ikey), (ikey, expires)) for ikey, expires in batch):
            with lock:
                drops: list[Op] = []  # the index records read, deleted ahead of any put of the batch
                ops: list[Op] = []
                done: Done = []
                settled: set[bytes] = set()  # entries already purged or moved by an earlier record
                for disk_key, (ikey, expires) in items:
                    drops.append((ikey, None))
                    if disk_key not in settled and self._settle(disk_key, expires, now, ops, done):
                        settled.add(disk_key)
                self._commit(drops + ops, done, counts)

    def _settle(self, disk_key: bytes, expires: bytes, now: float, ops: list[Op], done: Done) -> bool:
        """Ops for the entry a due index record names; whether the entry was purged or its record moved."""
        data = self._disk.get(disk_key)
        if data is None:
            return False  # deleted or evicted since it was indexed
        try:
            record = codec.unpack_record(data)
        except CorruptRecord:
            ops.extend(self._removal(disk_key, data, None))
            done.append((disk_key, "corrupt_purged"))
            return True
        expires_at = record[EXPIRES_AT]
        if expires_at is None or encode_time(expires_at) != expires:
            return False  # rewritten since: its own index record (if any) covers it
        purge_at = codec.purge_time(record, self._stale_ttl)
        assert purge_at is not None  # the record has an expiry
        if purge_at > now:
            ops.append(index_op(disk_key, expires_at, due=purge_at))  # inside its stale window
            return True
        ops.extend(self._removal(disk_key, data, record))
        done.append((disk_key, "swept_tombstones" if record[FLAGS] & TOMBSTONE else "expired_purged"))
        return True

    def _removal(self, disk_key: bytes, data: bytes, record: Record | None) -> list[Op]:
        """Ops that remove an entry, leaving a tombstone when it has a version to keep."""
        capacity = self.capacity
        if record is not None and not record[FLAGS] & TOMBSTONE and record[VERSION] > 0:
            tombstone, expires_at = self._tombstone(record)
            ops: list[Op] = [index_op(disk_key, expires_at), (disk_key, tombstone)]
            if capacity is not None:
                capacity.removed(len(data) - len(tombstone))
                ops.append(order_op(record[SEQ], disk_key, tombstone))
            return ops
        ops = [(disk_key, None)]
        if capacity is not None:
            capacity.removed(entry_size(disk_key, data))
            seq = record[SEQ] if record is not None else header_seq(data)
            if seq is not None:
                ops.append((order_key(seq, disk_key), None))
        return ops

    def _tombstone(self, record: Record) -> tuple[bytes, float]:
        """A tombstone keeping ``record``'s version and sequence, and when it expires."""
        now = self._clock()
        ttl = self._tombstone_ttl
        expires_at = now + ttl
        packer = codec.new_packer()
        data, _ = codec.encode_record(packer, None, record[VERSION], expires_at, TOMBSTONE, now, ttl, record[SEQ])
        return data, expires_at

    def _commit(self, ops: list[Op], done: Done, counts: dict[str, int]) -> None:
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
                done: Done = []
                for disk_key, okey in items:
                    self._evict_one(disk_key, okey, ops, done)
                self._commit(ops, done, counts)

    def _evict_one(self, disk_key: bytes, okey: bytes, ops: list[Op], done: Done) -> None:
        data = self._disk.get(disk_key)
        seq, _ = parse_order_key(okey)
        if data is None or header_seq(data) != seq:
            ops.append((okey, None))  # left behind by a crash: the entry moved on
            return
        try:
            record: Record | None = codec.unpack_record(data)
        except CorruptRecord:
            record = None
        if record is not None and record[FLAGS] & TOMBSTONE:
            return
        if record is not None and record[EXPIRES_AT] is not None:
            ops.append((index_key(encode_time(record[EXPIRES_AT]), disk_key), None))
        ops.extend(self._removal(disk_key, data, record))
        done.append((disk_key, "evictions_disk"))


def _user_key(disk_key: bytes) -> Key | None:
    try:
        return codec.decode_key(disk_key[1:])
    except CorruptRecord:
        return None
