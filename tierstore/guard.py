"""The store's existence guard: a Bloom filter of keys known to exist, kept in the meta namespace.

The filter is saved as one meta record (``bloom``, the bytes of
``BloomFilter.to_bytes``). A second record, ``bloom_clean``, says the saved filter
is complete: it is written with the filter by a clean ``close()`` and removed as
soon as a session starts, by a guarded store (``Guard``) or an unguarded one
(``note_unguarded_open``: sets there add no keys). At open the saved filter is
trusted as is only when that record is there and the last session closed
cleanly; otherwise the filter is rebuilt from the saved one plus every key in
tier 2 (a crash loses the adds since the last save, but each of those keys was
written to tier 2 first).

Keys only ever join the filter: a deleted key stays admitted (a Bloom filter
never forgets), and the rebuild admits every key tier 2 holds, tombstones and
negative entries included. ``rebuild(keys)`` is the only way to shrink it.

Decisions (also in the README, "Decisions"):

* A saved filter whose capacity or error rate differ from the options is kept
  (it may hold keys from ``guard_keys`` that tier 2 cannot give back); an info
  message says so and ``rebuild`` resizes it.
* A saved filter that fails to decode (damaged) could have lost keys, and
  rejecting a key that exists would be a wrong answer, so the guard admits every
  key until ``rebuild`` is called: a warning, ``degraded`` is true, and the damaged
  record is left in place so the next open reports it again.
* ``rebuild(keys)`` sizes the new filter for ``max(capacity option, 2 * len(keys))``
  keys, so it has room to grow, with a new seed; keys set from the moment it is
  called until the swap are carried over, keys set before are not (the caller's
  ``keys`` are the source's truth).
* ``set`` of ``ABSENT`` (a negative entry) admits nothing: the source said no.
* ``guard_keys``/``rebuild_guard`` of a single str or bytes is a ``TypeError``
  (pass ``[key]``), not the iterable of its characters, nor silently one key:
  the call takes many keys, and guessing would hide the caller's mistake.
* Over capacity means the estimated error rate (from the bits actually set, so
  repeated sets of one key never count) is past twice the target: one warning
  per filter, and ``over_capacity`` for ``stats()``.
* Saves are batched: after ``save_every`` newly admitted keys (by default 1% of the
  capacity, at least 1000), in the background (the store's scheduler, ``defer``),
  not in the thread whose add crossed the line: a filter is megabytes, and that
  thread may run an event loop; a failed batch save is logged and retried at the
  next batch. ``save()``, ``guard_keys``
  and ``close()`` save at once. Saves use ``sync=False``: they survive a process
  crash, not a power cut.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator

from . import codec
from .bloom import BloomFilter, encode_keys
from .codec import Key
from .disk import DiskTier
from .errors import CorruptRecord, TierStoreError
from .keyspace import NS_ENTRY

__all__ = ["Guard", "open_guard", "guard_stats", "note_unguarded_open", "META_FILTER", "META_CLEAN"]

log = logging.getLogger("tierstore")

META_FILTER = b"bloom"
META_CLEAN = b"bloom_clean"
_DAMAGED = object()  # the filter record is there but does not decode
_LOST = object()  # the filter record a clean close saved is missing


def open_guard(disk: DiskTier, enabled: bool, capacity: int, error_rate: float) -> Guard | None:
    """The store's guard when ``enabled`` (``guard=True``: loaded or rebuilt), else ``None``."""
    if not enabled:
        note_unguarded_open(disk)  # sets in this session will not reach the filter
        return None
    return Guard(disk, capacity, error_rate)


def guard_stats(guard: Guard | None) -> dict[str, int]:
    """``guard_keys`` (keys admitted), ``guard_over_capacity`` and ``guard_degraded`` (0/1),
    ``guard_error_ppm`` (estimated false-positive rate, parts per million); zeros without a guard."""
    if guard is None:
        return {"guard_keys": 0, "guard_over_capacity": 0, "guard_degraded": 0, "guard_error_ppm": 0}
    return guard.stats()


def note_unguarded_open(disk: DiskTier) -> None:
    """Mark a saved filter incomplete when a store opens without the guard (one small read)."""
    if disk.get_meta(META_CLEAN, damaged=False) is not None:
        disk.put_meta(META_CLEAN, None)


