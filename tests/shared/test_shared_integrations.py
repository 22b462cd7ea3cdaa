"""The Django and dogpile backends in shared mode: many worker processes with one configuration.

Real redis-server and real worker processes. A deployment gives every worker the
same settings; with ``shared=`` and no directory each process keeps its tiers 1 and
2 in a private temp directory (never one LevelDB directory for two processes), and
the workers share their values through Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.shared.redis_server import RedisServer
from tests.shared.support import wait_for
from tests.shared.workers import Worker
from tierstore import StoreLocked, TierStore

pytest.importorskip("django")
pytest.importorskip("dogpile.cache")

from dogpile.cache.api import CachedValue

from tierstore.integrations.dogpile import TierStoreBackend
from tierstore.integrations.registry import close_all


def django_cache(store: TierStore, url: str, mine: str, theirs: str, start_at: float) -> tuple[Any, str]:
    """In a worker: the one Django configuration of every worker (no LOCATION, ``shared=``); sets
    ``mine`` from ``start_at`` on, then reads ``theirs`` until another worker has set it.
    Returns what it read and the directory of its store."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(SECRET_KEY="tierstore-tests-secret", USE_TZ=True)
        django.setup()
    from tierstore.integrations.django import TierStoreCache

    cache = TierStoreCache("", {"OPTIONS": {"shared": url, "shared_ping_interval": 0.2}})
    time.sleep(max(0.0, start_at - time.time()))
    try:
        cache.set(mine, {"from": mine})
        deadline = time.monotonic() + 10
        while (found := cache.get(theirs)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return found, cache.store.path
    finally:
        cache.close()


def test_django_workers_with_one_configuration_and_no_location_share_values_through_redis(
    workers: Callable[..., Worker], redis_server: RedisServer
) -> None:
    one, two = workers(), workers()
    start_at = time.time() + 1.0
    one.start(f"{__name__}:django_cache", redis_server.url, "one", "two", start_at)
    two.start(f"{__name__}:django_cache", redis_server.url, "two", "one", start_at)
    (read_by_one, path_one), (read_by_two, path_two) = one.result(), two.result()
    assert read_by_one == {"from": "two"} and read_by_two == {"from": "one"}
    assert path_one != path_two  # each process its own tier-2 directory


def test_dogpile_backends_without_a_path_share_one_store_per_namespace_in_a_process(
    redis_server: RedisServer,
) -> None:
    arguments = {"shared": redis_server.url, "shared_ping_interval": 0.2}
    first, second = TierStoreBackend(dict(arguments)), TierStoreBackend(dict(arguments))
    other = TierStoreBackend({**arguments, "namespace": "other"})
    try:
        assert first.store is second.store  # one store in the process, as for a directory
        assert other.store is not first.store and other.store._shared is not None
        value = CachedValue("v", {"ct": 1.0, "v": 2})
        first.set("k", value)
        assert second.get("k") == value
        assert other.get("k") != value  # another namespace, another store
    finally:
        for backend in (first, second, other):
            backend.close()
        close_all()  # the stores of temp directories stay open until then
    with pytest.raises(ValueError, match="path"):
        TierStoreBackend({"memory_items": 5})  # no directory and no shared=: refused


def hold_directory(store: TierStore, path: str, opened: str, seconds: float) -> str:
    """In a worker: hold ``path`` open (``opened`` is created once it is) as another worker would."""
    with TierStore(path, checkpoint_interval=None):
        Path(opened).touch()
        time.sleep(seconds)
    return path


def test_one_directory_named_by_workers_in_shared_mode_is_refused_with_the_way_out(
    workers: Callable[..., Worker], redis_server: RedisServer, tmp_path: Path
) -> None:
    path, opened = str(tmp_path / "one"), tmp_path / "opened"
    holder = workers()
    holder.start(f"{__name__}:hold_directory", path, str(opened), 3.0)
    wait_for(opened.exists)
    backend = TierStoreBackend({"path": path, "shared": redis_server.url})
    with pytest.raises(StoreLocked, match=r"in use by another process.*name no directory"):
        backend.get("k")
    assert holder.result() == path
    backend.get("k")  # once the other process has let it go, it opens
    backend.close()


def test_a_store_without_a_directory_stays_open_from_one_request_to_the_next(redis_server: RedisServer) -> None:
    """Django gives its reference back after every request; a store in a private temp directory
    stays open and warm (a reopen would start from a new, empty directory and subscription)."""
    arguments = {"shared": redis_server.url, "shared_ping_interval": 0.2}
    backend = TierStoreBackend(dict(arguments))
    try:
        store = backend.store
        value = CachedValue("v", {"ct": 1.0, "v": 2})
        backend.set("k", value)
        backend.close()  # as after a request: the last reference given back
        assert not store.closed
        hits = store.stats()["hits_memory"]
        assert backend.get("k") == value and backend.store is store  # the next request: the same store
        assert store.stats()["hits_memory"] == hits + 1  # tier 1 still warm
        backend.close()
    finally:
        close_all()  # at exit, the registry closes what it kept open
    assert store.closed


def test_a_dogpile_mutex_held_across_the_close_of_its_store_releases_quietly(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """As in local mode: the lock outlives the store that took it; giving it back then is no error
    (dogpile releases after the creator ran), and the lease ends by itself in Redis."""
    arguments = {"path": str(tmp_path / "d"), "shared": redis_server.url, "lock_timeout": 1.0}
    backend = TierStoreBackend(dict(arguments))
    mutex = backend.get_mutex("k")
    assert mutex.acquire(wait=False)
    backend.close()  # the last reference: the store closes while the lock is held
    assert backend.store._shared is not None  # reopened on use
    mutex.release()  # raised StoreClosed
    other = backend.get_mutex("k")
    wait_for(lambda: other.acquire(wait=False), timeout=5.0)  # freed at once, or when its lease ended
    other.release()
    backend.close()
