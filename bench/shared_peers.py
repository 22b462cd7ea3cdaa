"""The systems one worker process of the shared sections runs: tierstore over Redis and its two peers.

- ``tierstore``: ``TierStore(path=None, shared=URL, namespace=...)``: its own
  temp directory for tier 2, Redis as tier 3 and the authority.
- ``redis-py+msgpack``: what a user writes without tierstore: ``GET`` and
  ``unpackb`` to read, ``packb`` and ``SET ... EX`` to write, one round trip each.
- ``diskcache``: ``diskcache.Cache`` on one directory shared by every worker.

Every peer is read the same cache-aside way (``read``): its get, and on a miss
the source of truth (``source``: the key space's value of the key) stored back
with a set, as a user would write it; the misses are counted, so the hit ratio
shows whether that branch ran. Every entry is written with the same TTL.
Thread-safety: a peer belongs to one worker process and is driven by one thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from tierstore import TierStore

from .settings import settings_note
from .workloads import KeySpace

__all__ = ["PEER_NAMES", "TTL", "Peer", "open_peer", "peer_notes", "source", "store_settings"]

PEER_NAMES = ("tierstore", "redis-py+msgpack", "diskcache")
TTL = 3600  # seconds: every entry of every peer carries it, as a cache's entries do
_CALL_TIMEOUT = 2.0  # seconds: the plain client's socket timeout, tierstore's own
_PIPELINE = 1_000  # SETs per pipeline in the plain client's prefill


def source(space: KeySpace, key: str) -> Any:
    """The source of truth: the value the key space gives ``key`` (``key:0001234`` -> index 1234)."""
    return space.value(int(key[4:]))


def store_settings(capacity: int) -> dict[str, Any]:
    """The settings of the workers' stores (besides ``shared`` and ``namespace``)."""
    return {"memory_items": capacity, "default_ttl": float(TTL), "checkpoint_interval": None, "sweep_interval": None}


@dataclass
class Peer:
    """One system in one worker: ``read``/``write`` for the timed loop, ``fill`` to prefill, ``close``."""

    name: str
    get: Callable[[str], Any]  # the library's get: None on a miss
    put: Callable[[str, Any], Any]
    fill: Callable[[Iterable[tuple[str, Any]]], None]
    close: Callable[[], None]
    stats: Callable[[], dict[str, int]] = dict
    misses: list[int] = field(default_factory=lambda: [0])

    def reader(self, space: KeySpace) -> Callable[[str, Any], Any]:
        """Cache-aside ``read(key, _)``: the peer's get; on a miss the source's value, set back."""
        get, put, misses = self.get, self.put, self.misses

        def read(key: str, _: Any = None) -> Any:
            value = get(key)
            if value is None:
                misses[0] += 1
                value = source(space, key)
                put(key, value)
            return value

        return read


def _tierstore(url: str, namespace: str, capacity: int) -> Peer:
    settings = store_settings(capacity)
    store = TierStore(None, shared=url, namespace=namespace, **settings)

    def fill(pairs: Iterable[tuple[str, Any]]) -> None:
        for key, value in pairs:
            store.set(key, value)

    return Peer("tierstore", store.get, store.set, fill, store.close, store.stats)


def _plain(socket: str, namespace: str) -> Peer:
    import redis

    client = redis.Redis(unix_socket_path=socket, socket_timeout=_CALL_TIMEOUT, socket_connect_timeout=_CALL_TIMEOUT)
    prefix = f"plain:{namespace}:"
    redis_get, redis_set = client.get, client.set
    packb, unpackb = msgpack.packb, msgpack.unpackb

    def get(key: str) -> Any:
        data = redis_get(prefix + key)
        return None if data is None else unpackb(data)

    def put(key: str, value: Any) -> Any:
        return redis_set(prefix + key, packb(value), ex=TTL)

    def fill(pairs: Iterable[tuple[str, Any]]) -> None:
        pipe = client.pipeline(transaction=False)
        for index, (key, value) in enumerate(pairs, 1):
            pipe.set(prefix + key, packb(value), ex=TTL)
            if index % _PIPELINE == 0:
                pipe.execute()
        pipe.execute()

    def close() -> None:
        client.close()

    return Peer("redis-py+msgpack", get, put, fill, close)


def _diskcache(directory: str) -> Peer:
    import diskcache

    cache = diskcache.Cache(directory)
    cache_get, cache_set = cache.get, cache.set

    def put(key: str, value: Any) -> Any:
        return cache_set(key, value, expire=TTL)

    def fill(pairs: Iterable[tuple[str, Any]]) -> None:
        with cache.transact():  # one transaction: row by row would take minutes
            for key, value in pairs:
                cache_set(key, value, expire=TTL)

    return Peer("diskcache", cache_get, put, fill, cache.close)


def peer_notes(capacity: int) -> list[str]:
    """How each peer is opened, one note line each (printed with the tables)."""
    rest = "path=None: each worker its own temp dir; shared=the bench's Redis; every other setting is the default"
    return [
        f"both Redis clients: {_client_version()}",
        settings_note(store_settings(capacity), rest=rest),
        f"redis-py+msgpack: redis.Redis on the same unix socket; GET + unpackb, packb + SET EX {TTL}",
        f"diskcache: Cache(directory) with its default settings, one directory for every worker; expire={TTL}",
        f"every peer is read cache-aside (get; on a miss the source's value, set back) and writes with a {TTL} s TTL",
    ]


def _client_version() -> str:
    """redis-py's version and its reply parser (hiredis when installed: ``redis[hiredis]``)."""
    try:
        import redis
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        return "redis-py not installed"
    parser = "hiredis" if HIREDIS_AVAILABLE else "redis-py's pure-Python parser"
    return f"redis-py {redis.__version__} with {parser}"


def open_peer(name: str, *, url: str, socket: str, namespace: str, directory: str, capacity: int) -> Peer:
    """Open peer ``name`` in this process (``directory``: diskcache's, shared by the workers)."""
    if name == "tierstore":
        return _tierstore(url, namespace, capacity)
    if name == "redis-py+msgpack":
        return _plain(socket, namespace)
    if name == "diskcache":
        os.makedirs(directory, exist_ok=True)
        return _diskcache(directory)
    raise ValueError(f"unknown peer {name!r}")
