"""TierStoreCache, the Django cache backend: timeouts, incr/decr, serializers, signed pickles, sharing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(SECRET_KEY="tierstore-tests-secret", USE_TZ=True)
    django.setup()

from django.core.cache.backends.base import CacheKeyWarning
from django.core.exceptions import ImproperlyConfigured

from tierstore.integrations.django import PickleCodec, TierStoreCache
from tierstore.integrations.registry import open_count


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def location(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def make(location: str, timeout: Any = 300, **options: Any) -> TierStoreCache:
    return TierStoreCache(location, {"TIMEOUT": timeout, "OPTIONS": options})


@pytest.fixture
def cache(location: str) -> Iterator[TierStoreCache]:
    backend = make(location, serializer="pickle", checkpoint_interval=None)
    yield backend
    backend.close()


class WritesAFile:
    """A value whose unpickling creates a file: the payload a writer without the secret would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_a_payload_signed_under_another_secret_is_a_counted_miss_and_never_unpickled(
    cache: TierStoreCache, tmp_path: Path
) -> None:
    marker = tmp_path / "ran-code"
    made = cache.make_key("k")
    forged = PickleCodec("another secret").encode(made, WritesAFile(marker))
    cache.store.set(made, forged)  # straight into the store, as someone with the directory but not the secret
    before = cache.store.stats()["corrupt_records"]
    assert cache.get("k", "miss") == "miss"
    assert cache.get_many(["k"]) == {}
    assert not cache.has_key("k")
    with pytest.raises(ValueError):
        cache.incr("k")
    assert cache.store.stats()["corrupt_records"] >= before + 4
    assert not marker.exists()
    assert cache.add("k", "fresh") is True  # a forged value counts as absent: add replaces it
    assert cache.get("k") == "fresh"
    cache.store.set(made, forged)
    assert cache.get_or_set("k", "computed") == "computed" and cache.get("k") == "computed"
    assert not marker.exists()
    # the same payload signed for another key is refused too
    moved = PickleCodec(settings.SECRET_KEY).encode(cache.make_key("elsewhere"), WritesAFile(marker))
    cache.store.set(made, moved)
    assert cache.get("k", "miss") == "miss"
    assert not marker.exists()
    # damaged or foreign values in the store are misses as well
    for stored in (b"", b"TSP1", b"junk" * 20, 12, ["a"], forged[:-1]):
        cache.store.set(made, stored)
        assert cache.get("k", "miss") == "miss"
    assert not marker.exists()
    # and the test's payload is live: signed with the right secret, it does run when read
    cache.store.set(made, PickleCodec(settings.SECRET_KEY).encode(made, WritesAFile(marker)))
    cache.get("k")
    assert marker.exists()


def test_touch_and_delete_answer_a_payload_that_fails_the_check_as_a_miss(cache: TierStoreCache) -> None:
    """As ``get``, ``has_key`` and ``add`` do: ``touch`` and ``delete`` answer ``False`` (Django's answer for
    a missing key), counted in ``corrupt_records``; ``delete`` still removes it."""
    made = cache.make_key("k")
    cache.store.set(made, PickleCodec("another secret").encode(made, "forged"))
    before = cache.store.stats()["corrupt_records"]
    assert cache.touch("k", 60) is False
    assert cache.touch("k", 0) is False
    assert cache.delete("k") is False
    assert cache.store.stats()["corrupt_records"] >= before + 3
    assert cache.store.get(made) is None  # removed all the same
    cache.set("k", "fine")
    assert cache.touch("k", 60) is True and cache.delete("k") is True


def test_pickle_needs_a_secret_and_options_are_checked(location: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="secret"):
        make(location, serializer="pickle", secret="")
    with pytest.raises(ImproperlyConfigured, match="serializer"):
        make(location, serializer="json")
    with pytest.raises(ImproperlyConfigured, match="colour"):
        make(location, colour="blue")
    with pytest.raises(ImproperlyConfigured, match="LOCATION"):
        make("")
    backend = make(location, serializer="pickle")  # the secret defaults to settings.SECRET_KEY
    backend.set("k", (1, 2))
    assert backend.get("k") == (1, 2)
    backend.close()


def test_timeouts_zero_none_default_and_negative(location: str) -> None:
    clock = Clock()
    cache = make(location, timeout=60, clock=clock, checkpoint_interval=None)
    cache.set("default", 1)
    assert cache.store.get_entry(cache.make_key("default")).expires_at == clock.now + 60
    cache.set("forever", 1, timeout=None)
    assert cache.store.get_entry(cache.make_key("forever")).expires_at is None
    cache.set("zero", 1, timeout=0)
    cache.set("negative", 1, timeout=-5)
    assert cache.get("zero") is None and cache.get("negative") is None
    assert cache.add("zero", 1, timeout=0) is True  # added, and expired at once
    assert cache.get("zero") is None
    assert cache.add("forever", 2, timeout=0) is False  # a live value stays
    cache.set_many({"a": 1, "b": 2}, timeout=0)
    assert cache.get_many(["a", "b"]) == {}
    cache.set("touched", 1, timeout=10)
    assert cache.touch("touched", timeout=0) is True
    assert cache.get("touched") is None
    assert cache.touch("touched") is False
    cache.set("touched", 1, timeout=10)
    assert cache.touch("touched", timeout=None) is True
    clock.now += 1_000
    assert cache.get("touched") == 1
    assert cache.get("default") is None  # its 60 s passed
    cache.close()


