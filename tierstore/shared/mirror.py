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
  O(1), and each stale-able copy is revalidated on its next read. A resync holds
  every stripe lock: a commit in progress lands before it (and is distrusted
  with the rest) or not at all.
- **No copies while deaf.** Between a lost subscription and the next one no
  copy lands at all (reads and writes go to Redis each time, or fail fast
  while Redis is down): nothing would tell this process when such a copy went
  stale. The copies held keep their trust meanwhile; when they stop being
  served is the outage policy's decision (``outage``), and getting the
  subscription back always resyncs.
- **Commits race nothing.** A copy lands only if neither the key's change mark
  nor the floor moved since the caller read them, before its Redis call: a
  listener drop of the key, a resync or another commit of the key meanwhile
  refuses it. A refused copy leaves a trusted local copy at least as new (a
  concurrent read of the same key that landed first) and drops anything else
  (a miss, never an older value). Marks are per key (in 4,096 slots), not per
  stripe, so concurrent reads of different keys never refuse each other. A
  read that found no entry in Redis moves the key's mark too (``absent``): a
  key deleted outright leaves no tombstone to keep, and a copy read before the
  delete must not land after that miss was answered.
- **Many keys at once.** A script that wrote many keys is copied in one tier-2
  batch under the stripes' locks (``commit_many``); a prefix invalidation drops
  every copy under it and moves every stripe's epoch (``drop_prefix``).
