"""The systems under comparison, behind one shape: ``get(key, default)`` and ``set(key, value)``.

``get`` and ``set`` are the libraries' own bound methods wherever their
signature allows, so no adapter frame is timed; the raw plyvel+msgpack floor is
two small functions because it has no cache API of its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cachetools
import msgpack

from tierstore import TierStore
from tierstore._plyvel import plyvel
from tierstore.disk import DEFAULT_CACHE_BYTES

from .settings import settings_note

__all__ = ["System", "SYSTEM_NAMES", "open_system", "library_versions"]

SYSTEM_NAMES = ("tierstore", "plyvel+msgpack", "cachetools", "diskcache")


@dataclass
class System:
    """One system under test."""

    name: str
    get: Callable[[Any, Any], Any]
    set: Callable[[Any, Any], Any]
    close: Callable[[], None]
    set_returns_none: bool  # a set's None must not count as a get miss
    bulk: Callable[[Iterable[tuple[str, Any]]], None]
    handle: Any = None  # the library object, for stats
    shared_get: Callable[[Any, Any], Any] | None = None  # used by several threads, when get is not thread-safe
    shared_set: Callable[[Any, Any], Any] | None = None
    opened_with: str = ""  # how it was opened, printed with the tables
    round_share: int = 1  # runs 1/round_share of each round's ops: the slowest peer, so the bench stays short

    def calls(self, threads: int) -> tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]:
        """The (get, set) to use from ``threads`` threads at once."""
        if threads > 1 and self.shared_get is not None and self.shared_set is not None:
            return self.shared_get, self.shared_set
        return self.get, self.set


def _tierstore(path: str, capacity: int) -> System:
    settings: dict[str, Any] = {"memory_items": capacity, "checkpoint_interval": None, "sweep_interval": None}
    store = TierStore(path, **settings)

    def bulk(pairs: Iterable[tuple[str, Any]]) -> None:
        for key, value in pairs:
            store.set(key, value)

    system = System("tierstore", store.get, store.set, store.close, False, bulk, store)
    system.opened_with = settings_note(settings, keep=("memory_items",))
    return system


def _raw(path: str) -> System:
    """The tier-2 floor: LevelDB with tierstore's block cache size, so only our code differs."""
    db = plyvel.DB(path, create_if_missing=True, lru_cache_size=DEFAULT_CACHE_BYTES)
    db_get = db.get
    db_put = db.put
    packb = msgpack.packb
    unpackb = msgpack.unpackb

    def get(key: str, default: Any = None) -> Any:
        data = db_get(key.encode())
        return default if data is None else unpackb(data)

    def put(key: str, value: Any) -> None:
        db_put(key.encode(), packb(value))

    def bulk(pairs: Iterable[tuple[str, Any]]) -> None:
        for key, value in pairs:
            put(key, value)

    system = System("plyvel+msgpack", get, put, db.close, True, bulk, db)
    system.opened_with = (
        f"plyvel+msgpack: plyvel.DB(lru_cache_size={DEFAULT_CACHE_BYTES >> 20} MiB), tierstore's block cache"
    )
    return system


def _lru(capacity: int) -> System:
    """cachetools' LRUCache; from several threads behind a lock, as its documentation requires."""
    cache: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize=capacity)
    lock = threading.Lock()
    acquire, release, cache_get, cache_set = lock.acquire, lock.release, cache.get, cache.__setitem__

    def bulk(pairs: Iterable[tuple[str, Any]]) -> None:
        for key, value in pairs:
            cache[key] = value

    def shared_get(key: str, default: Any = None) -> Any:
        acquire()
        try:
            return cache_get(key, default)
        finally:
            release()

    def shared_set(key: str, value: Any) -> None:
        acquire()
        try:
            cache_set(key, value)
        finally:
            release()

    system = System("cachetools", cache.get, cache.__setitem__, cache.clear, True, bulk, cache)
    system.shared_get, system.shared_set = shared_get, shared_set
    system.opened_with = f"cachetools: LRUCache(maxsize={capacity:,}), tier 1's capacity"
    return system


def _diskcache(path: str) -> System:
    import diskcache

    cache = diskcache.Cache(path)

    def bulk(pairs: Iterable[tuple[str, Any]]) -> None:
        with cache.transact():  # one transaction: row by row would take minutes
            for key, value in pairs:
                cache.set(key, value)

    system = System("diskcache", cache.get, cache.set, cache.close, False, bulk, cache)
    system.opened_with = "diskcache: Cache(directory) with its default settings"
    system.round_share = 4
    return system


def open_system(name: str, parent: str, capacity: int) -> System:
    """A fresh instance of system ``name`` with its data directory under ``parent``."""
    path = os.path.join(parent, name.replace("+", "-"))
    if name == "tierstore":
        return _tierstore(path, capacity)
    if name == "plyvel+msgpack":
        return _raw(path)
    if name == "cachetools":
        return _lru(capacity)
    if name == "diskcache":
        return _diskcache(path)
    raise ValueError(f"unknown system {name!r}")


def diskcache_available() -> bool:
    try:
        import diskcache  # noqa: F401
    except ImportError:
        return False
    return True


def library_versions() -> dict[str, str]:
    """Versions of every library the bench compares, for the JSON."""
    import tierstore

    versions = {
        "tierstore": tierstore.__version__,
        "plyvel": plyvel.__version__,
        "leveldb_binding": plyvel.__name__,  # plyvel, or plyvel_next on Python 3.13 and later
        "leveldb": f"{plyvel.__leveldb_version__}",
        "msgpack": ".".join(map(str, msgpack.version)),
        "cachetools": cachetools.__version__,
    }
    try:
        import redis

        versions["redis-py"] = redis.__version__
    except ImportError:
        versions["redis-py"] = "not installed"
    try:
        import diskcache

        versions["diskcache"] = diskcache.__version__
        import sqlite3

        versions["sqlite"] = sqlite3.sqlite_version
    except ImportError:
        versions["diskcache"] = "not installed"
    try:
        import aiocache

        versions["aiocache"] = aiocache.__version__
    except ImportError:
        versions["aiocache"] = "not installed"
    return versions
