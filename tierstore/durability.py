"""Durability: checkpoints, the disk capacity and sweeping, wired for one store.

The store builds one ``Durability`` over its open directory. At open it makes
the checkpointer (with a ``persist_path``), the capacity tracker (with
``disk_capacity_bytes``), the expiry index (built once for a store from before
it, or restored from a checkpoint, which never carries its completeness mark)
and the sweeper; ``schedule`` starts the timers of automatic checkpoints and
sweeps; ``close`` saves the capacity total and takes the final checkpoint.

Past the capacity, a write asks for an eviction, which runs in the background
rather than on the writer's thread. Thread-safety: ``checkpoint`` and
``sweep`` may be called from any thread (the checkpointer and the sweeper each
run one pass at a time); the counts they add to the stats are exact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .capacity import Capacity, open_capacity
from .checkpoint import STAT_KEYS as PERSIST_STAT_KEYS
from .checkpoint import Checkpointer, TrackedDisk
from .codec import Key
from .disk import DiskTier
from .errors import StoreClosed, TierStoreError
from .expiry import ensure_index
from .guard import Guard
from .memory import MemoryTier
from .options import Options
from .scheduler import Scheduler
from .stats import Stats
from .stripes import Stripes
from .sweep import STAT_KEYS as SWEEP_STAT_KEYS
from .sweep import Sweeper

__all__ = ["Durability"]

log = logging.getLogger("tierstore")

_SWEEP_STATS = ("expired_purged", "swept_tombstones", "evictions_disk")


class Durability:
    """The checkpointer, the capacity and the sweeper of one store, and the stats they count in."""

    def __init__(
        self,
        disk: DiskTier,
        options: Options,
        *,
        path: str,
        restored: bool,
        stats: Stats,
        scheduler: Scheduler,
        memory: MemoryTier,
        stripes: Stripes,
    ) -> None:
        self._path = path
        self._options = options
        self._stats = stats
        self._scheduler = scheduler
        self._memory = memory
        self._stripes = stripes
        stats.declare(PERSIST_STAT_KEYS + SWEEP_STAT_KEYS + ("restored_from_checkpoint",))
        stats.add("restored_from_checkpoint", int(restored))
        self.checkpointer: Checkpointer | None = None
        if options.persist_path is not None:
            assert isinstance(disk, TrackedDisk)
            self.checkpointer = Checkpointer(disk, str(options.persist_path), rate=options.persist_rate)
        self.capacity: Capacity | None = open_capacity(disk, options.disk_capacity_bytes)
        ensure_index(disk)  # a store from before the expiry index, or restored: one scan builds it
        self._sweeper = Sweeper(
            disk,
            clock=options.clock,
            stale_ttl=options.stale_ttl,
            tombstone_ttl=options.tombstone_ttl,
            lock_for=stripes.lock_for,
            begin=self._begin_write_of,
            forget=self._forget,
            capacity=self.capacity,
        )
        if self.capacity is not None:
            self.capacity.on_over = self._evict_soon

    def schedule(self, checkpoint: Callable[[], object], sweep: Callable[[], object]) -> None:
        """Start the timers: ``checkpoint`` every ``checkpoint_interval`` (with a ``persist_path``),
        ``sweep`` every ``sweep_interval``. They are the store's own calls, which check it is open."""
        options = self._options
        if self.checkpointer is not None and options.checkpoint_interval is not None:
            self._scheduler.every(options.checkpoint_interval, checkpoint)
        if options.sweep_interval is not None:
            self._scheduler.every(options.sweep_interval, sweep)

    def _begin_write_of(self, key: Key) -> None:
        self._memory.begin_write(self._stripes.of(key), key)

    def _forget(self, key: Key) -> None:
        self._memory.discard(key, self._stripes.of(key))

    def _evict_soon(self) -> None:
        """Past the capacity: evict in the background rather than on the writer's thread."""
        try:
            self._scheduler.submit(self._evict)
        except StoreClosed:
            pass

    def _evict(self) -> None:
        self._count_sweep(self._sweeper.evict())

    def checkpoint(self, guard: Guard | None) -> dict[str, Any]:
        """Save the filter (so the checkpoint carries one as new as its entries), then checkpoint."""
        if self.checkpointer is None:
            raise TierStoreError("checkpoint() needs a persist_path; this store has none")
        if guard is not None:
            guard.save()
        return self._record_checkpoint(self.checkpointer.checkpoint())

    def _record_checkpoint(self, result: dict[str, Any]) -> dict[str, Any]:
        self._stats.counts["checkpoints"]()
        self._stats.add("checkpoint_ms", int(result["seconds"] * 1000))
        return result

    def sweep(self) -> dict[str, int]:
        """One sweep: purge what expired, then evict down to the capacity."""
        return self._count_sweep(self._sweeper.sweep())

    def _count_sweep(self, counts: dict[str, int]) -> dict[str, int]:
        for name in _SWEEP_STATS:
            self._stats.add(name, counts[name])
        return counts

    def close(self) -> None:
        """At close: save the capacity total, then take the final checkpoint (logged if it fails)."""
        path = self._path
        if self.capacity is not None:
            try:
                self.capacity.save()
            except TierStoreError:
                log.exception("%s: could not save the capacity total; the next open recounts it", path)
        if self.checkpointer is not None:
            try:
                self._record_checkpoint(self.checkpointer.finish())
            except Exception:
                log.exception("%s: the final checkpoint into %s failed", path, self.checkpointer.path)