- **Drops.** The listener's invalidation of a key at ``seq`` keeps a trusted copy
  stamped at ``seq`` or later in the same epoch, and drops anything else from
  both tiers (the drop moves the key's mark, so a read in flight does not store
  what it fetched before the message; keeping a copy moves nothing: a read in
  flight either noted the mark after that copy landed, so it asked Redis after
  it, or is refused by its landing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack

from ..codec import (
    EXPIRES_AT,
    FLAGS,
    FORMAT,
    LOAD_TIME,
    RECORD_ROOM,
    SEQ,
    TTL,
    VALUE,
    VERSION,
    WRITTEN_AT,
    Key,
    Record,
    encode_key,
)
from ..disk import DiskTier
from ..expiry import index_op
from ..keyspace import NS_ENTRY
from ..memory import MemoryTier
from ..stripes import Stripes
from ..writer import Writer
from ..writes import BatchItem, EntryWrites

__all__ = ["Change", "Mirror", "Stamp", "envelope_stamp", "mark_slot"]

Stamp = tuple[int, bytes]  # (seq, epoch id) of the Redis write a copy comes from
Change = tuple[Key, bytes, int, Record | None, Stamp]  # key, disk key, stripe, record to copy (None: drop), stamp
Seen = tuple[int, int, int]  # the stripe's write epoch, the trust floor and the key's change mark, before a Redis call
_MARKS = 4096  # change-mark slots: a multiple of the stripe count, so a key's slot lies in its stripe


def mark_slot(key: Key) -> int:
    """The change-mark slot of ``key``."""
    return hash(key) % _MARKS


_CHUNK = 1000  # tier-2 deletes per batch of a prefix drop


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
        max_bytes: int,
    ) -> None:
        self._disk = disk
        self.max_bytes = max_bytes
        self._writes = writes
        self._memory = memory
        self._locks = stripes.locks
        self.stripe_count = stripes.count
        self._seq = seq
        self._writer = writer
        self.epochs = memory.epochs
        self._marks = [0] * _MARKS  # moved by every commit or drop of a key of the slot (under its stripe lock)
        self.floor = next(seq)  # nothing an earlier session wrote is trusted
        self.epoch = b""  # the epoch id of Redis's data set, as last read
        self.listening = False  # whether the listener is subscribed: copies land only then

    def seen(self, key: Key, stripe: int) -> Seen:
        """What a commit checks, read before a Redis call: the floor and the key's change mark (and the stripe's
        write epoch, for a promotion into tier 1 of a copy already held)."""
        return self.epochs[stripe], self.floor, self._marks[mark_slot(key)]

    def resync(self, *, listening: bool) -> None:
        """Distrust every copy: raise the floor above all of them and clear tier 1.

        ``listening``: whether the listener is subscribed now (no copy lands until it is).
        """
        with self._every_stripe():  # a commit in progress lands before (then distrusted) or not at all
            if not listening:
                self.listening = False
            self.floor = next(self._seq)
            self._memory.clear()  # moves every stripe's epoch: no read in flight stores its record
            self.listening = listening

    @contextmanager
    def _every_stripe(self) -> Iterator[None]:
        """Hold every stripe lock (in ascending order, as ``commit_many``)."""
        locks = self._locks
        for lock in locks:
            lock.acquire()
        try:
            yield
        finally:
            for lock in reversed(locks):
                lock.release()

    def commit(
        self, key: Key, disk_key: bytes, stripe: int, seen: Seen, record: Record, stamp: Stamp, *, read: bool
    ) -> Record:
        """Hold ``record`` (as Redis holds it) in both tiers with its stamp; the record to answer with.

        Unless the key changed since ``seen`` (then it keeps a local copy at least as new, or is
        dropped). ``read``: a copy fetched by a read enters tier 1 by the store's admission rule;
        a write's always does.
        """
        lock = self._locks[stripe]
        with lock:
            if not self._unmoved(key, seen):
                if not self._holds_as_new(disk_key, stamp):
                    self._drop_locked(key, disk_key, stripe)
                return record
            copied = self._copy(disk_key, record, stamp)
            if copied is None:
                self._drop_locked(key, disk_key, stripe)
                return record
            memory = self._memory
            # a first read is remembered and held in tier 2 only
            return self._land(key, stripe, copied, lambda: not (read and memory.is_first_read(key)))

    def _land(self, key: Key, stripe: int, copied: tuple[BatchItem, Record], hold: Callable[[], bool]) -> Record:
        """Write a copy (the key's lock held): its mark moves, tier 2, then tier 1 when ``hold()``
        (asked once tier 2 holds it); the local record."""
        (disk_key, envelope, seq, extra), local = copied
        memory = self._memory
        self._marks[mark_slot(key)] += 1
        memory.begin_write(stripe, key)  # until put/discard, tier 1 holds no record of key
        try:
            self._writes.put(disk_key, envelope, seq, extra)  # type: ignore[arg-type]  # a copy: bytes
        except BaseException:
            memory.discard(key, stripe)  # what tier 2 holds is unknown (the listener's error ends in a resync)
            raise
        if hold():
            memory.put(key, local, stripe)
        else:
            memory.discard(key, stripe)
        return local

    def _copy(self, disk_key: bytes, record: Record, stamp: Stamp) -> tuple[BatchItem, Record] | None:
        """The tier-2 write of a copy (its envelope stamped, a local seq taken) and its tier-1 record.

        ``None`` when the copy would be longer than tier 2 reads back (``unpack_record``): a value at
        ``max_value_bytes`` fits with its stamp; one under a hostile, overlong epoch id is not copied.
        """
        seq = next(self._seq)
        version, expires_at = record[VERSION], record[EXPIRES_AT]
        envelope: list[Any] = [FORMAT, version, expires_at, record[FLAGS], record[VALUE], record[WRITTEN_AT]]
        envelope += [record[TTL], seq, record[LOAD_TIME], list(stamp)]
        data: bytes = msgpack.packb(envelope)
        if len(data) > self.max_bytes + RECORD_ROOM:
            return None
        if version:
            self._writer.mark_versioned()  # before the entry, as the writer does
        extra = None if expires_at is None else [index_op(disk_key, expires_at)]
        local = (len(data), *record[VERSION:SEQ], seq, record[LOAD_TIME])
        return (disk_key, data, seq, extra), local  # type: ignore[return-value]

    def commit_many(self, changes: list[Change], seen: list[Seen]) -> None:
        """Copy what one script wrote to many keys (distinct): each ``(key, disk_key, stripe, record, stamp)``
        lands in one tier-2 batch, or is dropped when its record is ``None`` or its key changed (``seen``,
        in the same order, read before the Redis call) or the floor moved. Holds the stripes' locks, in
        ascending order."""
        stripes = sorted({change[2] for change in changes})
        locks = [self._locks[stripe] for stripe in stripes]
        for lock in locks:
            lock.acquire()
        try:
            fresh = [self._unmoved(change[0], noted) for change, noted in zip(changes, seen, strict=True)]
            memory = self._memory
            items: list[BatchItem] = []
            held: list[tuple[Key, int, Record | None]] = []
            local: Record | None
            for (key, disk_key, stripe, record, stamp), landing in zip(changes, fresh, strict=True):
                self._marks[mark_slot(key)] += 1
                memory.begin_write(stripe, key)
                copied = self._copy(disk_key, record, stamp) if record is not None and landing else None
                if copied is not None:
                    items.append(copied[0])
                    held.append((key, stripe, copied[1]))
                else:
                    if self._disk.get(disk_key) is not None:
                        items.append((disk_key, None, 0, None))
                    held.append((key, stripe, None))
            try:
                if items:
                    self._writes.batch(items)
            except BaseException:
                for key, stripe, _ in held:
                    memory.discard(key, stripe)
                raise
            for key, stripe, local in held:
                if local is None:
                    memory.discard(key, stripe)
                else:
                    memory.put(key, local, stripe)
        finally:
            for lock in reversed(locks):
                lock.release()

    def _unmoved(self, key: Key, seen: Seen) -> bool:
        _, floor, mark = seen
        return self.listening and self.floor == floor and self._marks[mark_slot(key)] == mark

    def _holds_as_new(self, disk_key: bytes, stamp: Stamp) -> bool:
        """Whether tier 2 holds a trusted copy of this data set stamped at ``stamp`` or later (the lock held)."""
        return self._as_new(self._disk.get(disk_key), stamp)

    def _as_new(self, data: bytes | None, stamp: Stamp) -> bool:
        """Whether the tier-2 envelope ``data`` is a trusted copy of this data set stamped at ``stamp`` or later."""
        held = self._trusted_seq(data)
        return held is not None and stamp[1] == self.epoch and held >= stamp[0]

    def _trusted_seq(self, data: bytes | None) -> int | None:
        """The Redis ``seq`` the tier-2 envelope ``data`` is stamped at, if a trusted copy of this data set."""
        found = None if data is None else envelope_stamp(data)
        if found is None:
            return None
        local_seq, (seq, epoch) = found
        return seq if local_seq > self.floor and epoch == self.epoch else None

    def drop_prefix(self, prefix: Key | None) -> None:
        """Forget every copy of a key under ``prefix`` (``None``: every key), in both tiers.

        Holds every stripe lock; every stripe's write epoch moves, so no read in flight
        (of any key, held here or not) stores what it fetched before.
        """
        scan = NS_ENTRY if prefix is None else NS_ENTRY + encode_key(prefix)
        with self._every_stripe():
            marks = self._marks
            for slot in range(_MARKS):
                marks[slot] += 1  # refuses every commit in flight (of a key under the prefix or not)
            memory = self._memory
            for stripe in range(self.stripe_count):
                memory.begin_write(stripe)
            try:
                chunk: list[BatchItem] = []
                for disk_key, _ in self._disk.scan(scan):
                    chunk.append((disk_key, None, 0, None))
                    if len(chunk) >= _CHUNK:
                        self._writes.batch(chunk)
                        chunk = []
                if chunk:
                    self._writes.batch(chunk)
            finally:
                memory.discard_under(prefix)

    def drop(self, key: Key, disk_key: bytes, stripe: int, *, keep: Stamp | None = None) -> bool:
        """Forget the copies of ``key``; with ``keep``, keep a trusted one of that data set stamped at
        ``keep`` or later (a listener's message: its ``seq`` in the epoch last read; a listing: the
        stamp of the entry it read, so no read after it serves an older value than it did).

        ``True`` when a copy was kept.
        """
        with self._locks[stripe]:
            data = self._disk.get(disk_key)  # read once: whether a copy is kept, and whether to delete one
            if keep is not None and self._as_new(data, keep):
                return True
            self._drop_locked(key, disk_key, stripe, held=data is not None)
            return False

    def replace(self, key: Key, disk_key: bytes, stripe: int, record: Record, stamp: Stamp) -> None:
        """A write elsewhere left ``record`` in Redis at ``stamp`` (its message carried it): a copy of
        ``key`` held here that is older becomes this record, in the tiers that held it.

        What a ``drop`` keeps it keeps (a trusted copy stamped at ``stamp`` or later). Only a trusted
        older copy is replaced: an untrusted one (below the floor after a resync, of another data set,
        unstamped as a sweep's tombstone) may be newer than ``record``, so it is dropped, as is a key
        held in neither tier or a record of another data set than ``epoch`` (``stamp``'s epoch id,
        the message's); nothing is copied while the listener is not subscribed. The mark moves,
        so a read in flight from before lands only if its copy is newer still.
        """
        memory = self._memory
        with self._locks[stripe]:
            data = self._disk.get(disk_key)
            held = self._trusted_seq(data) if stamp[1] == self.epoch else None
            if held is not None and held >= stamp[0]:
                return
            in_memory = memory.lookup(key) is not None
            copied = self._copy(disk_key, record, stamp) if self.listening and held is not None else None
            if copied is None:
                self._drop_locked(key, disk_key, stripe, held=data is not None)
                return
            self._land(key, stripe, copied, lambda: in_memory)  # tier 1 only where it held the key

    def absent(self, key: Key, disk_key: bytes, stripe: int, seen: Seen, *, held: bool) -> None:
        """Redis answered a read with no entry of ``key`` (or a damaged one): the read's miss is a change.

        The key's mark moves, so a copy fetched before (a read still in flight) never lands after this
        miss was answered; a copy held (``held``: the untrusted one the read found) or landed since
        ``seen`` is dropped. Without either, only the mark moves (no tier-2 read).
        """
        with self._locks[stripe]:
            slot = mark_slot(key)
            if held or self._marks[slot] != seen[2]:
                self._drop_locked(key, disk_key, stripe)
            else:
                self._marks[slot] += 1

    def _drop_locked(self, key: Key, disk_key: bytes, stripe: int, *, held: bool | None = None) -> None:
        """Drop ``key`` from both tiers (the lock held); ``held``: whether tier 2 has a copy, when known."""
        self._marks[mark_slot(key)] += 1
        memory = self._memory
        memory.begin_write(stripe, key)
        try:
            if held if held is not None else self._disk.get(disk_key) is not None:
                self._writes.delete(disk_key)
        finally:
            memory.discard(key, stripe)
