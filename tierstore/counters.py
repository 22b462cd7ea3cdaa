"""Atomic, durable counters in their own LevelDB namespace.

A counter is one record ``NS_COUNTER + encode_key(key)`` whose value is the
count as a msgpack int. Counters are signed 64-bit: an update that would leave
``[-2**63, 2**63 - 1]`` raises ``OverflowError`` and changes nothing. A counter
never touched reads 0.

Updates are a read-modify-write under one of the store's striped locks (the
stripe is chosen by the encoded key; see ``stripes``), so concurrent ``incr`` calls in one
process never lose an update; the LevelDB lock keeps other processes out. The
write goes to LevelDB's log like every store write (survives a process crash;
``close()`` flushes).
"""

from __future__ import annotations

import msgpack

from .codec import Key, decode_key, encode_key
from .disk import DiskTier
from .errors import CorruptRecord, shown
from .keyspace import NS_COUNTER
from .stripes import Stripes

__all__ = ["Counters", "COUNTER_MIN", "COUNTER_MAX", "counter_key", "counter_name", "decode_count"]

COUNTER_MIN = -(2**63)
COUNTER_MAX = 2**63 - 1


def counter_key(key: object) -> bytes:
    """The LevelDB key of the counter ``key``."""
    return NS_COUNTER + encode_key(key)


def counter_name(disk_key: bytes) -> Key:
    """The counter a LevelDB key names (invert ``counter_key``); raises as ``decode_key`` does."""
    return decode_key(disk_key[len(NS_COUNTER) :])


def decode_count(disk_key: bytes, data: bytes) -> int:
    """The count a counter record holds; ``CorruptRecord`` when it is not a msgpack int."""
    try:
        value = msgpack.unpackb(data)
    except Exception:  # msgpack raises several unrelated types on bad input
        value = None
    if type(value) is not int:
        raise CorruptRecord(f"counter record {disk_key!r} is corrupt")
    return value


def _check_delta(delta: object) -> int:
    if not isinstance(delta, int) or isinstance(delta, bool):
        raise TypeError(f"counter delta must be an int, not {type(delta).__name__}")
    return delta


class Counters:
    """The counters of one store: ``incr``, ``decr`` and ``get``."""

    def __init__(self, disk: DiskTier, stripes: Stripes | None = None) -> None:
        self._disk = disk
        self._stripes = stripes if stripes is not None else Stripes()

    def incr(self, key: object, delta: int = 1) -> int:
        """Add ``delta`` to the counter ``key`` and return the new count."""
        return self._add(key, _check_delta(delta))

    def decr(self, key: object, delta: int = 1) -> int:
        """Subtract ``delta`` from the counter ``key`` and return the new count."""
        return self._add(key, -_check_delta(delta))

    def get(self, key: object) -> int:
        """The current count of ``key``; 0 for a counter never touched."""
        return self._read(counter_key(key))

    def _add(self, key: object, delta: int) -> int:
        disk_key = counter_key(key)
        with self._stripes.lock_for(disk_key):
            value = self._read(disk_key) + delta
            if not COUNTER_MIN <= value <= COUNTER_MAX:
                raise OverflowError(f"counter {key!r} would become {shown(value)}, outside the signed 64-bit range")
            self._disk.put(disk_key, msgpack.packb(value))
            return value

    def _read(self, disk_key: bytes) -> int:
        """The stored count; 0 when there is no record, an error when it is damaged (never a silent 0)."""
        data = self._disk.get(disk_key)
        return 0 if data is None else decode_count(disk_key, data)
