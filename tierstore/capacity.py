"""Disk capacity: the running byte total of tier-2 entries and their write-order records.

Decisions (also in the README, "Decisions"):

- Capacity counts ``len(key) + len(envelope)`` of every record in the entry
  namespace, tombstones included (index records of other namespaces, the expiry
  index among them, are not counted). Eviction (``sweep.Sweeper``) walks the
  write order, oldest sequence first.
- Write-order records (``NS_WRITE_ORDER + seq(8, big endian) + entry key`` ->
  size) are kept only when ``disk_capacity_bytes`` is set. The running byte total
  is saved at close; a session that did not close cleanly (or ran without a
  capacity) leaves no saved total, and the next open with a capacity rebuilds the
  order records and the total with one scan of the entries (O(entries)).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

import msgpack

from . import codec
from .disk import DiskTier
from .errors import CorruptRecord
from .keyspace import NS_ENTRY, NS_WRITE_ORDER, Op

__all__ = [
    "Capacity",
    "OrderRecord",
    "order_key",
    "order_op",
    "order_size",
    "parse_order_key",
    "decode_order_record",
    "header_seq",
    "entry_size",
    "open_capacity",
    "META_CAPACITY",
]

META_CAPACITY = b"capacity"  # the total at a clean close: {"total": bytes}


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
    return OrderRecord(seq, disk_key, order_size(data))


def order_op(seq: int, disk_key: bytes, data: bytes) -> Op:
    """The write-order record of the entry ``disk_key`` -> ``data`` written with sequence ``seq``."""
    return order_key(seq, disk_key), entry_size(disk_key, data).to_bytes(8, "big")


def order_size(data: bytes) -> int:
    """The entry size a write-order record holds."""
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
    """What an entry record counts towards the capacity: its key and its envelope."""
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
        """Add ``delta`` bytes to the total; past the limit, call ``on_over`` once until ``rearm``."""
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
        self._disk.put_meta(META_CAPACITY, {"total": self.total})

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
            total += entry_size(disk_key, data)
            ops.append(order_op(header_seq(data) or 0, disk_key, data))
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
    saved = disk.get_meta(META_CAPACITY, damaged={})  # damaged: consumed, and the total recounted
    if saved is not None:
        disk.put_meta(META_CAPACITY, None, sync=True)
    if limit is None:
        return None
    capacity = Capacity(disk, limit)
    total = saved.get("total") if isinstance(saved, dict) else None
    if disk.was_clean and type(total) is int and total >= 0:
        capacity.total = total
    else:
        capacity.rebuild()
    return capacity
