"""What ``tierstore inspect`` reports about a directory: a census of every record, and the directory's facts.

The census is one streamed pass that counts records by namespace and entries
by state, and lists the indexes; the facts (checkpoint or working directory,
clean shutdown, last sequence, the saved filter, the checkpoint record, the
expiry index's completeness, file sizes) each read one meta record or the file
listing. It is separate from ``reader``, which opens a directory and decodes
the records the other commands show: this module only summarizes, on top of
those decoders.
"""

from __future__ import annotations

import os
from typing import Any

from .bloom import BloomFilter
from .checkpoint_record import CHECKPOINT_RECORD, META_CHECKPOINT_GENERATION, checkpoint_info
from .errors import CorruptRecord
from .guard import META_CLEAN, META_FILTER
from .keyspace import META_EXPIRY_INDEX, META_OPEN, META_SEQ, NAMESPACES, NS_ENTRY, NS_INDEX_META, meta_key
from .reader import STATES, IndexInfo, Tick, classify, decode_bloom, index_info, namespace_name, read_meta

__all__ = [
    "Census",
    "take_census",
    "is_checkpoint",
    "clean_shutdown",
    "last_seq",
    "read_bloom",
    "bloom_complete",
    "read_checkpoint",
    "checkpoint_generation",
    "expiry_index_complete",
    "disk_usage",
]


class Census:
    """What one pass over every record counts."""

    def __init__(self) -> None:
        self.states = dict.fromkeys(STATES, 0)
        self.entry_bytes = 0
        self.namespaces: dict[str, list[int]] = {}
        self.indexes: list[IndexInfo] = []
        self.corrupt_indexes = 0

    def add(self, raw_key: bytes, data: bytes, now: float) -> None:
        counts = self.namespaces.setdefault(namespace_name(raw_key), [0, 0])
        counts[0] += 1
        counts[1] += len(raw_key) + len(data)
        namespace = raw_key[:1]
        if namespace == NS_ENTRY:
            self.states[classify(raw_key, data, now).state] += 1
            self.entry_bytes += len(raw_key) + len(data)
        elif namespace == NS_INDEX_META:
            self.add_index(raw_key, data)

    def add_index(self, raw_key: bytes, data: bytes) -> None:
        try:
            self.indexes.append(index_info(raw_key, data))
        except (CorruptRecord, ValueError):
            self.corrupt_indexes += 1

    def count(self, namespace: bytes) -> int:
        return self.namespaces.get(NAMESPACES[namespace], [0])[0]


def take_census(db: Any, now: float, tick: Tick) -> Census:
    """Count every record in one streamed pass."""
    census = Census()
    for count, (raw_key, data) in enumerate(db.iterator(fill_cache=False)):
        tick(count)
        census.add(raw_key, data, now)
    return census


def is_checkpoint(db: Any) -> bool:
    """Whether the directory is a checkpoint (checkpoint.py's record) rather than a working directory."""
    return db.get(CHECKPOINT_RECORD) is not None


def clean_shutdown(db: Any) -> bool:
    """Whether the last session closed cleanly (disk.py's session marker is gone)."""
    return db.get(meta_key(META_OPEN)) is None


def last_seq(db: Any) -> int | None:
    """The write sequence saved at the last clean close."""
    seq = read_meta(db, META_SEQ)
    return seq if type(seq) is int else None


def read_bloom(db: Any) -> BloomFilter | None:
    """The saved existence filter (guard.py's meta record); ``ValueError`` when it is damaged."""
    saved = read_meta(db, META_FILTER)
    return None if saved is None else decode_bloom(saved)


def bloom_complete(db: Any) -> bool:
    """Whether the saved filter holds every key (as guard.py judges it at open)."""
    return read_meta(db, META_CLEAN) is True and clean_shutdown(db)


def read_checkpoint(db: Any) -> dict[str, Any] | None:
    """What the checkpoint record of a checkpoint directory says (``{}`` if damaged); None elsewhere."""
    raw = db.get(CHECKPOINT_RECORD)
    return None if raw is None else checkpoint_info(raw)


def checkpoint_generation(db: Any) -> Any:
    """The generation of the checkpoint a working directory took at its last clean close, or None."""
    return read_meta(db, META_CHECKPOINT_GENERATION)


def expiry_index_complete(db: Any) -> bool:
    """Whether the expiry index holds every entry with an expiry (expiry.py's meta record); if not,
    the store's next open builds it with one scan. A checkpoint never says so: a restore rebuilds it."""
    return read_meta(db, META_EXPIRY_INDEX) is True


def disk_usage(path: str) -> dict[str, int]:
    """Bytes and count of the files in the directory.

    LevelDB's own compaction (in the process that holds the directory open, this
    one included) may delete a table between listing and stat: such a file no
    longer counts.
    """
    total = files = 0
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                    files += 1
            except FileNotFoundError:
                continue
    return {"bytes": total, "files": files}
