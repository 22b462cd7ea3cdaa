"""Sweeping tier 2: purge expired entries and old tombstones, and keep it under its capacity.

Decisions (also in the README, "Decisions"):

- An entry past its stale window (or a negative entry past its TTL) that carries a
  version > 0 becomes a tombstone (``tombstone_ttl`` from now) instead of
  vanishing, so an older versioned ``set`` is still rejected; with version 0 it is
  deleted. Tombstones go when ``tombstone_ttl`` has passed. Undecodable entry
  records are deleted (they read as misses anyway).
- Capacity counts ``len(key) + len(envelope)`` of every record in the entry
  namespace, tombstones included. Eviction walks the write order (oldest
  sequence first): version-0 entries are deleted, versioned ones become
  tombstones (same sequence, so they keep their place), and tombstones are never
  evicted for capacity (they are the memory of versions; ``tombstone_ttl`` ends
  them). If only tombstones are left the store may stay above its capacity.
- Write-order records (``NS_WRITE_ORDER + seq(8, big endian) + entry key`` ->
  size) are kept only when ``disk_capacity_bytes`` is set. The running byte total
  is saved at close; a session that did not close cleanly (or ran without a
  capacity) leaves no saved total, and the next open with a capacity rebuilds the
  order records and the total with one scan.
- Every change re-reads the record under its key's lock (given by the store as a
  callable) and applies only when the record is still the one that was scanned,
  so a concurrent write is never lost; no lock is held across batches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import msgpack

from . import codec
from .codec import TOMBSTONE, Key, Record
from .disk import NS_ENTRY, NS_WRITE_ORDER, DiskTier, Op
from .errors import CorruptRecord

__all__ = [
    "Capacity",
    "Sweeper",
    "STAT_KEYS",
    "OrderRecord",
    "order_key",
    "parse_order_key",
    "decode_order_record",
    "open_capacity",
    "entry_size",
    "order_value",
]

STAT_KEYS = ("swept_tombstones",)

LockFor = Callable[[Key], AbstractContextManager[Any]]
KeyHook = Callable[[Key], None]  # begin a write of a key in tier 1, or forget the key

_CAPACITY_META = b"capacity"
_BATCH = 256
_NO_KEY: Any = nullcontext()


def order_key(seq: int, disk_key: bytes) -> bytes:
    """The write-order record of an entry written with sequence ``seq``."""
    return NS_WRITE_ORDER + seq.to_bytes(8, "big") + disk_key


def parse_order_key(okey: bytes) -> tuple[int, bytes]:
    """``(seq, entry key)`` of a write-order record's key (inverts ``order_key``; checks nothing)."""
    return int.from_bytes(okey[1:9], "big"), okey[9:]


class OrderRecord(NamedTuple):
    """A write-order record: the entry's write sequence, its LevelDB key and its size in bytes."""

    seq: int
    disk_key: bytes
    size: int


def decode_order_record(okey: bytes, data: bytes) -> OrderRecord:
    """Decode a write-order record; ``CorruptRecord`` when damaged."""
    seq, disk_key = parse_order_key(okey)
    if order_key(seq, disk_key) != okey or disk_key[:1] != NS_ENTRY:
        raise CorruptRecord("write-order key does not name an entry")
    codec.decode_key(disk_key[1:])
    if len(data) != 8:
        raise CorruptRecord("write-order size is not 8 bytes")
    return OrderRecord(seq, disk_key, _size_of(data))


def order_value(size: int) -> bytes:
    return size.to_bytes(8, "big")


def _size_of(data: bytes) -> int:
    return int.from_bytes(data[:8], "big")