class Guard:
    """Owns the store's ``BloomFilter``: loads or rebuilds it at open, records adds, saves in batches."""

    def __init__(self, disk: DiskTier, capacity: int, error_rate: float, *, save_every: int | None = None) -> None:
        self._disk = disk
        self._capacity = capacity
        self._error_rate = error_rate
        self._save_every = max(1000, capacity // 100) if save_every is None else save_every
        self._lock = threading.Lock()  # adds and change counts against a rebuild's swap
        self._save_lock = threading.Lock()  # one save at a time, so an older snapshot never lands last
        self._rebuild_lock = threading.Lock()  # one rebuild at a time: each owns the carry list
        self._carry: list[bytes] | None = None  # keys added while a rebuild runs
        self._changes = 0  # keys admitted (or filters swapped in) since the guard opened
        self._saved_changes = 0  # ``_changes`` as of the last save
        self._save_queued = False  # a batch save is queued or running
        # Runs a batch save in the background (the store's scheduler): the add that crosses the line
        # never writes the whole filter itself (megabytes: milliseconds on an event loop's thread).
        self.defer: Callable[[Callable[[], None]], None] | None = None
        self._warned = False
        self.over_capacity = False
        self.degraded = False
        self._filter = self._open()
        self._check_capacity()

    # -- opening ------------------------------------------------------------------------

    def _open(self) -> BloomFilter:
        saved = self._disk.get_meta(META_FILTER, damaged=_DAMAGED)
        clean_flag = self._disk.get_meta(META_CLEAN, damaged=False)  # damaged: the saved filter is incomplete
        complete = self._disk.was_clean and clean_flag is True
        if saved is None and clean_flag is True:
            # A clean close saved a filter that is gone, with keys only it knew. The flag
            # stays, so every open reports the loss until rebuild_guard() saves a filter.
            saved = _LOST
        elif clean_flag is not None:  # from here on the saved filter is incomplete until a clean close
            self._disk.put_meta(META_CLEAN, None)
        bloom = BloomFilter(self._capacity, self._error_rate) if saved is None else self._decode(saved)
        if bloom is None:
            self.degraded = True
            return BloomFilter(self._capacity, self._error_rate)
        if saved is None or not complete:
            self._changes = 1  # differs from what is saved
            bloom.update(self._stored_keys())
        return bloom

    def _stored_keys(self) -> Iterator[Key]:
        """Every key tier 2 holds; a key that does not decode is skipped (it reads as a miss anyway)."""
        for disk_key, _ in self._disk.scan(NS_ENTRY):
            try:
                yield codec.decode_key(disk_key[1:])
            except CorruptRecord:
                continue

    def _decode(self, saved: object) -> BloomFilter | None:
        try:
            if saved is _DAMAGED or saved is _LOST:
                raise ValueError("the record does not decode" if saved is _DAMAGED else "the record is missing")
            if not isinstance(saved, bytes):
                raise ValueError(f"the record is {type(saved).__name__}, not bytes")
            bloom = BloomFilter.from_bytes(saved)
        except ValueError as exc:
            log.warning(
                "%s: the saved existence filter is damaged (%s); every key is admitted until rebuild_guard()",
                self._disk.path,
                exc,
            )
            return None
        if (bloom.capacity, bloom.error_rate) != (self._capacity, self._error_rate):
            log.info(
                "%s: keeping the saved existence filter (capacity %d, error rate %g) over the options "
                "(%d, %g); rebuild_guard() resizes it",
                self._disk.path,
                bloom.capacity,
                bloom.error_rate,
                self._capacity,
                self._error_rate,
            )
        return bloom

    # -- keys -----------------------------------------------------------------------------

    def might_contain(self, key: Key) -> bool:
        """``False`` only for a key never admitted: the loader need not be asked."""
        return self.degraded or key in self._filter

    def add(self, key: Key) -> None:
        """Admit ``key``; saves when a batch of newly admitted keys is pending."""
        data = codec.encode_key(key)
        with self._lock:
            if not self._filter.add_encoded(data):
                return
            self._changes += 1
            if self._carry is not None:
                self._carry.append(data)
        self._after_adds()

    def add_many(self, keys: Iterable[Key]) -> None:
        """Admit every key (all validated first: a bad key changes nothing)."""
        encoded = encode_keys(keys)
        with self._lock:
            for data in encoded:
                self._changes += self._filter.add_encoded(data)
            if self._carry is not None:
                self._carry.extend(encoded)
        self._after_adds()

    def _after_adds(self) -> None:
        self._check_capacity()
        if self._changes - self._saved_changes >= self._save_every and not self._save_queued:
            self._save_queued = True
            defer = self.defer
            if defer is None:
                self._save_batch()
                return
            try:
                defer(self._save_batch)
            except TierStoreError:  # no background work any more (closing): the close saves
                self._save_queued = False

    def _save_batch(self) -> None:
        """A batch save (in the background when ``defer`` is set); a failure is retried at the next batch."""
        self._save_queued = False
        try:
            self.save()
        except TierStoreError as exc:
            log.warning("%s: saving the existence filter failed (retried later): %s", self._disk.path, exc)

    def _check_capacity(self) -> None:
        bloom = self._filter
        rate = bloom.estimated_error_rate()
        self.over_capacity = rate > 2 * bloom.error_rate
        if self.over_capacity and not self._warned:
            self._warned = True
            log.warning(
                "%s: the existence filter is over capacity (%d keys for %d; estimated error rate %.4f, target %g); "
                "rebuild_guard() replaces it with one sized for its keys",
                self._disk.path,
                len(bloom),
                bloom.capacity,
                rate,
                bloom.error_rate,
            )

    def rebuild(self, keys: Iterable[Key]) -> None:
        """Replace the filter with one of ``keys`` (plus keys set meanwhile) and save it."""
        with self._rebuild_lock:
            self._replace(keys)
        self._warned = False
        self._check_capacity()
        self.save()

    def _replace(self, keys: Iterable[Key]) -> None:
        carry: list[bytes] = []
        with self._lock:
            self._carry = carry
        try:
            encoded = encode_keys(keys)
            bloom = BloomFilter(max(self._capacity, 2 * len(encoded)), self._error_rate)
            for data in encoded:
                bloom.add_encoded(data)
            with self._lock:
                for data in carry:
                    bloom.add_encoded(data)
                self._filter = bloom
                self._changes += 1
                self.degraded = False
        finally:
            self._carry = None

    # -- saving ---------------------------------------------------------------------------

    def save(self, *, clean: bool = False) -> None:
        """Write the filter to the meta namespace if it changed since the last save.

        ``clean`` (at close) also marks the saved filter complete. A degraded guard
        saves nothing, so its damaged record keeps reporting itself until a rebuild.
        """
        if self.degraded:
            return
        with self._save_lock:
            with self._lock:
                bloom = self._filter
                changes = self._changes
            ops = []
            if changes != self._saved_changes:
                ops.append(self._disk.meta_op(META_FILTER, bloom.to_bytes()))
            if clean:
                ops.append(self._disk.meta_op(META_CLEAN, True))
            if ops:
                self._disk.write(ops)
            self._saved_changes = changes

    def close(self) -> None:
        """Save the filter and mark it complete; a failure is logged (the next open rebuilds)."""
        try:
            self.save(clean=True)
        except TierStoreError as exc:
            log.error(
                "%s: could not save the existence filter at close (rebuilt at next open): %s", self._disk.path, exc
            )

    # -- introspection ----------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """What ``guard_stats`` reports for this guard (the shared tier's guard reads it from Redis)."""
        bloom = self._filter
        return {
            "guard_keys": len(bloom),
            "guard_over_capacity": int(self.over_capacity),
            "guard_degraded": int(self.degraded),
            "guard_error_ppm": round(bloom.estimated_error_rate() * 1_000_000),
        }

    @property
    def filter(self) -> BloomFilter:
        """The live filter (replaced by ``rebuild``)."""
        return self._filter

    @property
    def pending(self) -> int:
        """Changes not yet saved (newly admitted keys, plus one for a filter never saved)."""
        return self._changes - self._saved_changes
