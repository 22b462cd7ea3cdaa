"""A dogpile.cache backend over a ``TierStore``, registered as ``"tierstore"``.

    region = make_region().configure("tierstore", arguments={"path": "/var/cache/app", "memory_items": 50_000})

Arguments: ``path`` (the directory; its store is shared with every backend in
the process that names it, see ``registry.py``) or ``store`` (an open
``TierStore``, which the backend never closes), plus any of the store's
settings (``default_ttl``, ``lock_timeout``...). Other arguments are ignored, and
the dict given is never changed.

Values: a region without a serializer hands the backend dogpile's
``CachedValue``, stored as the msgpack list ``[payload, metadata]`` (so the
payload must be what the store takes: ``TypeError`` otherwise, and nothing is
stored); a region with a serializer hands it bytes, stored as they are.
Expiry is dogpile's (from the metadata); the store's ``default_ttl``, when set,
bounds how long an entry stays on disk.

``get_mutex(key)`` returns a lock on a lease of the directory's lease-lock
table (``mutex.py``), apart from the fill leases of ``get_or_load``: held until
released, or until ``lock_timeout`` seconds (the store's setting, default 30)
have passed, so ``has_lock_timeout()`` is ``True``. The table outlives closes
and reopens of the store: a lock taken before a close frees itself when its
lease ends.

Importing this module registers the backend; the ``dogpile.cache`` entry point
of the package makes ``"tierstore"`` known without an import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dogpile.cache import register_backend
from dogpile.cache.api import NO_VALUE, CacheBackend, CachedValue, CacheMutex

from ..mutex import LeaseLock, LeaseLocks
from ..store import TierStore
from .registry import StoreHolder, lease_locks, store_settings

__all__ = ["TierStoreBackend", "LeaseMutex"]

_MISSING = object()


class LeaseMutex(CacheMutex):
    """dogpile's mutex on a lease lock: ``acquire(wait=True)``, ``release()``, ``locked()``."""

    def __init__(self, lock: LeaseLock) -> None:
        self._lock = lock

    def acquire(self, wait: bool = True) -> bool:
        return self._lock.acquire(blocking=wait)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


class TierStoreBackend(CacheBackend):
    """dogpile.cache's backend API over one ``TierStore`` (see the module's docstring)."""

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        settings, rest = store_settings(arguments)
        store = rest.get("store")
        self._holder: StoreHolder | None = None
        self._store: TierStore | None = None
        if store is not None:
            if not isinstance(store, TierStore):
                raise TypeError(f"the 'store' argument must be an open TierStore, got {type(store).__name__}")
            self._store = store
            self._locks: LeaseLocks = lease_locks(store.path, float(settings.get("lock_timeout", 30.0)))
        else:
            path = rest.get("path")
            if path is None:
                raise ValueError("the tierstore backend needs a 'path' (the store's directory) or a 'store'")
            self._holder = StoreHolder(path, settings)
            self._locks = self._holder.locks

    @property
    def store(self) -> TierStore:
        """The store (opened, or reopened after ``close()``, on use)."""
        if self._store is not None:
            return self._store
        assert self._holder is not None
        return self._holder.store

    def close(self) -> None:
        """Give back this backend's reference on a shared store (a store passed in stays open)."""
        if self._holder is not None:
            self._holder.close()

    # -- values ---------------------------------------------------------------------

    def get(self, key: str) -> Any:
        return _cached_value(self.store.get(key, _MISSING))

    def get_multi(self, keys: Iterable[str]) -> Sequence[Any]:
        keys = list(keys)
        found = self.store.get_many(keys)
        return [_cached_value(found.get(key, _MISSING)) for key in keys]

    def set(self, key: str, value: Any) -> None:
        self.store.set(key, _stored(value))

    def set_multi(self, mapping: Mapping[str, Any]) -> None:
        self.store.set_many({key: _stored(value) for key, value in mapping.items()})

    def get_serialized(self, key: str) -> Any:
        value = self.store.get(key, _MISSING)
        return value if isinstance(value, bytes) else NO_VALUE

    def get_serialized_multi(self, keys: Iterable[str]) -> Sequence[Any]:
        keys = list(keys)
        found = self.store.get_many(keys)
        return [value if isinstance(value := found.get(key), bytes) else NO_VALUE for key in keys]

    def set_serialized(self, key: str, value: bytes) -> None:
        self.store.set(key, bytes(value))

    def set_serialized_multi(self, mapping: Mapping[str, bytes]) -> None:
        self.store.set_many({key: bytes(value) for key, value in mapping.items()})

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def delete_multi(self, keys: Iterable[str]) -> None:
        self.store.delete_many(list(keys))

    # -- locking ---------------------------------------------------------------------

    def get_mutex(self, key: str) -> LeaseMutex:
        return LeaseMutex(self._locks.lock(key))

    def has_lock_timeout(self) -> bool:
        return True


def _stored(value: Any) -> list[Any]:
    """A ``CachedValue`` as the store keeps it."""
    if not isinstance(value, CachedValue):
        raise TypeError(f"the tierstore backend stores dogpile's CachedValue, got {type(value).__name__}")
    payload, metadata = value
    return [payload, dict(metadata)]


def _cached_value(value: Any) -> Any:
    """What ``get`` gives dogpile for a stored value: a ``CachedValue``, or ``NO_VALUE``."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], dict):
        return CachedValue(value[0], value[1])
    return NO_VALUE


register_backend("tierstore", __name__, "TierStoreBackend")  # type: ignore[no-untyped-call]
