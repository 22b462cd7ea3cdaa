"""A second adversary's pass over the integrations: secrets, warnings, spellings of a directory, dogpile."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(SECRET_KEY="tierstore-tests-secret", USE_TZ=True)
    django.setup()

from django.core.exceptions import ImproperlyConfigured

from tierstore import TierStore
from tierstore.integrations.django import PickleCodec, TierStoreCache
from tierstore.integrations.dogpile import TierStoreBackend
from tierstore.integrations.registry import StoreHolder, open_count


@pytest.fixture
def location(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def make(location: str, timeout: Any = 300, **options: Any) -> TierStoreCache:
    return TierStoreCache(location, {"TIMEOUT": timeout, "OPTIONS": {"checkpoint_interval": None, **options}})


@pytest.mark.parametrize("secret", [123, [1, 2], 1.5, object()])
def test_a_secret_that_is_not_str_or_bytes_is_refused(location: str, secret: Any) -> None:
    # an int secret used to sign with that many zero bytes: a key anyone can guess
    with pytest.raises(ImproperlyConfigured, match="str or bytes secret"):
        make(location, serializer="pickle", secret=secret)
    with pytest.raises(TypeError, match="str or bytes secret"):
        PickleCodec(secret)
    assert not os.path.exists(location)  # nothing opened


def test_a_secret_with_a_lone_surrogate_is_refused_by_name(location: str) -> None:
    # it has no UTF-8 bytes: a raw UnicodeEncodeError that never said which setting was wrong
    with pytest.raises(ImproperlyConfigured, match="secret that is valid Unicode"):
        make(location, serializer="pickle", secret="abc\ud800")
    with pytest.raises(ValueError, match="secret that is valid Unicode"):
        PickleCodec("\udcff")
    assert not os.path.exists(location)


@pytest.mark.parametrize("key", ["\ud800", "a\udcff"])
def test_a_key_with_a_lone_surrogate_is_the_stores_value_error_with_pickles(location: str, key: str) -> None:
    # the store refuses such a key as 'not valid Unicode'; the pickle's HMAC met it first, raw
    cache = make(location, serializer="pickle")
    try:
        for write in (lambda: cache.set(key, 1), lambda: cache.add(key, 1), lambda: cache.set_many({key: 1})):
            with pytest.raises(ValueError, match="key is not valid Unicode") as caught:
                write()
            assert type(caught.value) is ValueError
        assert len(cache.store) == 0
    finally:
        cache.close()


def test_max_entries_warns_for_every_cache_configured_with_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tierstore.integrations"):
        for name in ("one", "two"):  # the first must not silence the second
            caplog.clear()
            make(str(tmp_path / name), MAX_ENTRIES=30, CULL_FREQUENCY=2).close()
            messages = [record.getMessage() for record in caplog.records]
            assert any("MAX_ENTRIES" in m and "CULL_FREQUENCY" in m for m in messages), messages
        caplog.clear()
        make(str(tmp_path / "two"), MAX_ENTRIES=30, CULL_FREQUENCY=2).close()  # the same again: once is enough
        assert not [r for r in caplog.records if "MAX_ENTRIES" in r.getMessage()]


def test_spellings_of_one_directory_share_one_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    location = tmp_path / "cache"
    first = make(str(location))
    first.set("k", 1)
    link = tmp_path / "link"
    link.symlink_to(location, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    others = [make(f"{location}/"), make(str(link)), make("cache"), make(f"{tmp_path}/./link/../cache")]
    assert [other.get("k") for other in others] == [1, 1, 1, 1]
    assert open_count(location) == 5
    for backend in [first, *others]:
        backend.close()
    assert open_count(location) == 0


class PausedAt:
    """Runs ``call`` in a thread that pauses when it calls a function named ``name`` (a profile hook)."""

    def __init__(self, name: str, call: Callable[[], Any]) -> None:
        self._name, self._call = name, call
        self.reached, self._go = threading.Event(), threading.Event()
        self.outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.reached.wait(10)

    def _hook(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name == self._name and not self.reached.is_set():
            self.reached.set()
            self._go.wait(10)

    def _run(self) -> None:
        sys.setprofile(self._hook)
        try:
            self.outcome.append(self._call())
        finally:
            sys.setprofile(None)

    def go(self) -> Any:
        self._go.set()
        self._thread.join(10)
        assert not self._thread.is_alive()
        return self.outcome[0]


def test_a_holder_collected_while_another_thread_holds_the_directory_gives_its_reference_back(
    tmp_path: Path,
) -> None:
    kept, dropped = StoreHolder(tmp_path, {}), StoreHolder(tmp_path, {})
    kept.store.set("k", 1)
    assert dropped.store is kept.store
    kept.close()
    # another thread holds the directory's lock (in open_count, reading whether the store is closed)
    counting = PausedAt("closed", lambda: open_count(tmp_path))
    gc_was = gc.isenabled()
    gc.disable()
    try:
        del dropped
        gc.collect()  # its give-back finds the lock taken: it is queued
    finally:
        if gc_was:
            gc.enable()
    assert counting.go() == 1  # counted before the lock was released
    assert open_count(tmp_path) == 0  # given back when that thread let the lock go: the store closed
    reopened = StoreHolder(tmp_path, {})
    assert reopened.store.get("k") == 1
    reopened.close()


def test_aclose_gives_the_reference_back_as_close_does(location: str) -> None:
    import asyncio

    cache = make(location)

    async def request() -> Any:
        await cache.aset("k", 1)
        value = await cache.aget("k")
        await cache.aclose()  # Django's BaseCache.aclose does nothing
        return value

    assert asyncio.run(request()) == 1
    assert open_count(location) == 0
    assert cache.get("k") == 1  # reopened on use
    cache.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
def test_a_forked_child_gets_lock_tables_of_its_own_for_a_store_passed_in(tmp_path: Path) -> None:
    store = TierStore(tmp_path / "d", checkpoint_interval=None)
    given = TierStoreBackend({"store": store})
    named = TierStoreBackend({"path": str(tmp_path / "e")})
    held = [given.get_mutex("k"), named.get_mutex("k")]
    assert all(mutex.acquire(wait=False) for mutex in held)
    pid = os.fork()
    if pid == 0:  # no parent thread holds anything here: both tables start empty, as the registry does
        free = [given.get_mutex("k").acquire(wait=False), named.get_mutex("k").acquire(wait=False)]
        os._exit(0 if free == [True, True] else 1)
    _, status = os.waitpid(pid, 0)
    for mutex in held:
        mutex.release()
    named.close()
    store.close()
    assert os.waitstatus_to_exitcode(status) == 0
