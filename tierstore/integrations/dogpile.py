"""A dogpile.cache backend over a ``TierStore``, registered as ``"tierstore"``.

    region = make_region().configure("tierstore", arguments={"path": "/var/cache/app", "memory_items": 50_000})

Arguments: ``path`` (the directory; its store is shared with every backend in
the process that names it, see ``registry.py``; with ``shared`` it may be left
out: each process then keeps a private temp directory) or ``store`` (an open
``TierStore``, which the backend never closes), plus any of the store's
settings (``default_ttl``, ``lock_timeout``...). Other arguments are ignored, and
the dict given is never changed.

Values: a region without a serializer hands the backend dogpile's
``CachedValue``, stored as the msgpack list ``[payload, metadata]`` (so the
payload must be what the store takes: ``TypeError`` otherwise, and nothing is
stored; the metadata must hold what dogpile reads, a number ``ct`` and an int
``v``: ``ValueError`` otherwise). A stored record of another shape (written
through the store by something else) reads as ``NO_VALUE``, a miss. A region
with a serializer hands it bytes, stored as they are.
Expiry is dogpile's (from the metadata); the store's ``default_ttl``, when set,
bounds how long an entry stays on disk.

``get_mutex(key)`` returns a lock on a lease of the directory's lease-lock
table (``mutex.py``), apart from the fill leases of ``get_or_load``: held until
released, or until ``lock_timeout`` seconds (the store's setting, default 30)
have passed (with ``store``, that store's own), so ``has_lock_timeout()`` is ``True``. The table outlives closes
and reopens of the store: a lock taken before a close frees itself when its
lease ends. A store in shared mode (``shared=``) takes its locks in Redis
instead (``shared.mutexes``), so they exclude every process of the namespace.

Importing this module registers the backend; the ``dogpile.cache`` entry point
of the package makes ``"tierstore"`` known without an import.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dogpile.cache import register_backend
from dogpile.cache.api import NO_VALUE, CacheBackend, CachedValue, CacheMutex

from ..errors import StoreClosed
from ..mutex import LeaseLock
from ..store import TierStore
from .registry import StoreHolder, lease_locks, store_settings

if TYPE_CHECKING:
    from ..shared.mutexes import SharedLeaseLock  # only shared mode imports redis-py

__all__ = ["TierStoreBackend", "LeaseMutex"]

_MISSING = object()


class LeaseMutex(CacheMutex):
    """dogpile's mutex on a lease lock: ``acquire(wait=True)``, ``release()``, ``locked()``."""

    def __init__(self, lock: LeaseLock | SharedLeaseLock) -> None:
        self._lock = lock

    def acquire(self, wait: bool = True) -> bool:
        return self._lock.acquire(blocking=wait)

    def release(self) -> None:
        """Give the lock back; one taken through a store closed since ends with its lease instead.

        dogpile releases after its creator ran, however long: a close of the
        backend meanwhile must not turn a stored value into an error.
        """
        try:
            self._lock.release()
        except StoreClosed:  # a shared lock's Redis handle went with its store; the lease ends by itself
            pass

    def locked(self) -> bool:
        return self._lock.locked()


