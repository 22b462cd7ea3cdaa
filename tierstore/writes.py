"""How an entry reaches tier 2: composed layers with one ``put``/``delete`` interface.

A layer adds the records that must land no later than the entry (its expiry
index record, its write-order record for the capacity, ...) to ``extra`` and
hands the write on; the innermost layer, ``DiskWrites``, writes them in order
and the entry last, each as a plain ``DB.put`` (cheaper here than a batch: a
set with a TTL costs 1 put more, not a batch). LevelDB applies writes in order,
so a crash keeps a prefix: a record that rode along without its entry (the
sweep drops an index record naming no entry; an unclean close rebuilds the
capacity's order records), never an entry without them. The store composes
what its settings need, as zict composes ``Buffer(fast, slow)``, instead of
branching on them per write::

    writes = DiskWrites(disk)
    writes = CapacityWrites(writes, capacity)   # only with disk_capacity_bytes

Callers hold the key's stripe lock (layers may read the record they replace).
``batch`` writes many entries (puts and deletes of distinct keys, each with what
rides along) in one LevelDB batch: all of them or none (``set_many``,
``delete_many``, ``delete_prefix``); its callers hold every key's stripe lock.
"""

from __future__ import annotations

from typing import Protocol

from .capacity import Capacity, entry_size, order_op
from .disk import DiskTier
from .keyspace import Op

__all__ = ["EntryWrites", "DiskWrites", "CapacityWrites", "entry_writes", "BatchItem"]

# One entry of a batch: its LevelDB key, its envelope (None: delete it), its write
# sequence (0 for a delete) and the records that ride along.
BatchItem = tuple[bytes, "bytes | None", int, "list[Op] | None"]


class EntryWrites(Protocol):
    """Writes of entry records (``disk_key`` is the entry's LevelDB key)."""

    def put(self, disk_key: bytes, data: bytes, seq: int, extra: list[Op] | None = None) -> None: ...

    def delete(self, disk_key: bytes, extra: list[Op] | None = None) -> None: ...

    def batch(self, items: list[BatchItem]) -> None: ...


def entry_writes(disk: DiskTier, capacity: Capacity | None) -> EntryWrites:
    """The layers an entry write goes through, as the store's settings need them."""
    writes: EntryWrites = DiskWrites(disk)
    if capacity is not None:
        writes = CapacityWrites(writes, capacity)
    return writes


class DiskWrites:
    """The innermost layer: what rides along, in order, then the entry's own ``put``."""

    def __init__(self, disk: DiskTier) -> None:
        self._disk = disk
        self._put = disk.put

    def put(self, disk_key: bytes, data: bytes, seq: int, extra: list[Op] | None = None) -> None:
        if extra:
            for key, value in extra:
                if value is None:
                    self._disk.delete(key)
                else:
                    self._put(key, value)
        self._put(disk_key, data)

    def delete(self, disk_key: bytes, extra: list[Op] | None = None) -> None:
        ops = extra if extra is not None else []
        ops.append((disk_key, None))
        self._disk.write(ops)

    def batch(self, items: list[BatchItem]) -> None:
        ops: list[Op] = []
        for disk_key, data, _, extra in items:
            if extra:
                ops.extend(extra)
            ops.append((disk_key, data))
        self._disk.write(ops)


class CapacityWrites:
    """Keeps each entry's write-order record and the byte total for ``disk_capacity_bytes``."""

    def __init__(self, inner: EntryWrites, capacity: Capacity) -> None:
        self._inner = inner
        self._capacity = capacity

    def put(self, disk_key: bytes, data: bytes, seq: int, extra: list[Op] | None = None) -> None:
        ops, delta = self._capacity.replacing(disk_key)
        ops.append(order_op(seq, disk_key, data))
        self._inner.put(disk_key, data, seq, _joined(ops, extra))
        self._capacity.grow(delta + entry_size(disk_key, data))

    def delete(self, disk_key: bytes, extra: list[Op] | None = None) -> None:
        ops, delta = self._capacity.replacing(disk_key)
        self._inner.delete(disk_key, _joined(ops, extra))
        self._capacity.grow(delta)

    def batch(self, items: list[BatchItem]) -> None:
        joined: list[BatchItem] = []
        total = 0
        for disk_key, data, seq, extra in items:  # distinct keys: each read sees the record it replaces
            ops, delta = self._capacity.replacing(disk_key)
            if data is not None:
                ops.append(order_op(seq, disk_key, data))
                delta += entry_size(disk_key, data)
            joined.append((disk_key, data, seq, _joined(ops, extra)))
            total += delta
        self._inner.batch(joined)
        self._capacity.grow(total)


def _joined(ops: list[Op], extra: list[Op] | None) -> list[Op]:
    if extra:
        ops.extend(extra)
    return ops
