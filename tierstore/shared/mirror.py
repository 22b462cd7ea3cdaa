"""Tiers 1 and 2 as a copy of the shared tier: stamped records, the trust floor, drops.

In shared mode Redis is the authority and this process's tiers hold copies of
what it accepted or gave back. Each copy in tier 2 carries its *write stamp*,
``[seq, epoch id]`` of the Redis write that produced it, as a tenth envelope
field (``codec.unpack_record`` reads nine and ignores later fields, so every
reader of a directory still reads these records).

- **The trust floor.** ``floor`` is a value of the store's own write sequence:
  a tier-2 record written at or below it is not served before it is checked
  against Redis (``reading.SharedReads``). The floor is raised when the store
  opens (what an earlier session left may be stale) and at every resync (the
  listener may have missed messages), and tier 1 is cleared then: a resync costs
  O(1), and each stale-able copy is revalidated on its next read.
- **No copies while deaf.** Between a lost subscription and the next one no
  copy lands at all (reads and writes go to Redis each time, or fail fast
  while Redis is down): nothing would tell this process when such a copy went
  stale. The copies held keep their trust meanwhile; when they stop being
  served is the outage policy's decision (``outage``), and getting the
  subscription back always resyncs.
- **Commits race nothing.** A copy lands only if neither the stripe's write epoch
  nor the floor moved since the caller read them, before its Redis call: a
  listener drop, a resync or another local write of the stripe meanwhile makes
  the commit drop the key instead (a miss, never an older value).
- **Drops.** The listener's invalidation of a key at ``seq`` keeps a trusted copy
  stamped at ``seq`` or later in the same epoch, and drops anything else from
  both tiers (the stripe's epoch moves either way, so a read in flight does not
  store what it fetched before the message).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

from ..codec import (
    EXPIRES_AT,
    FLAGS,
    FORMAT,
    LOAD_TIME,
    SEQ,
    TTL,
    VALUE,
    VERSION,
    WRITTEN_AT,
    Key,
    Record,
)
from ..disk import DiskTier
from ..expiry import index_op
from ..memory import MemoryTier
from ..stripes import Stripes
from ..writer import Writer
from ..writes import EntryWrites

__all__ = ["Mirror", "Stamp", "envelope_stamp"]

Stamp = tuple[int, bytes]  # (seq, epoch id) of the Redis write a copy comes from


def envelope_stamp(data: bytes) -> tuple[int, Stamp] | None:
    """The local write sequence and the write stamp of a tier-2 envelope; ``None`` without a valid stamp."""
    try:
        items = msgpack.unpackb(data, strict_map_key=False)
    except Exception:  # msgpack raises several unrelated types; a damaged record has no stamp
        return None
    if type(items) is list and len(items) >= 10 and type(items[SEQ]) is int:
        stamp = items[9]
        if type(stamp) is list and len(stamp) == 2 and type(stamp[0]) is int and type(stamp[1]) is bytes:
            return items[SEQ], (stamp[0], stamp[1])
    return None


class Mirror:
    """The local copies of shared entries. Thread-safety: commits and drops hold the key's stripe lock."""

    def __init__(
        self,
        *,
        disk: DiskTier,
        writes: EntryWrites,
        memory: MemoryTier,
        stripes: Stripes,
        seq: Iterator[int],
        writer: Writer,
    ) -> None:
        self._disk = disk
        self._writes = writes
        self._memory = memory
        self._locks = stripes.locks
        self.stripe_count = stripes.count
        self._seq = seq
        self._writer = writer
        self.epochs = memory.epochs
        self.floor = next(seq)  # nothing an earlier session wrote is trusted
        self.epoch = b""  # the epoch id of Redis's data set, as last read
        self.listening = False  # whether the listener is subscribed: copies land only then

    def seen(self, stripe: int) -> tuple[int, int]:
        """What a commit checks: the stripe's write epoch and the floor, read before a Redis call."""
        return self.epochs[stripe], self.floor

    def resync(self, *, listening: bool) -> None:
        """Distrust every copy: raise the floor above all of them and clear tier 1.

        ``listening``: whether the listener is subscribed now (no copy lands until it is).
        """
        if not listening:
            self.listening = False
        self.floor = next(self._seq)
        self._memory.clear()  # moves every stripe's epoch: no read in flight stores its record
        self.listening = listening

    def commit(
        self, key: Key, disk_key: bytes, stripe: int, seen: tuple[int, int], record: Record, stamp: Stamp, *, read: bool
    ) -> Record:
        """Hold ``record`` (as Redis holds it) in both tiers with its stamp; the record to answer with.

        Unless something moved since ``seen`` (then the key is dropped). ``read``: a copy
        fetched by a read enters tier 1 by the store's admission rule; a write's always does.
        """
        lock = self._locks[stripe]
        with lock:
            epoch, floor = seen
            if not self.listening or epoch & 1 or self.epochs[stripe] != epoch or self.floor != floor:
                self._drop_locked(key, disk_key, stripe)
                return record
            seq = next(self._seq)
            version, expires_at = record[VERSION], record[EXPIRES_AT]
            envelope: list[Any] = [FORMAT, version, expires_at, record[FLAGS], record[VALUE], record[WRITTEN_AT]]
            envelope += [record[TTL], seq, record[LOAD_TIME], list(stamp)]
            data: bytes = msgpack.packb(envelope)
            if version:
                self._writer.mark_versioned()  # before the entry, as the writer does
            memory = self._memory
            memory.begin_write(stripe, key)
            try:
                self._writes.put(disk_key, data, seq, None if expires_at is None else [index_op(disk_key, expires_at)])
            except BaseException:
                memory.discard(key, stripe)
                raise
            local = (len(data), *record[VERSION:SEQ], seq, record[LOAD_TIME])
            if read and memory.first_reads is not None and memory.is_first_read(key):
                memory.discard(key, stripe)  # a first read: remembered, held in tier 2 only
            else:
                memory.put(key, local, stripe)
            return local

    def drop(self, key: Key, disk_key: bytes, stripe: int, *, below: int | None = None) -> bool:
        """Forget the copies of ``key``; with ``below``, keep a trusted one stamped at ``below`` or later.

        ``True`` when a copy was kept.
        """
        with self._locks[stripe]:
            if below is not None:
                data = self._disk.get(disk_key)
                found = None if data is None else envelope_stamp(data)
                if found is not None:
                    local_seq, (seq, epoch) = found
                    if local_seq > self.floor and epoch == self.epoch and seq >= below:
                        return True
            self._drop_locked(key, disk_key, stripe)
            return False

    def _drop_locked(self, key: Key, disk_key: bytes, stripe: int) -> None:
        memory = self._memory
        memory.begin_write(stripe, key)
        try:
            if self._disk.get(disk_key) is not None:
                self._writes.delete(disk_key)
        finally:
            memory.discard(key, stripe)