def test_incr_and_decr_keep_the_expiry(location: str) -> None:
    clock = Clock()
    cache = make(location, clock=clock, checkpoint_interval=None)
    cache.set("n", 10, timeout=100)
    made = cache.make_key("n")
    expires_at = cache.store.get_entry(made).expires_at
    clock.now += 40
    assert cache.incr("n") == 11
    assert cache.decr("n", 5) == 6
    assert cache.store.get_entry(made).expires_at == pytest.approx(expires_at)
    clock.now += 61
    with pytest.raises(ValueError):
        cache.incr("n")  # expired
    with pytest.raises(ValueError):
        cache.decr("missing")
    cache.set("forever", 1, timeout=None)
    assert cache.incr("forever", 2) == 3
    assert cache.store.get_entry(cache.make_key("forever")).expires_at is None
    cache.set("none", None)
    with pytest.raises(TypeError):
        cache.incr("none")
    cache.close()


def test_incr_is_atomic_across_the_threads_of_a_process(location: str) -> None:
    cache = make(location, checkpoint_interval=None)
    cache.set("n", 0, timeout=None)

    def add() -> None:
        backend = make(location, checkpoint_interval=None)  # one backend per thread, as Django has
        for _ in range(50):
            backend.incr("n")
        backend.close()

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get("n") == 200
    cache.close()


def test_versions_prefixes_and_key_functions(location: str) -> None:
    plain = make(location)
    prefixed = TierStoreCache(location, {"KEY_PREFIX": "p", "VERSION": 2})
    custom = TierStoreCache(location, {"KEY_FUNCTION": lambda key, prefix, version: f"custom-{key}"})
    plain.set("k", "v1")
    plain.set("k", "v2", version=2)
    assert plain.get("k") == "v1" and plain.get("k", version=2) == "v2"
    assert prefixed.get("k") is None
    prefixed.set("k", "p")
    assert plain.get("k") == "v1" and prefixed.get("k") == "p"
    assert plain.incr_version("k") == 2
    assert plain.get("k", version=2) == "v1" and plain.get("k") is None
    custom.set("k", "c")
    assert plain.store.get("custom-k") == "c"
    assert plain.get_or_set("g", lambda: 5) == 5 and plain.get_or_set("g", 6) == 5
    with pytest.warns(CacheKeyWarning):
        plain.set("a key with spaces", 1)
    long_key = "x" * 5000  # past the store's key limit: stored under a digest
    with pytest.warns(CacheKeyWarning):
        plain.set(long_key, 1)
        assert plain.get(long_key) == 1 and plain.has_key(long_key)
        assert plain.get("x" * 4999) is None
    for backend in (plain, prefixed, custom):
        backend.close()


def test_msgpack_values_and_a_clear_type_error(location: str) -> None:
    cache = make(location)
    cache.set("t", (1, 2))
    assert cache.get("t") == [1, 2]  # msgpack: a tuple comes back as a list
    with pytest.raises(TypeError, match="serializer='pickle'"):
        cache.set("o", object())
    with pytest.raises(TypeError, match="serializer='pickle'"):
        cache.add("o", object())
    with pytest.raises(TypeError, match="serializer='pickle'"):
        cache.set_many({"ok": 1, "o": object()})
    assert cache.get("ok") is None  # all or nothing
    assert "o" not in cache
    cache.close()


def test_many_calls_delete_and_clear(location: str) -> None:
    cache = make(location)
    assert cache.set_many({"a": 1, "b": 2, "c": 3}) == []
    assert cache.get_many(["a", "b", "x"]) == {"a": 1, "b": 2}
    assert cache.delete("a") is True and cache.delete("a") is False
    cache.delete_many(["b", "x"])
    assert cache.get_many(["a", "b", "c"]) == {"c": 3}
    cache.store.incr("a counter")
    cache.clear()
    assert cache.get("c") is None
    assert cache.store.counter("a counter") == 1  # clear() empties the entries only
    cache.close()


def test_close_gives_the_store_back_and_use_reopens_it(location: str) -> None:
    first, second = make(location), make(location)
    first.set("k", 1)
    assert second.get("k") == 1
    store = first.store
    assert open_count(location) == 2
    first.close()  # as after a request
    assert not store.closed
    second.close()
    assert store.closed and open_count(location) == 0
    assert first.get("k") == 1  # reopened
    assert open_count(location) == 1
    first.close()


def test_django_closes_its_caches_after_a_request(location: str) -> None:
    from django.core import signals
    from django.core.cache import caches
    from django.test import override_settings

    config = {"default": {"BACKEND": "tierstore.integrations.django.TierStoreCache", "LOCATION": location}}
    with override_settings(CACHES=config):
        caches["default"].set("k", 1)
        assert open_count(location) == 1
        signals.request_finished.send(sender=None)
        assert open_count(location) == 0
        assert caches["default"].get("k") == 1
        signals.request_finished.send(sender=None)
    assert open_count(location) == 0


def test_unsupported_and_conflicting_options_warn(location: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tierstore.integrations"):
        first = make(location, memory_items=100, MAX_ENTRIES=30)
        second = make(location, memory_items=5)
        first.set("k", 1)
        assert second.get("k") == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("first settings win" in message for message in messages)
    first.close()
    second.close()


def test_the_async_calls(location: str) -> None:
    import asyncio

    cache = make(location)

    async def calls() -> tuple[Any, ...]:
        await cache.aset("k", 1)
        added = await cache.aadd("k", 2)
        value = await cache.aget("k")
        incremented = await cache.aincr("k", 5)
        await cache.aset_many({"a": 1, "b": 2})
        many = await cache.aget_many(["a", "b", "c"])
        await cache.adelete_many(["a"])
        return added, value, incremented, many, await cache.ahas_key("a"), await cache.atouch("b", 10)

    assert asyncio.run(calls()) == (False, 1, 6, {"a": 1, "b": 2}, False, True)
    cache.close()