class TierStoreBackend(CacheBackend):
    """dogpile.cache's backend API over one ``TierStore`` (see the module's docstring)."""

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        settings, rest = store_settings(arguments)
        store = rest.get("store")
        self._holder: StoreHolder | None = None
        self._leases: tuple[str, float] | None = None  # a store passed in: its directory and lock_timeout
        if store is not None:
            if not isinstance(store, TierStore):
                raise TypeError(f"the 'store' argument must be an open TierStore, got {type(store).__name__}")
            self._use: StoreHolder | _Given = _Given(store)
            self._shared_mode = store._shared is not None
            self._leases = (store.path, store._options.lock_timeout)  # the lease of that store's settings
            lease_locks(*self._leases)  # the directory's table, made now with that lease if it has none
        else:
            path = rest.get("path")
            if path is None and settings.get("shared") is None:
                raise ValueError("the tierstore backend needs a 'path' (the store's directory), a 'store' or 'shared'")
            self._use = self._holder = StoreHolder(path, settings)
            self._shared_mode = settings.get("shared") is not None

    @property
    def store(self) -> TierStore:
        """The store (opened, or reopened after ``close()``, on use)."""
        return self._use.store

    def close(self) -> None:
        """Give back this backend's reference on a shared store (a store passed in stays open)."""
        if self._holder is not None:
            self._holder.close()

    # -- values ---------------------------------------------------------------------

    def get(self, key: str) -> Any:
        with self._use as store:
            return _cached_value(store.get(key, _MISSING))

    def get_multi(self, keys: Iterable[str]) -> Sequence[Any]:
        keys = list(keys)
        with self._use as store:
            found = store.get_many(keys)
        return [_cached_value(found.get(key, _MISSING)) for key in keys]

    def set(self, key: str, value: Any) -> None:
        stored = _stored(value)
        with self._use as store:
            store.set(key, stored)

    def set_multi(self, mapping: Mapping[str, Any]) -> None:
        stored: dict[str | bytes, Any] = {key: _stored(value) for key, value in mapping.items()}
        with self._use as store:
            store.set_many(stored)

    def get_serialized(self, key: str) -> Any:
        with self._use as store:
            value = store.get(key, _MISSING)
        return value if isinstance(value, bytes) else NO_VALUE

    def get_serialized_multi(self, keys: Iterable[str]) -> Sequence[Any]:
        keys = list(keys)
        with self._use as store:
            found = store.get_many(keys)
        return [value if isinstance(value := found.get(key), bytes) else NO_VALUE for key in keys]

    def set_serialized(self, key: str, value: bytes) -> None:
        with self._use as store:
            store.set(key, bytes(value))

    def set_serialized_multi(self, mapping: Mapping[str, bytes]) -> None:
        stored: dict[str | bytes, Any] = {key: bytes(value) for key, value in mapping.items()}
        with self._use as store:
            store.set_many(stored)

    def delete(self, key: str) -> None:
        with self._use as store:
            store.delete(key)

    def delete_multi(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        with self._use as store:
            store.delete_many(keys)

    # -- locking ---------------------------------------------------------------------

    def get_mutex(self, key: str) -> LeaseMutex:
        if self._shared_mode:  # the store opened may still be local (the first settings of a directory win)
            with self._use as store:
                shared = store._shared  # the shared tier's parts are the store's own, not a public surface
            if shared is not None:
                return LeaseMutex(shared.lease_locks.lock(key))  # every process of the namespace
        # Looked up at each call: a forked child gets a table of its own, never the parent's copy
        # (whose locks no thread of the child holds, and whose inner lock a parent thread may have held).
        locks = self._holder.locks if self._holder is not None else lease_locks(*self._given_leases())
        return LeaseMutex(locks.lock(key))

    def _given_leases(self) -> tuple[str, float]:
        assert self._leases is not None  # set whenever no holder is
        return self._leases

    def has_lock_timeout(self) -> bool:
        return True


def _stored(value: Any) -> list[Any]:
    """A ``CachedValue`` as the store keeps it."""
    if not isinstance(value, CachedValue):
        raise TypeError(f"the tierstore backend stores dogpile's CachedValue, got {type(value).__name__}")
    payload, metadata = value
    if not _is_metadata(metadata):
        raise ValueError(
            f"a CachedValue's metadata needs a number 'ct' and an int 'v' (dogpile reads them), got {metadata!r}"
        )
    return [payload, dict(metadata)]


def _cached_value(value: Any) -> Any:
    """What ``get`` gives dogpile for a stored value: a ``CachedValue``, or ``NO_VALUE``.

    A record of another shape (written through the store by something else, or
    hostile) is a miss: dogpile reads ``metadata["ct"]`` as a number and
    ``metadata["v"]`` as an int, so both must be there and be so.
    """
    if isinstance(value, list) and len(value) == 2 and _is_metadata(value[1]):
        return CachedValue(value[0], value[1])
    return NO_VALUE


def _is_metadata(metadata: Any) -> bool:
    """Whether ``metadata`` has what dogpile's region reads: a finite number ``ct``, an int ``v``."""
    if not isinstance(metadata, Mapping):
        return False
    created, version = metadata.get("ct"), metadata.get("v")
    if not isinstance(created, int | float) or isinstance(created, bool) or not math.isfinite(created):
        return False
    return isinstance(version, int) and not isinstance(version, bool)


class _Given:
    """A store passed in by the caller: used as it is, never closed by the backend."""

    def __init__(self, store: TierStore) -> None:
        self.store = store

    def __enter__(self) -> TierStore:
        return self.store

    def __exit__(self, *exc: object) -> None:
        return None


register_backend("tierstore", __name__, "TierStoreBackend")  # type: ignore[no-untyped-call]
