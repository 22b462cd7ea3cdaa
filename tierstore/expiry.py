"""The expiry index: which entries fall due when, so a sweep reads only what is due.

One record per entry that carries an expiry (entries with a TTL, negative
entries, tombstones)::

    NS_EXPIRY + time(due) + entry key  ->  time(expires_at)

``time`` is an order-preserving 8-byte encoding of a float (IEEE 754 big
endian, the sign bit flipped for positive numbers and every bit flipped for
negative ones; ``-0.0`` is stored as ``0.0``), so the records sort by due time,
negative times (an injected clock) included. The value is the entry's
``expires_at``: a record indexes the entry only while the entry's
``expires_at`` encodes to it. ``due`` is ``expires_at`` when the entry is
written; the sweep moves a record it finds early (an entry inside its stale
window) to the moment the entry becomes purgeable.

Decisions (also in the README, "Decisions"):

- The record is written strictly before its entry: a ``put`` of its own just
  ahead of the entry's (cheaper here than a two-record batch; see ``writes``).
  LevelDB applies writes in order, so a crash never keeps an entry without its
  record; one between the two puts keeps a record without its entry (or naming
  the entry's previous ``expires_at``), which the sweep drops. Entries without
  an expiry keep their single ``put``: they cost nothing more.
- Records are never deleted at write time: that would need a read of the old
  entry on every unversioned ``set``. A rewrite or a delete leaves the old
  record behind (an eviction deletes it: it has the entry in hand); the sweep
  that reaches it finds the entry gone or its ``expires_at`` different and
  deletes the record only. Such garbage is bounded by the writes of entries with
  an expiry, each dropped by the first sweep after its time.
- The namespace byte sorts before the entries', so a checkpoint, which copies
  changed keys in key order, writes a record no later than its entry.
- A store whose index is complete says so with a meta record. At open, when it is
  missing (a store written before the index existed, a damaged record, or any
  restore: checkpoints never carry it, since a checkpoint killed half way may
  hold entries without their records), one scan of the entries writes a record
  for each entry with an expiry, then the meta record: a one-time O(entries)
  migration. A store later written by a tierstore older than the index would
  keep the meta record while adding entries without records: delete the meta
  record to rebuild.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from typing import NamedTuple

import msgpack

from .codec import decode_key
from .disk import DiskTier
from .errors import CorruptRecord
from .keyspace import META_EXPIRY_INDEX, NS_ENTRY, NS_EXPIRY, Op, prefix_end

__all__ = [
    "IndexRecord",
    "encode_time",
    "decode_time",
    "index_key",
    "index_op",
    "index_disk_key",
    "decode_index_record",
    "due_records",
    "envelope_expiry",
    "build_index",
    "ensure_index",
]

log = logging.getLogger("tierstore")

_DOUBLE = struct.Struct(">d")
_BITS = struct.Struct(">Q")
_TIME_BYTES = 8
_SIGN = 1 << 63
_ALL = (1 << 64) - 1
_BATCH = 1000


def encode_time(seconds: float) -> bytes:
    """8 bytes that sort as the times do (NaN aside); ``-0.0`` encodes as ``0.0``."""
    (bits,) = _BITS.unpack(_DOUBLE.pack(seconds + 0.0))
    return _BITS.pack(bits ^ _ALL if bits & _SIGN else bits | _SIGN)


def decode_time(data: bytes) -> float:
    """Invert ``encode_time``."""
    (bits,) = _BITS.unpack(data)
    value: float = _DOUBLE.unpack(_BITS.pack(bits ^ _SIGN if bits & _SIGN else bits ^ _ALL))[0]
    return value


def index_key(due: bytes, disk_key: bytes) -> bytes:
    """The index record's key for the entry ``disk_key``, due at the encoded time ``due``."""
    return NS_EXPIRY + due + disk_key


def index_op(disk_key: bytes, expires_at: float, due: float | None = None) -> tuple[bytes, bytes]:
    """The put of the index record of entry ``disk_key`` expiring at ``expires_at`` (due then, or at ``due``)."""
    expires = encode_time(expires_at)
    return index_key(expires if due is None else encode_time(due), disk_key), expires


def index_disk_key(ikey: bytes) -> bytes:
    """The entry key an index record's key names (checks nothing)."""
    return ikey[1 + _TIME_BYTES :]


class IndexRecord(NamedTuple):
    """A decoded index record: when it is due, the entry it names, the entry's ``expires_at``."""

    due: float
    disk_key: bytes
    expires_at: float


def decode_index_record(ikey: bytes, value: bytes) -> IndexRecord:
    """Decode and check an index record; ``CorruptRecord`` when no store could have written it."""
    disk_key = index_disk_key(ikey)
    if ikey[:1] != NS_EXPIRY or len(ikey) < 1 + _TIME_BYTES or disk_key[:1] != NS_ENTRY:
        raise CorruptRecord("expiry index key does not name an entry")
    decode_key(disk_key[1:])
    if len(value) != _TIME_BYTES:
        raise CorruptRecord("expiry index value is not 8 bytes")
    due, expires_at = decode_time(ikey[1 : 1 + _TIME_BYTES]), decode_time(value)
    if due != due or expires_at != expires_at:
        raise CorruptRecord("expiry index time is NaN")
    if due < expires_at:
        raise CorruptRecord("expiry index record is due before its entry expires")
    return IndexRecord(due, disk_key, expires_at)


def due_records(disk: DiskTier, now: float) -> Iterator[tuple[bytes, bytes]]:
    """The index records due at or before ``now``, in due order, from one snapshot, in chunks."""
    return disk.scan(NS_EXPIRY, stop=prefix_end(NS_EXPIRY + encode_time(now)))


def envelope_expiry(data: bytes) -> float | None:
    """The ``expires_at`` of an entry envelope, read without decoding its value; None when it has none
    or the envelope is damaged (a damaged entry is never indexed: it reads as a miss)."""
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    try:
        if unpacker.read_array_header() < 9:
            return None
        unpacker.skip()  # the format
        unpacker.skip()  # the version
        expires_at = unpacker.unpack()
    except Exception:  # msgpack raises several unrelated types on bad input
        return None
    if type(expires_at) not in (int, float) or expires_at != expires_at:
        return None
    try:
        return float(expires_at)
    except OverflowError:  # an int no store writes
        return None


def build_index(disk: DiskTier) -> int:
    """Write the index record of every entry with an expiry (one scan); returns how many."""
    ops: list[Op] = []
    count = 0
    for disk_key, data in disk.scan(NS_ENTRY):
        expires_at = envelope_expiry(data)
        if expires_at is None:
            continue
        ops.append(index_op(disk_key, expires_at))
        count += 1
        if len(ops) >= _BATCH:
            disk.write(ops)
            ops = []
    disk.write(ops)
    return count


def ensure_index(disk: DiskTier) -> int | None:
    """At open: build the index unless the meta record says it is complete.

    Returns the records written by the migration, or None when there was none.
    The meta record is written last, so a migration cut short runs again.
    """
    if disk.get_meta(META_EXPIRY_INDEX) is True:  # a damaged record reads as None: rebuilt
        return None
    count = build_index(disk)
    disk.put_meta(META_EXPIRY_INDEX, True, sync=True)
    if count:  # a new store has nothing to index: nothing to say
        log.info("%s: built the expiry index: %d entries with an expiry (once, or after a restore)", disk.path, count)
    return count
