"""Copying records into a checkpoint LevelDB: throttled write batches and the merge of a full resync.

``CopyWriter`` is how every record reaches ``persist_path``: in batches of a
bounded size, at most ``rate`` bytes per second. ``merge`` is what a full
resynchronisation writes: both key orders walked side by side, writing what
differs and deleting what the working directory no longer has. Separate from
``checkpoint`` (which decides what a checkpoint copies, and when) so that
module holds the procedure and this one the writing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from .checkpoint_record import CHECKPOINT_RECORD, WORKING_ONLY
from .keyspace import Op

__all__ = ["CopyWriter", "merge"]

_BATCH_OPS = 1000
_BATCH_BYTES = 1 << 20


class CopyWriter:
    """Batches of puts and deletes into the checkpoint LevelDB, throttled to ``rate`` bytes/s.

    ``on_flush`` runs after each batch is written (the checkpoint's test hook).
    """

    def __init__(self, db: Any, rate: float | None, on_flush: Callable[[], None] | None = None) -> None:
        self._db = db
        self._rate = rate
        self._on_flush = on_flush
        self._ops: list[Op] = []
        self._pending = 0
        self._started = time.monotonic()
        self.puts = 0
        self.deletes = 0
        self.bytes = 0

    def put(self, key: bytes, value: bytes) -> None:
        self._ops.append((key, value))
        self.puts += 1
        self._grow(len(key) + len(value))

    def delete(self, key: bytes) -> None:
        self._ops.append((key, None))
        self.deletes += 1
        self._grow(len(key))

    def _grow(self, size: int) -> None:
        self._pending += size
        self.bytes += size
        if len(self._ops) >= _BATCH_OPS or self._pending >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the pending batch, then sleep as long as the copy is ahead of ``rate``."""
        if not self._ops:
            return
        with self._db.write_batch() as batch:
            for key, value in self._ops:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
        self._ops = []
        self._pending = 0
        if self._on_flush is not None:
            self._on_flush()
        if self._rate is not None:
            ahead = self._started + self.bytes / self._rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def merge(source: Iterator[tuple[bytes, bytes]], target: Iterator[tuple[bytes, bytes]], writer: CopyWriter) -> int:
    """Full resync: walk both key orders, write what differs, delete what is gone; returns source records seen.

    ``WORKING_ONLY`` records are never copied (and deleted from the target), and
    the target's checkpoint record is left to the checkpoint that writes it.
    """
    scanned = 0
    src = next(source, None)
    dst = next(target, None)
    while src is not None or dst is not None:
        if dst is None or (src is not None and src[0] < dst[0]):
            assert src is not None
            scanned += 1
            if src[0] not in WORKING_ONLY:
                writer.put(src[0], src[1])
            src = next(source, None)
        elif src is None or dst[0] < src[0]:
            if dst[0] != CHECKPOINT_RECORD:
                writer.delete(dst[0])
            dst = next(target, None)
        else:
            scanned += 1
            if src[0] in WORKING_ONLY:
                writer.delete(src[0])
            elif src[1] != dst[1]:
                writer.put(src[0], src[1])
            src = next(source, None)
            dst = next(target, None)
    return scanned
