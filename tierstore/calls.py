"""The public calls of ``TierStore`` that check the store is open and hand on to one part.

``TierStore`` inherits ``PartCalls``, so ``help(TierStore)`` and IDEs show these
calls as the store's own, with their signatures and docstrings, and they cost
no extra frame: loading (``loading.py``), the existence guard (``guard.py``),
counters (``counters.py``), sorted indexes and their refreshers
(``ranking.py``), checkpoints and sweeps (``durability.py``), and ``stats``. The class holds
no state and builds nothing: the store assigns the parts declared below when it
opens. It never imports the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from .clock import TTL, check_seconds
from .codec import Key, encode_key
from .counters import Counters
from .disk import DiskTier
from .durability import Durability
from .errors import CorruptRecord, StoreClosed, TierStoreError
from .guard import Guard, guard_stats
from .keyspace import fast_entry_key
from .leveldb import forked_error
from .loading import Loading
from .memoize import Cached, memoizer
from .memory import MemoryTier
from .ranking import DEFAULT_REFRESH_INTERVAL, IndexRefresher, Pairs, SortedIndex
from .scheduler import Handle, Scheduler
from .stats import Stats

__all__ = ["PartCalls", "OnBusy"]

OnBusy = Literal["wait", "stale", "default"]
_P = ParamSpec("_P")
_R = TypeVar("_R")
_Self = TypeVar("_Self", bound="PartCalls")


class PartCalls:
    """The store's calls that hand on to a part; the store sets these attributes when it opens."""

    path: str
    _closed: bool
    _forked: bool
    _stats: Stats
    _disk: DiskTier
    _scheduler: Scheduler
    _loading: Loading
    _guard: Guard | None
    _counters: Counters
    _indexes: dict[Key, SortedIndex]
    _make_index: Callable[[Key], SortedIndex]
    _indexes_lock: threading.Lock
    _durability: Durability
    _memory: MemoryTier

    if TYPE_CHECKING:

        def delete_prefix(self, prefix: Key) -> int: ...

        def close(self) -> None: ...

        def _count_corrupt(self, disk_key: bytes, exc: CorruptRecord) -> None: ...

    def stats(self) -> dict[str, int]:
        """Counters of what the store did since it was opened."""
        if self._forked:
            raise self._unusable()
        stats = self._stats.snapshot()
        stats["evictions_memory"] = self._memory.evictions
        stats["memory_items"] = len(self._memory)
        stats["memory_bytes"] = self._memory.bytes
        stats.update(guard_stats(self._guard))
        return stats

    def report_corrupt(self, key: Key, reason: str) -> None:
        """Count a value of ``key`` that a caller's own check refused (a forged or damaged payload).

        For layers that keep their own format inside values (the Django backend's signed
        pickles): the value reads as a miss to them, and here it is counted in
        ``stats()["corrupt_records"]`` and logged like a damaged record.
        """
        if self._closed:
            raise self._unusable()
        self._count_corrupt(fast_entry_key(key), CorruptRecord(reason))

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self: _Self) -> _Self:
        if self._forked:
            raise self._unusable()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"TierStore({self.path!r}, {state})"

    def _unusable(self) -> TierStoreError:
        """The error of a call on a closed store, or on one inherited by a forked child."""
        if self._forked:
            return forked_error(self.path)
        return StoreClosed(f"store {self.path} is closed")

    # -- loading: get_or_load, recomputation, background work (loading.py) ------------

    def get_or_load(
        self,
        key: Key,
        loader: Callable[[], Any],
        *,
        ttl: TTL = ...,
        on_busy: OnBusy = "wait",
        wait_timeout: float | None = None,
        default: Any = None,
    ) -> Any:
        """The value of ``key``; on a miss ``loader()`` runs once across callers and fills both tiers.

        While another caller loads the key, ``on_busy`` decides: ``"wait"`` for its
        result (``LoadTimeout`` past ``wait_timeout`` seconds), ``"stale"`` returns a
        stale value at once when there is one, ``"default"`` returns ``default``.
        ``None`` or ``ABSENT`` from the loader stores a negative entry and returns
        ``default``; ``Versioned(value, version)`` stamps the version. The full rules
        (fills dropped after a write, refresh-ahead, XFetch, stats) are in ``tierstore.loading``.
        """
        if self._closed:
            raise self._unusable()
        return self._loading.get_or_load(key, loader, ttl, on_busy, wait_timeout, default)

    def refresh_every(self, key: Key, loader: Callable[[], Any], interval: float, *, ttl: TTL = ...) -> Handle:
        """Recompute ``key`` with ``loader()`` every ``interval`` seconds in the background.

        The first load is queued at once (``drain()`` waits for it). A round finding a
        load of the key already running skips. ``min_refresh_interval`` does not apply.
        Failures are logged and counted in ``refresh_errors``; the old value stays.
        Returns a handle whose ``cancel()`` stops later rounds.
        """
        if self._closed:
            raise self._unusable()
        return self._loading.refresh_every(key, loader, interval, ttl)

    def invalidate(self, key: Key, *, again_after: float | None = None) -> None:
        """``delete(key)`` now and, with ``again_after``, again that many seconds later in the background.

        The second delete (the "delayed double delete") catches a stale value that a
        reader who read the source before the write put back in the meantime; the
        caller never waits for it.
        """
        if self._closed:
            raise self._unusable()
        self._loading.invalidate(key, again_after)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for background work queued or running now (and timers already due); ``False`` on timeout."""
        if self._forked:
            raise self._unusable()
        return self._scheduler.drain(timeout)

    @overload
    def cached(self, fn: Callable[_P, _R], /) -> Cached[_P, _R]: ...

    @overload
    def cached(
        self,
        fn: None = None,
        /,
        *,
        ttl: TTL = ...,
        key: Callable[..., Key] | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[_P, _R]], Cached[_P, _R]]: ...

    def cached(
        self,
        fn: Callable[_P, _R] | None = None,
        /,
        *,
        ttl: TTL = ...,
        key: Callable[..., Key] | None = None,
        name: str | None = None,
    ) -> Any:
        """A decorator memoizing a function through ``get_or_load``; bare ``@store.cached`` works too.

        The key is ``name`` (default: the function's module and ``__qualname__``) plus
        its arguments encoded with msgpack (``TypeError`` when they cannot be); keyword
        arguments are sorted by name, and ``f(1)`` and ``f(a=1)`` are different keys (as
        in ``functools.lru_cache``). Keys longer than the key limit use a SHA-256 of the
        arguments. ``key=`` is a callable building the key from the arguments instead.
        A lambda or a function defined inside another needs ``name=`` or ``key=``
        (``TypeError`` at decoration): two closures must never share entries.

        The wrapper has ``.key(*args, **kwargs)`` (the call's cache key),
        ``.invalidate(*args, **kwargs)`` and ``.cache_clear()`` (every entry of the
        function; with ``key=``, what the keys its calls built share as a prefix:
        0 before the first call, ``ValueError`` when they share none).
        """
        loading = self._loading

        def load(cache_key: Key, loader: Callable[[], Any], load_ttl: Any) -> Any:
            if self._closed:
                raise self._unusable()
            return loading.get_or_load(cache_key, loader, load_ttl)

        decorate: Callable[[Callable[_P, _R]], Cached[_P, _R]] = memoizer(
            ttl=ttl,
            key=key,
            name=name,
            get_or_load=load,
            invalidate=self.invalidate,
            delete_prefix=self.delete_prefix,
        )
        return decorate if fn is None else decorate(fn)

    # -- existence guard (bloom.py) -------------------------------------------------

    def guard_keys(self, keys: Iterable[Key]) -> None:
        """Admit keys that exist in the source to the existence filter and save it before returning.

        A bad key raises (``TypeError``/``ValueError``) before any key is admitted; so
        does a single str or bytes (``TypeError``: pass ``[key]``).
        Without ``guard=True`` there is no filter: ``TierStoreError``.
        """
        guard = self._require_guard()
        guard.add_many(keys)
        guard.save()

    def rebuild_guard(self, keys: Iterable[Key]) -> None:
        """Replace the existence filter with one holding ``keys`` (and keys set meanwhile), and save it.

        The way to shrink a filter (a Bloom filter never forgets deleted keys) or to
        grow one past its capacity: it is sized for ``max(bloom_capacity, 2 * len(keys))``.
        It also ends the admit-everything mode of a store whose saved filter was damaged.
        """
        self._require_guard().rebuild(keys)

    def _require_guard(self) -> Guard:
        if self._closed:
            raise self._unusable()
        if self._guard is None:
            raise TierStoreError("this store was opened without guard=True: it keeps no existence filter")
        return self._guard

    # -- counters and sorted indexes (counters.py, ranking.py) ------------------------

    def incr(self, key: Key, delta: int = 1) -> int:
        """Add ``delta`` to the durable counter ``key`` and return the new count.

        Counters have their own namespace (a counter and a cached value may share a
        name) and are signed 64-bit: ``OverflowError`` past it, nothing changed.
        """
        if self._closed:
            raise self._unusable()
        return self._counters.incr(key, delta)

    def decr(self, key: Key, delta: int = 1) -> int:
        """Subtract ``delta`` from the counter ``key`` and return the new count."""
        if self._closed:
            raise self._unusable()
        return self._counters.decr(key, delta)

    def counter(self, key: Key) -> int:
        """The count of ``key``; 0 for a counter never touched."""
        if self._closed:
            raise self._unusable()
        return self._counters.get(key)

    def index(self, name: Key) -> SortedIndex:
        """The sorted index ``name`` (the same object on every call), created empty on first use."""
        if self._closed:
            raise self._unusable()
        encode_key(name)  # validate before looking up
        with self._indexes_lock:
            index = self._indexes.get(name)
            if index is None:
                index = self._indexes[name] = self._make_index(name)
            return index

    def keep_fresh(
        self,
        name: Key,
        rebuild: Callable[[], Pairs],
        *,
        stamp: Callable[[], Any] | None = None,
        interval: float = DEFAULT_REFRESH_INTERVAL,
    ) -> Handle:
        """Rebuild index ``name`` in the background whenever its source stamp moves.

        The first round runs at once, then one every ``interval`` seconds (default
        5). The source stamp is ``stamp()`` when given, else the index's dirty stamp
        (see ``SortedIndex.mark_dirty``). Failures are logged and counted in
        ``stats()["index_refresh_errors"]``; the old index stays. Each call starts its
        own refresher (one per index is the intended use); ``cancel()`` on the handle
        or ``close()`` stops it. In shared mode each round runs in one process only:
        the one holding the job's claim (see ``shared.leasing``).
        """
        if self._closed:
            raise self._unusable()
        seconds = check_seconds(interval, "interval", allow_zero=False)
        assert seconds is not None  # not optional, so never None
        refresher = IndexRefresher(self.index(name), rebuild, stamp=stamp, on_error=self._count_refresh_error)
        lease = self._loading.lease
        if lease is None:
            return self._scheduler.every(seconds, refresher, first_delay=0.0)
        claim = lease.job(b"i", name, seconds)
        return self._scheduler.every(seconds, lambda: claim() and refresher(), first_delay=0.0)

    def _count_refresh_error(self, exc: BaseException) -> None:
        self._stats.counts["index_refresh_errors"]()

    # -- durability: checkpoints and sweeping (durability.py) ----------------------------

    def checkpoint(self) -> dict[str, Any]:
        """Copy what changed since the last checkpoint into ``persist_path`` and sync it.

        Returns ``{"records", "deleted", "scanned", "bytes", "seconds", "full"}``.
        """
        if self._closed:
            raise self._unusable()
        return self._durability.checkpoint(self._guard)

    def sweep(self) -> dict[str, int]:
        """Purge expired entries, expired negative entries and old tombstones; enforce the capacity.

        Returns counts: ``scanned`` (expiry index records read: only what fell due), ``expired_purged``,
        ``swept_tombstones``, ``corrupt_purged``, ``evictions_disk``; in shared mode also ``shared_pruned``
        (members of Redis's keys set whose entry expired, pruned a bounded number of pages at a time).
        """
        if self._closed:
            raise self._unusable()
        counts = self._durability.sweep()
        counts.update(self._sweep_shared())
        return counts

    def _sweep_shared(self) -> dict[str, int]:
        """What a sweep does in the shared tier (bound over this in shared mode): nothing here."""
        return {}
