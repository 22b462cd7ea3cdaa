"""``AsyncTierStore``: the store for asyncio services, every call a coroutine.

``AsyncTierStore(path, **options)`` takes ``TierStore``'s arguments and opens the
store in a thread (an open may restore a checkpoint) on first use, or at once
with ``await AsyncTierStore.open(...)``; ``AsyncTierStore(store)`` wraps an open
``TierStore`` and never closes it. ``async with`` closes a store the wrapper opened.

What runs where (a hop to a thread costs tens of microseconds; a tier-1 hit well under one):

- inline on the loop: reads of tiers 1 and 2 (``get``, ``get_entry``, ``get_many``,
  ``counter``, short index reads), single-key writes and counters (one LevelDB
  write each), ``set_many``/``delete_many`` (the keys the caller passes), ``stats``;
- in a thread (``asyncio.to_thread``: the loop's default executor): what scans or
  may wait for long: ``delete_prefix``, ``clear``, ``checkpoint``, ``sweep``, ``drain``,
  ``guard_keys``, ``rebuild_guard``, ``close``, an index's ``replace`` and long walks
  (``aio_index``), plain loaders, ``keys``/``items`` (a chunk per hop, ``aio_listing``);
- as tasks on the loop: coroutine loaders and renewals (``aio_loading``), and what the
  callables of ``refresh_every``/``keep_fresh`` jobs return to await, which the store's
  scheduler thread awaits there (``aio_background``).

Loads are single-flight across threads and coroutines, on every event loop that uses
the store (one flight table; waiters are woken in their own loop). With the shared
tier (``shared=``), the calls that may need Redis await it on a redis.asyncio
connection (``shared.aio_calls``): no call blocks the loop on Redis, and a read that
tier 1 or a trusted tier-2 copy answers makes no round trip.
Thread-safety: as ``TierStore``'s; one wrapper may serve several loops at once.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

from .aio_background import on_loop
from .aio_cached import async_memoizer
from .aio_index import AsyncSortedIndex
from .aio_leased import AsyncLeasedLoading
from .aio_listing import AsyncListing
from .aio_loading import AsyncLoading
from .calls import OnBusy
from .clock import TTL
from .codec import Key
from .conditional import _RAISE
from .entries import Entry
from .errors import StoreClosed
from .index_codec import Pairs
from .index_refresher import DEFAULT_REFRESH_INTERVAL
from .memoize import Cached
from .scheduler import Handle
from .store import TierStore

__all__ = ["AsyncTierStore", "AsyncSortedIndex"]


class AsyncTierStore:
    """A ``TierStore`` behind coroutines (see the module doc for what runs on the loop and what in threads)."""

    def __init__(self, path: Any = None, /, **options: Any) -> None:
        """``AsyncTierStore(path, **options)`` (opened on first use) or ``AsyncTierStore(store)`` (wrapped)."""
        self._open_lock = threading.Lock()
        self._shut = False  # closed before it opened: it never opens (under ``_open_lock``)
        self._parts: AsyncLoading | None = None
        self._get: Callable[[Key, Any], Any] = _not_open  # the store's get once open: the hot path's one lookup
        self._io: Any = None  # shared mode: the asyncio driver of Redis round trips (``shared.aio_redis``)
        if isinstance(path, TierStore):
            if options:
                raise TypeError("AsyncTierStore(store) wraps an open store and takes no options")
            if path.closed:
                raise StoreClosed(f"store {path.path} is closed")
            self._owned = False
            self._options: dict[str, Any] | None = None
            self._bind(path)
        else:
            self._owned = True
            self._options = {"path": path, **options}
            self._store: TierStore | None = None
            if options.get("shared") is not None:
                self._open_first()

    @classmethod
    async def open(cls, path: Any = None, /, **options: Any) -> AsyncTierStore:
        """Open a store off the loop at once (its errors are raised here, not on first use)."""
        store = cls(path, **options)
        await store._ready()
        return store

    def _bind(self, store: TierStore) -> None:
        self._store = store
        if store._shared is not None:
            self._bind_shared(store)
            return
        self._get = store.get
        self._parts = AsyncLoading(
            store._loading, store._flights, store._lookup, store._options, store._stats, store.path
        )  # fmt: skip

    def _open_first(self) -> None:
        """Shared mode, not open yet: the calls bound at open (``AsyncShared``) open the store first, then
        call the bound one (the class's forms would call the blocking store, which blocks on Redis)."""
        from .shared.aio_calls import BOUND

        self.__dict__.update((name, self._opening(name)) for name in BOUND)

    def _opening(self, name: str) -> Callable[..., Awaitable[Any]]:
        """The call ``name`` that opens the store first, with the class's name, doc and arguments."""

        async def call(*args: Any, **kwargs: Any) -> Any:
            await self._ready()
            return await getattr(self, name)(*args, **kwargs)

        own = getattr(type(self), name)
        signature = inspect.signature(own)
        call.__name__, call.__qualname__, call.__doc__ = own.__name__, own.__qualname__, own.__doc__
        call.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])  # type: ignore[attr-defined]
        return call

    def _bind_shared(self, store: TierStore) -> None:
        """Shared mode: the calls that may need Redis await it (``shared.aio_calls``) instead of blocking."""
        from .shared.aio_calls import AsyncLeases, AsyncShared
        from .shared.aio_ranking import AsyncSharedIndex
        from .shared.aio_redis import AsyncRedis

        assert store._shared is not None
        io = AsyncRedis(store._shared.scripts)
        calls = AsyncShared(store, io)
        calls.bind(self.__dict__)
        self._io = io
        self._index_of = lambda index: AsyncSharedIndex(index, io.run)
        self._parts = AsyncLeasedLoading(
            store._loading, store._flights, store._options, store._stats, store.path,
            lease=AsyncLeases(store, io), reads=calls,
        )  # fmt: skip

    async def _ready(self) -> TierStore:
        """The store, opened in a thread on first use (once, whatever the loops asking)."""
        store = self._store
        if store is None:
            await asyncio.to_thread(self._open_once)
            store = self._store
            assert store is not None
        return store

    def _open_once(self) -> None:
        options = dict(self._options or {})
        with self._open_lock:
            if self._shut:
                raise StoreClosed(f"AsyncTierStore({options['path']!r}) was closed before it opened")
            if self._store is None:
                self._bind(TierStore(options.pop("path"), **options))

    def _shut_before_open(self) -> TierStore | None:
        """At close: a wrapper not open yet never opens; the store an open racing the close made, to close."""
        with self._open_lock:
            self._shut = self._store is None
            return self._store

    @property
    def store(self) -> TierStore | None:
        """The ``TierStore`` underneath (``None`` until opened): for calls with no coroutine form, in a thread."""
        return self._store

    @property
    def closed(self) -> bool:
        store = self._store
        return self._shut or (store is not None and store.closed)

    def __repr__(self) -> str:
        store = self._store
        return f"AsyncTierStore({store!r})" if store is not None else "AsyncTierStore(not opened yet)"

    def __contains__(self, key: object) -> bool:
        raise TypeError("`key in` an AsyncTierStore has no coroutine form: `await s.get_entry(key)`, or `in s.store`")

    def __len__(self) -> int:
        raise TypeError("len() of an AsyncTierStore is a scan: `len(await s.keys())`, or len(s.store) in a thread")

    def __bool__(self) -> bool:
        return True  # a store, empty or not (as TierStore), never its len()

    async def __aenter__(self) -> AsyncTierStore:
        await self._ready()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel this loop's loads; close the store in a thread if this wrapper opened it (a given one stays open)."""
        if self._parts is not None:
            await self._parts.cancel_all()
        if self._io is not None:
            await self._io.close()
        store = self._store
        if self._owned and store is None:
            store = await asyncio.to_thread(self._shut_before_open)
        if self._owned and store is not None:
            await asyncio.to_thread(store.close)

    # -- reads, inline -----------------------------------------------------------------------

    async def get(self, key: Key, default: Any = None) -> Any:
        """The live value of ``key`` (tier 1, then tier 2), else ``default``."""
        try:
            return self._get(key, default)
        except _NotOpen:
            return (await self._ready()).get(key, default)

    async def get_entry(self, key: Key) -> Entry | None:
        """The entry of ``key`` with its metadata."""
        return (self._store or await self._ready()).get_entry(key)

    async def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """The live values of ``keys`` that have one."""
        return (self._store or await self._ready()).get_many(keys)

    async def counter(self, key: Key) -> int:
        """The count of ``key``; 0 for a counter never touched."""
        return (self._store or await self._ready()).counter(key)

    async def stats(self) -> dict[str, int]:
        """Counters of what the store did since it was opened."""
        return (self._store or await self._ready()).stats()

    # -- writes, inline --------------------------------------------------------------------------

    async def set(self, key: Key, value: Any, *, ttl: TTL = ..., version: int | None = None) -> bool:
        """Store ``value``; with ``version``, only if it is newer than what is stored."""
        return (self._store or await self._ready()).set(key, value, ttl=ttl, version=version)

    async def add(self, key: Key, value: Any, *, ttl: TTL = ..., version: int | None = None) -> bool:
        """Store ``value`` only if ``key`` has no live entry."""
        return (self._store or await self._ready()).add(key, value, ttl=ttl, version=version)

    async def touch(self, key: Key, ttl: TTL = ...) -> bool:
        """Give a live entry a new expiry."""
        return (self._store or await self._ready()).touch(key, ttl)

    async def replace_value(self, key: Key, value: Any) -> bool:
        """Replace the value of a live entry, keeping its expiry and version."""
        return (self._store or await self._ready()).replace_value(key, value)

    async def update_value(self, key: Key, update: Callable[[Any], Any]) -> bool:
        """Replace the value of a live entry by ``update(value)``, atomically."""
        return (self._store or await self._ready()).update_value(key, update)

    async def pop(self, key: Key, default: Any = _RAISE) -> Any:
        """Remove ``key`` and return its value (``KeyError`` without ``default``)."""
        return (self._store or await self._ready()).pop(key, default)

    async def delete(self, key: Key, *, version: int | None = None) -> bool:
        """Remove ``key``, leaving a tombstone; ``True`` if it was live."""
        return (self._store or await self._ready()).delete(key, version=version)

    async def invalidate(self, key: Key, *, again_after: float | None = None) -> None:
        """``delete(key)`` now and, with ``again_after``, again later in the background."""
        (self._store or await self._ready()).invalidate(key, again_after=again_after)

    async def set_many(self, mapping: Mapping[Key, Any], *, ttl: TTL = ...) -> int:
        """Store every item in one batch."""
        return (self._store or await self._ready()).set_many(mapping, ttl=ttl)

    async def delete_many(self, keys: Iterable[Key]) -> int:
        """Delete every key in one batch; how many were live."""
        return (self._store or await self._ready()).delete_many(keys)

    async def incr(self, key: Key, delta: int = 1) -> int:
        """Add ``delta`` to the durable counter ``key``."""
        return (self._store or await self._ready()).incr(key, delta)

    async def decr(self, key: Key, delta: int = 1) -> int:
        """Subtract ``delta`` from the counter ``key``."""
        return (self._store or await self._ready()).decr(key, delta)

    # -- in threads ------------------------------------------------------------------------------

    async def delete_prefix(self, prefix: Key) -> int:
        """Delete every entry under ``prefix`` (a scan: in a thread); how many were live."""
        return await asyncio.to_thread((self._store or await self._ready()).delete_prefix, prefix)

    async def clear(self) -> int:
        """Delete every entry (a scan: in a thread)."""
        return await asyncio.to_thread((self._store or await self._ready()).clear)

    async def checkpoint(self) -> dict[str, Any]:
        """Copy what changed into ``persist_path`` (in a thread)."""
        return await asyncio.to_thread((self._store or await self._ready()).checkpoint)

    async def sweep(self) -> dict[str, int]:
        """Purge expired entries and old tombstones (in a thread)."""
        return await asyncio.to_thread((self._store or await self._ready()).sweep)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for the store's background work (in a thread)."""
        return await asyncio.to_thread((self._store or await self._ready()).drain, timeout)

    async def guard_keys(self, keys: Iterable[Key]) -> None:
        """Admit ``keys`` to the existence filter and save it (in a thread: in shared mode it writes to Redis)."""
        await asyncio.to_thread((self._store or await self._ready()).guard_keys, keys)

    async def rebuild_guard(self, keys: Iterable[Key]) -> None:
        """Replace the existence filter with one holding ``keys`` (in a thread)."""
        await asyncio.to_thread((self._store or await self._ready()).rebuild_guard, keys)

    def keys(self, prefix: Key | None = None) -> AsyncListing[Key]:
        """Live keys in key order, read in a thread a chunk at a time: ``async for``, or ``await`` a list."""
        return AsyncListing(lambda: self._listing("keys", prefix))

    def items(self, prefix: Key | None = None) -> AsyncListing[tuple[Key, Any]]:
        """Live ``(key, value)`` pairs in key order, as ``keys`` reads them."""
        return AsyncListing(lambda: self._listing("items", prefix))

    async def _listing(self, name: str, prefix: Key | None) -> Iterator[Any]:
        return getattr(self._store or await self._ready(), name)(prefix)  # type: ignore[no-any-return]

    async def report_corrupt(self, key: Key, reason: str) -> None:
        """Count (and log) a value of ``key`` that the caller's own check refused."""
        (self._store or await self._ready()).report_corrupt(key, reason)

    # -- background work: coroutine functions run on this loop (``aio_background``) ----------------

    async def refresh_every(self, key: Key, loader: Callable[[], Any], interval: float, *, ttl: TTL = ...) -> Handle:
        """``TierStore.refresh_every``; a coroutine-function ``loader`` is awaited on the calling loop."""
        store = self._store or await self._ready()
        loader = on_loop(loader, asyncio.get_running_loop(), store._options.lock_timeout)
        return store.refresh_every(key, loader, interval, ttl=ttl)

    async def keep_fresh(
        self,
        name: Key,
        rebuild: Callable[[], Pairs],
        *,
        stamp: Callable[[], Any] | None = None,
        interval: float = DEFAULT_REFRESH_INTERVAL,
    ) -> Handle:
        """``TierStore.keep_fresh``; coroutine functions ``rebuild``/``stamp`` are awaited on the calling loop."""
        store = self._store or await self._ready()
        loop, timeout = asyncio.get_running_loop(), store._options.lock_timeout
        fresh_stamp = None if stamp is None else on_loop(stamp, loop, timeout)
        return store.keep_fresh(name, on_loop(rebuild, loop, timeout), stamp=fresh_stamp, interval=interval)

    # -- loading ---------------------------------------------------------------------------------

    async def get_or_load(
        self,
        key: Key,
        loader: Callable[[], Any],
        *,
        ttl: TTL = ...,
        on_busy: OnBusy = "wait",
        wait_timeout: float | None = None,
        default: Any = None,
    ) -> Any:
        """The value of ``key``; on a miss ``loader`` runs once across threads and coroutines.

        ``loader`` is a coroutine function (awaited in a task) or a plain one (run in a
        thread). ``on_busy``, ``wait_timeout``, ``default``, negative entries and errors
        as in ``TierStore.get_or_load``. A caller cancelled while waiting leaves; the
        load goes on for the others and is cancelled when none is left.
        """
        store = self._store or await self._ready()
        if store._closed:
            raise store._unusable()
        parts = self._parts
        assert parts is not None
        return await parts.get_or_load(key, loader, ttl, on_busy, wait_timeout, default)

    def cached(
        self,
        fn: Callable[..., Awaitable[Any]] | None = None,
        /,
        *,
        ttl: TTL = ...,
        key: Callable[..., Key] | None = None,
        name: str | None = None,
    ) -> Any:
        """Memoize a coroutine function through ``get_or_load``; the handle of ``TierStore.cached``, awaited.

        ``await f(x)``, ``await f.invalidate(x)``, ``await f.cache_clear()``; ``f.key(x)`` is plain.
        """

        async def load(cache_key: Key, loader: Callable[[], Awaitable[Any]], load_ttl: Any) -> Any:
            return await self.get_or_load(cache_key, loader, ttl=load_ttl)

        decorate: Callable[[Callable[..., Awaitable[Any]]], Cached[..., Awaitable[Any]]] = async_memoizer(
            ttl=ttl, key=key, name=name, get_or_load=load, invalidate=self.invalidate, delete_prefix=self.delete_prefix
        )
        return decorate if fn is None else decorate(fn)

    # -- sorted indexes --------------------------------------------------------------------------

    def index(self, name: Key) -> Any:
        """The sorted index ``name`` with coroutine methods (the store must be open: ``await open`` first).

        An ``AsyncSortedIndex``; in shared mode a ``shared.aio_ranking.AsyncSharedIndex`` (the same
        coroutines, every round trip awaited; ``len``/``in``/``stamp`` refuse to block and name
        ``count``/``contains``/``read_stamp``)."""
        store = self._store
        if store is None:
            raise StoreClosed("AsyncTierStore.index needs an open store: use `await AsyncTierStore.open(...)` first")
        return self._index_of(store.index(name))

    _index_of: Callable[[Any], Any] = staticmethod(lambda index: AsyncSortedIndex(index))


class _NotOpen(Exception):
    """Raised by ``_not_open``: the store is to be opened first (a zero-cost ``try`` on the hot path)."""


def _not_open(key: Key, default: Any) -> Any:
    raise _NotOpen