def header_seq(data: bytes) -> int | None:
    """The write sequence of an envelope without decoding its value; ``None`` if malformed."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    try:
        if unpacker.read_array_header() < 8:
            return None
        for _ in range(4):
            unpacker.skip()  # format, version, expires_at, flags
        unpacker.skip()  # value
        unpacker.skip()  # written_at
        unpacker.skip()  # ttl
        seq = unpacker.unpack()
    except Exception:  # msgpack raises several unrelated types on bad input
        return None
    return seq if type(seq) is int and 0 <= seq < 2**64 else None


def entry_size(disk_key: bytes, data: bytes) -> int:
    return len(disk_key) + len(data)


class Capacity:
    """The running byte total of tier-2 entries and their write-order records."""

    def __init__(self, disk: DiskTier, limit: int, total: int = 0) -> None:
        self._disk = disk
        self.limit = limit
        # Eviction goes a tenth below the limit, so a store at capacity does not
        # evict once per write.
        self.target = limit - limit // 10
        self.total = total
        self.on_over: Callable[[], None] | None = None
        self._signalled = False
        self._lock = threading.Lock()

    def grow(self, delta: int) -> None:
        with self._lock:
            self.total += delta
            signal = self.total > self.limit and not self._signalled and self.on_over is not None
            if signal:
                self._signalled = True
        if signal and self.on_over is not None:
            self.on_over()

    @property
    def over(self) -> bool:
        return self.total > self.limit

    def above_target(self) -> bool:
        return self.total > self.target

    def rearm(self) -> None:
        """Let the next growth past the limit call ``on_over`` again (an eviction is starting)."""
        self._signalled = False

    def replacing(self, disk_key: bytes) -> tuple[list[Op], int]:
        """The batch ops and the byte change of replacing or deleting the entry (caller holds its lock)."""
        old = self._disk.get(disk_key)
        if old is None:
            return [], 0
        seq = header_seq(old)
        ops: list[Op] = [] if seq is None else [(order_key(seq, disk_key), None)]
        return ops, -entry_size(disk_key, old)

    def removed(self, size: int) -> None:
        """Account for an entry the sweeper removed or shrank by ``size`` bytes."""
        self.grow(-size)

    def save(self) -> None:
        """Record the total at a clean close so the next open need not rebuild."""
        self._disk.put_meta(_CAPACITY_META, {"total": self.total})

    def rebuild(self) -> None:
        """Rewrite every order record and recount the total from the entries (one scan)."""
        disk = self._disk
        ops: list[Op] = []
        for key, _ in disk.scan(NS_WRITE_ORDER):
            ops.append((key, None))
            if len(ops) >= 1000:
                disk.write(ops)
                ops = []
        disk.write(ops)
        ops = []
        total = 0
        for disk_key, data in disk.scan(NS_ENTRY):
            size = entry_size(disk_key, data)
            total += size
            ops.append((order_key(header_seq(data) or 0, disk_key), order_value(size)))
            if len(ops) >= 1000:
                disk.write(ops)
                ops = []
        disk.write(ops)
        self.total = total


def open_capacity(disk: DiskTier, limit: int | None) -> Capacity | None:
    """The capacity tracker at open: the saved total after a clean close, else a rebuild.

    The saved total is consumed here (and by a store opened without a capacity,
    whose writes do not keep order records), so only ``Capacity.save`` at a clean
    close can vouch for the next session.
    """
    saved = disk.get_meta(_CAPACITY_META, damaged={})  # damaged: consumed, and the total recounted
    if saved is not None:
        disk.put_meta(_CAPACITY_META, None, sync=True)
    if limit is None:
        return None
    capacity = Capacity(disk, limit)
    total = saved.get("total") if isinstance(saved, dict) else None
    if disk.was_clean and type(total) is int and total >= 0:
        capacity.total = total
    else:
        capacity.rebuild()
    return capacity


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
                return [
                    (disk_key, tombstone),
                    (order_key(record.seq, disk_key), order_value(len(disk_key) + len(tombstone))),
                ]
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
        packer = codec.new_packer()
        data, _ = codec.encode_record(packer, None, record.version, now + ttl, TOMBSTONE, now, ttl, record.seq)
        return data

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
            planned += _size_of(size)
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
