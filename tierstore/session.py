"""What an open derives from a store directory, and what a close saves back to it.

Two pieces of state outlive a session in meta records: the write sequence's
high-water mark (``seq``, saved at a clean close) and whether any entry may
carry a version (``versioned``, written by the writer before the first
versioned entry). Both are derived state: a damaged or missing record is
logged and read as its safe assumption, never stopping an open.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator

import msgpack

from . import codec
from .disk import DiskTier
from .keyspace import META_SEQ, META_VERSIONED, NS_ENTRY

__all__ = ["next_sequence", "save_sequence", "holds_versions"]

log = logging.getLogger("tierstore")

# Sequences are packed in 64 bits; one saved past 2**62 (146,000 years of
# microseconds) did not come from a clock: damaged, and it would overflow.
_MAX_SAVED_SEQ = 2**62


def next_sequence(disk: DiskTier) -> Iterator[int]:
    """A store-wide write counter that stays ahead of every sequence written before.

    It starts at the wall clock in microseconds or past the high-water mark saved at
    the last clean close, whichever is larger: no store writes a million records a
    second for long, so even after a crash new writes sort after old ones.
    Thread-safety: ``next()`` on an ``itertools.count`` is one C call.
    """
    now = time.time_ns() // 1000
    saved = disk.get_meta(META_SEQ)
    if type(saved) is not int or not 0 <= saved <= _MAX_SAVED_SEQ:
        if saved is not None:
            log.warning("%s: the saved write sequence %r is impossible; restarting it from the clock", disk.path, saved)
        saved = 0
    return itertools.count(max(saved, now) + 1)


def save_sequence(disk: DiskTier, sequence: Iterator[int]) -> None:
    """Save the high-water mark of ``sequence`` (at close: the next open starts past it)."""
    disk.put_meta(META_SEQ, next(sequence))


def holds_versions(disk: DiskTier) -> bool:
    """Whether an entry of the store may carry a version above 0 (unversioned writes then read it).

    The ``versioned`` record says so. When it is damaged the answer is ``True``
    (safe); when it is missing (a new store, or one that lost it) one scan of
    the entries decides and records the answer.
    """
    saved = disk.get_meta(META_VERSIONED, damaged=True)
    if type(saved) is bool:
        return saved
    if saved is not None:
        log.warning("%s: the meta record 'versioned' holds %r; assuming the store holds versions", disk.path, saved)
        return True
    versioned = any(envelope_version(data) for _, data in disk.scan(NS_ENTRY))
    disk.put_meta(META_VERSIONED, versioned)
    return versioned


def envelope_version(data: bytes) -> int:
    """The version field of an entry envelope (``codec``'s layout: its second field), read without decoding
    the value; 0 for a damaged one. Tied to ``codec.unpack_record`` by tests/property/test_inlined_layout.py."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    try:
        unpacker.read_array_header()
        unpacker.skip()  # the format
        version = unpacker.unpack()
    except Exception:  # msgpack raises several unrelated types; a damaged envelope keeps no version
        return 0
    return version if type(version) is int and 0 <= version <= codec.MAX_VERSION else 0
