"""Key-range passes for sorted indexes: a page with skip and limit, a count, a probe, a purge.

Each pass reads through ``DiskTier.chunks``, a chunk per pass through the disk
gate, so a long read never holds ``close()`` up; ``snapshot_get`` is the
single-key read, through the gate too. These are the index's reads and
deletes below its lock and meta record; separate from ``ranking`` so that
module holds only ``SortedIndex`` and its rules, and shared with
``index_repair``, which probes a generation when it checks a meta record.
"""

from __future__ import annotations

from typing import Any

from .disk import DiskTier
from .keyspace import prefix_end

__all__ = ["READ_CHUNK", "snapshot_get", "take_keys", "count_keys", "any_key", "purge_prefix"]

READ_CHUNK = 1024  # keys per read pass


def snapshot_get(disk: DiskTier, snapshot: Any, key: bytes) -> bytes | None:
    """One key's value in ``snapshot``, read through the disk gate (``None`` when absent)."""
    disk.enter()
    try:
        value: bytes | None = snapshot.get(key)
        return value
    finally:
        disk.exit()


def take_keys(
    disk: DiskTier,
    snapshot: Any,
    lower: bytes,
    upper: bytes | None,
    *,
    reverse: bool,
    skip: int,
    limit: int | None,
    exclude_lower: bool = False,
) -> list[bytes]:
    """Skip ``skip`` keys of the range, then return up to ``limit`` (None: all)."""
    first = READ_CHUNK if limit is None else max(1, min(skip + limit, READ_CHUNK))
    out: list[bytes] = []
    for chunk in disk.chunks(
        snapshot, lower, upper, reverse=reverse, exclude_lower=exclude_lower, include_value=False, size=first
    ):
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        end = None if limit is None else skip + limit - len(out)
        out.extend(chunk[skip:end])
        skip = 0
        if limit is not None and len(out) >= limit:
            break
    return out


def count_keys(disk: DiskTier, snapshot: Any, lower: bytes, upper: bytes) -> int:
    """How many keys ``[lower, upper)`` holds in ``snapshot``; O(n), as it reads them."""
    chunks = disk.chunks(snapshot, lower, upper, include_value=False, size=READ_CHUNK)
    return sum(len(keys) for keys in chunks)


def any_key(disk: DiskTier, prefix: bytes) -> bool:
    """Whether any key starts with ``prefix`` (read from a snapshot of its own)."""
    snapshot = disk.snapshot()
    try:
        chunks = disk.chunks(snapshot, prefix, prefix_end(prefix), include_value=False, size=1)
        return next(chunks, None) is not None
    finally:
        disk.release(snapshot)


def purge_prefix(disk: DiskTier, prefix: bytes) -> None:
    """Delete every record whose key starts with ``prefix``, a write batch per chunk read."""
    snapshot = disk.snapshot()
    try:
        chunks = disk.chunks(snapshot, prefix, prefix_end(prefix), include_value=False, size=READ_CHUNK * 4)
        for keys in chunks:
            disk.write([(key, None) for key in keys])
    finally:
        disk.release(snapshot)
