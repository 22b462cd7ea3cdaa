"""An adversary's pass over the Django and dogpile backends and their registry.

Interleavings are forced with hooks (``sys.setprofile`` pausing a thread inside a
store call, a registry lock held across a ``fork()``), never with sleeps; the
directories, threads and processes are real.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import django
import msgpack
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(SECRET_KEY="tierstore-tests-secret", USE_TZ=True)
    django.setup()

from django.core.cache.backends.base import CacheKeyWarning
from django.core.exceptions import ImproperlyConfigured
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE, CachedValue

from tierstore import StoreLocked, TierStore
from tierstore.integrations import registry
from tierstore.integrations.django import PickleCodec, TierStoreCache
from tierstore.integrations.dogpile import TierStoreBackend
from tierstore.integrations.registry import StoreHolder, open_count

WAIT = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def location(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def make(location: str, timeout: Any = 300, **options: Any) -> TierStoreCache:
    return TierStoreCache(location, {"TIMEOUT": timeout, "OPTIONS": {"checkpoint_interval": None, **options}})


@pytest.fixture
def pickled(location: str) -> Iterator[TierStoreCache]:
    backend = make(location, serializer="pickle")
    yield backend
    backend.close()


class PausedInStore:
    """Runs ``call`` in a thread that stops at the entry of the store method ``name`` until ``go()``."""

    def __init__(self, name: str, call: Callable[[], Any]) -> None:
        self.inside, self._go = threading.Event(), threading.Event()
        self.outcome: list[Any] = []
        self._name = name
        self._call = call
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        assert self.inside.wait(WAIT), "the call never reached the store"

    def _hook(self, frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        in_the_store = "tierstore" in code.co_filename and "integrations" not in code.co_filename
        if event == "call" and code.co_name == self._name and in_the_store and not self.inside.is_set():
            self.inside.set()
            self._go.wait(WAIT)

    def _run(self) -> None:
        sys.setprofile(self._hook)
        try:
            self.outcome.append(self._call())
        except BaseException as exc:
            self.outcome.append(exc)
        finally:
            sys.setprofile(None)

    def go(self) -> Any:
        self._go.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive()
        return self.outcome[0]


def can_open_in_another_process(path: str) -> bool:
    code = "import sys; from tierstore import TierStore; TierStore(sys.argv[1], checkpoint_interval=None).close()"
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, timeout=60)
    return done.returncode == 0


# -- the registry under concurrent closes ------------------------------------------------------------


def test_a_close_from_another_thread_waits_for_the_django_call_in_flight(location: str) -> None:
    cache = make(location)  # one backend shared by two threads (async Django can do that)
    cache.set("k", 1)
    reader = PausedInStore("get", lambda: cache.get("k"))
    cache.close()  # the request ends in the other thread while the get is inside the store
    assert open_count(location) == 1  # the reference stays until the call ends
    assert reader.go() == 1  # not StoreClosed
    assert open_count(location) == 0  # and then it is given back: the store closed
    assert can_open_in_another_process(location)
    assert cache.get("k") == 1  # the next use reopens
    cache.close()


def test_a_close_during_a_dogpile_call_waits_for_it(tmp_path: Path) -> None:
    path = str(tmp_path / "d")
    region = make_region().configure("tierstore", arguments={"path": path, "checkpoint_interval": None})
    region.set("k", "v")
    backend = region.backend
    reader = PausedInStore("get_many", lambda: backend.get_multi(["k", "missing"]))
    backend.close()
    found = reader.go()
    assert not isinstance(found, BaseException), found
    assert found[0].payload == "v" and found[1] is NO_VALUE
    assert open_count(path) == 0


def test_a_use_after_a_deferred_close_keeps_the_reference(location: str) -> None:
    cache = make(location)
    cache.set("k", 1)
    reader = PausedInStore("get", lambda: cache.get("k"))
    cache.close()  # deferred: the get is in flight
    assert cache.get("k") == 1  # a new call after close(): it keeps the store it needs
    assert reader.go() == 1
    assert open_count(location) == 1  # held until the next close()
    cache.close()
    assert open_count(location) == 0


def test_many_backends_used_and_closed_at_once_never_see_a_closed_store(location: str) -> None:
    shared = make(location)  # used by every thread and closed by each after its "request"
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        own = make(location)  # Django makes one per thread
        try:
            barrier.wait()
            for i in range(40):
                own.set(f"{n}:{i}", i)
                shared.set(f"s{n}:{i}", i)
                assert shared.get(f"{n}:{i}") == i and own.get(f"s{n}:{i}") == i
                assert shared.incr(f"s{n}:{i}") == i + 1
                shared.close()
                own.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert open_count(location) == 0
    assert can_open_in_another_process(location)  # really closed: the directory lock was released
    assert shared.get("s7:39") == 40
    shared.close()


def test_a_holder_collected_while_its_directory_opens_does_not_deadlock(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    gc.disable()  # the collection happens where the hook puts it
    try:
        forgotten = StoreHolder(path, {})
        forgotten.cycle = forgotten  # type: ignore[attr-defined]  # only the cycle collector frees it
        old = forgotten.store
        old.close()  # closed by its user: the next use opens the directory again
        kept = StoreHolder(path, {})
        keeper = StoreHolder(path, {})
        del forgotten
        collected = threading.Event()

        def hook(frame: FrameType, event: str, arg: Any) -> None:
            code = frame.f_code
            opening = code.co_name == "__init__" and code.co_filename.endswith("store.py")
            if event == "call" and opening and not collected.is_set():
                collected.set()
                gc.collect()  # the holder's finalizer runs while this thread holds the directory's lock

        opened: list[Any] = []

        def open_it() -> None:
            sys.setprofile(hook)
            try:
                opened.append(kept.store)
            finally:
                sys.setprofile(None)

        thread = threading.Thread(target=open_it, daemon=True)  # a deadlocked one must not hang the run
        thread.start()
        thread.join(WAIT)
        assert not thread.is_alive(), "deadlocked"
        assert collected.is_set() and not opened[0].closed
        assert keeper.store is opened[0] and open_count(path) == 2
        kept.close()
        keeper.close()
        assert opened[0].closed and open_count(path) == 0
    finally:
        gc.enable()


# -- paths, settings --------------------------------------------------------------------------------


def test_a_relative_location_does_not_follow_a_later_chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    cache = make("rel")
    monkeypatch.chdir(tmp_path / "elsewhere")  # a daemon's chdir before the first request
    cache.set("k", 1)
    assert (tmp_path / "rel").is_dir() and not (tmp_path / "elsewhere" / "rel").exists()
    second = make("rel")  # now names another directory: a store of its own
    second.set("k", 2)
    assert cache.get("k") == 1 and second.get("k") == 2
    cache.close()
    second.close()


def test_a_dogpile_store_argument_does_not_fix_the_settings_of_its_directory(tmp_path: Path) -> None:
    path = str(tmp_path / "d")
    with TierStore(path, checkpoint_interval=None) as store:
        make_region().configure("tierstore", arguments={"store": store})
    region = make_region().configure("tierstore", arguments={"path": path, "memory_items": 7})
    region.set("k", 1)
    assert region.backend.store._options.memory_items == 7  # the first open's settings, not the lease table's
    region.backend.close()


def test_the_settings_warning_names_what_differs(location: str, caplog: pytest.LogCaptureFixture) -> None:
    first = make(location, memory_items=100, negative_ttl=5.0)
    second = make(location, memory_items=5, negative_ttl=5.0, stale_ttl=1.0)
    with caplog.at_level(logging.WARNING, logger="tierstore.integrations"):
        first.set("k", 1)
        assert second.get("k") == 1
    [message] = [r.getMessage() for r in caplog.records if "first settings win" in r.getMessage()]
    assert "differing: memory_items, stale_ttl" in message
    first.close()
    second.close()


def test_the_first_to_open_wins_not_the_first_made(location: str) -> None:
    made_first = make(location, memory_items=100)
    opened_first = make(location, memory_items=5)
    opened_first.set("k", 1)
    assert made_first.store._options.memory_items == 5
    made_first.close()
    opened_first.close()


def test_an_open_that_failed_fixes_no_settings(location: str, caplog: pytest.LogCaptureFixture) -> None:
    direct = TierStore(location, checkpoint_interval=None)  # opened outside the registry
    refused = make(location, memory_items=3)
    with pytest.raises(StoreLocked):
        refused.get("k")
    direct.close()
    opened = make(location, memory_items=9)
    with caplog.at_level(logging.WARNING, logger="tierstore.integrations"):
        opened.set("k", 1)
    assert opened.store._options.memory_items == 9
    assert not [r for r in caplog.records if "first settings win" in r.getMessage()]
    opened.close()


def test_unknown_options_are_named(location: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="'colour'"):
        make(location, colour="blue")
    with pytest.raises(ImproperlyConfigured, match="serializer"):
        make(location, serializer="json")


def test_bad_option_values_fail_when_the_backend_is_made(location: str, tmp_path: Path) -> None:
    for options, named in (({"memory_items": "lots"}, "memory_items"), ({"lock_timeout": -1}, "lock_timeout")):
        with pytest.raises(ImproperlyConfigured, match=named):
            make(location, **options)
        with pytest.raises((TypeError, ValueError), match=named):
            TierStoreBackend({"path": location, **options})
    assert not os.path.exists(location)  # nothing was opened
    cache = make(location, memory_items=5)  # nor were the bad settings kept as the first ones
    cache.set("k", 1)
    assert cache.store._options.memory_items == 5
    cache.close()


# -- fork -------------------------------------------------------------------------------------------


def _in_child(body: Callable[[], str]) -> str:
    """Run ``body`` in a forked child; its answer (or error) comes back through a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            import faulthandler

            faulthandler.dump_traceback_later(20, exit=True)  # a hang fails the test instead of wedging it
            try:
                answer = body()
            except BaseException as exc:
                answer = f"raised {type(exc).__name__}: {exc}"
            os.write(write, answer.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"the child failed (status {status}): {answer}"
    return answer


def test_a_child_forked_while_a_parent_thread_holds_the_registry_does_not_hang(location: str) -> None:
    cache = make(location)
    cache.set("k", 1)
    directory = registry._directories[os.path.realpath(location)]
    with directory.lock:  # as a parent thread opening or closing would
        answer = _in_child(lambda: repr(cache.get("k")))
    assert answer.startswith("raised StoreLocked") and location in answer  # a clear error, no hang
    assert cache.get("k") == 1 and cache.incr("k") == 2  # the parent is unharmed
    cache.close()


def test_a_child_opens_the_directory_afresh_once_the_parent_let_it_go(location: str) -> None:
    cache = make(location)
    cache.set("k", 1)
    cache.close()  # the parent's last reference: the store is closed

    def child() -> str:
        answer = [cache.get("k"), cache.incr("k"), make(location).get("k")]
        cache.close()
        return repr(answer)

    assert _in_child(child) == "[1, 2, 2]"
    assert cache.get("k") == 2  # the parent reopens after the child closed
    cache.close()


def test_a_forked_child_never_closes_the_parents_store(location: str) -> None:
    cache = make(location)
    cache.set("k", 1)
    parent_store = cache.store

    def child() -> str:
        cache.close()  # gives back nothing of the parent's
        return "ok"

    assert _in_child(child) == "ok"
    assert not parent_store.closed and cache.store is parent_store and open_count(location) == 1
    assert cache.get("k") == 1
    cache.close()


# -- Django's semantics -----------------------------------------------------------------------------


def test_incr_keeps_the_expiry_exactly_even_with_ttl_jitter(location: str) -> None:
    clock = Clock()
    cache = make(location, ttl_jitter=0.5, clock=clock)
    cache.set("n", 1, timeout=100)
    made = cache.make_key("n")
    first = cache.store.get_entry(made)
    assert first is not None and first.expires_at is not None
    for step in range(5):
        clock.now += 1
        assert cache.incr("n") == step + 2
    entry = cache.store.get_entry(made)
    assert entry is not None and entry.expires_at == first.expires_at and entry.value == 6
    clock.now = first.expires_at  # and it expires when it would have
    assert cache.get("n") is None
    with pytest.raises(ValueError):
        cache.incr("n")
    cache.close()


def test_incr_keeps_the_version_and_a_forever_timeout(location: str) -> None:
    cache = make(location)
    cache.set("n", 1, timeout=None)
    made = cache.make_key("n")
    cache.store.set(made, 1, version=7, ttl=None)
    assert cache.decr("n", 3) == -2
    entry = cache.store.get_entry(made)
    assert entry is not None and entry.version == 7 and entry.expires_at is None
    cache.close()


def test_incr_of_values_that_are_not_numbers(location: str) -> None:
    cache = make(location)
    cache.set("s", "text")
    cache.set("l", [1])
    with pytest.raises(TypeError):
        cache.incr("s")
    with pytest.raises(TypeError):
        cache.incr("l")
    assert cache.get("s") == "text"
    with pytest.raises(ValueError, match="not found"):
        cache.incr("missing")
    cache.set("f", 1.5)
    assert cache.incr("f") == 2.5
    cache.close()


def test_timeout_zero_and_negative(location: str) -> None:
    cache = make(location)
    cache.set("k", 1, timeout=0)
    assert cache.get("k") is None
    assert cache.add("k", 1, timeout=0) is True  # absent: "added", and expired at once
    assert cache.get("k") is None
    cache.set("k", 1)
    assert cache.add("k", 2, timeout=0) is False
    assert cache.get("k") == 1
    cache.set("k", 1, timeout=-5)
    assert not cache.has_key("k")
    assert cache.get_or_set("g", 3, timeout=0) == 3 and cache.get("g") is None
    cache.set("t", 1)
    assert cache.touch("t", timeout=0) is True and cache.get("t") is None
    assert cache.touch("missing") is False and cache.touch("missing", timeout=0) is False
    cache.set("inf", 1, timeout=float("inf"))  # for ever, as in locmem
    entry = cache.store.get_entry(cache.make_key("inf"))
    assert entry is not None and entry.value == 1 and entry.expires_at is None
    assert cache.add("inf2", 1, timeout=float("-inf")) is True and not cache.has_key("inf2")
    with pytest.raises(ValueError):
        cache.set("nan", 1, timeout=float("nan"))
    cache.close()


def test_get_or_set_with_a_callable_and_with_none(location: str) -> None:
    cache = make(location)
    calls: list[int] = []

    def compute(value: int) -> Callable[[], int]:
        def call() -> int:
            calls.append(value)
            return value

        return call

    assert cache.get_or_set("c", compute(42)) == 42
    assert cache.get_or_set("c", compute(43)) == 42
    assert calls == [42]
    assert cache.get_or_set("n", None) is None
    assert cache.has_key("n")  # None is a value that is stored
    cache.close()


def test_versions_and_incr_version(location: str) -> None:
    cache = make(location)
    cache.set("k", "v1", version=1)
    assert cache.get("k", version=2) is None
    assert cache.incr_version("k") == 2
    assert cache.get("k", version=1) is None and cache.get("k", version=2) == "v1"
    assert cache.decr_version("k", version=2) == 1
    assert cache.get("k") == "v1"
    with pytest.raises(ValueError):
        cache.incr_version("missing")
    cache.close()


def test_get_many_set_many_delete_many(location: str) -> None:
    cache = make(location)
    assert cache.set_many({"a": 1, "b": None, "c": [1, 2]}) == []
    assert cache.get_many(["a", "b", "c", "d", "a"]) == {"a": 1, "b": None, "c": [1, 2]}
    cache.delete_many(["a", "a", "b", "missing"])
    assert cache.get_many(["a", "b", "c"]) == {"c": [1, 2]}
    with pytest.raises(TypeError, match="object"):
        cache.set_many({"x": 1, "y": object()})
    assert cache.get_many(["x", "y"]) == {}  # all or nothing
    cache.close()


def test_get_many_answers_every_key_that_makes_one_key(location: str) -> None:
    cache = make(location)
    cache.set(1, "one")  # 1 and "1" make the same key, as in every Django backend
    assert cache.get_many([1, "1", "2"]) == {1: "one", "1": "one"}
    cache.close()


def test_keys_django_warns_about_still_work(location: str) -> None:
    cache = make(location)
    for key in ("with space", "ctrl\x01char", "k" * 300, "é" * 2000):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cache.set(key, key)
            assert cache.get(key) == key
        assert any(issubclass(w.category, CacheKeyWarning) for w in caught), key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        assert cache.get("é" * 1999) is None  # a long key's digest tells it apart from its neighbours
    cache.close()


def test_a_key_function_is_used(location: str) -> None:
    cache = TierStoreCache(location, {"KEY_FUNCTION": lambda key, prefix, version: f"custom|{key}", "OPTIONS": {}})
    cache.set("k", 1)
    assert cache.store.get("custom|k") == 1
    cache.close()


def test_values_msgpack_cannot_store_and_values_too_big(location: str) -> None:
    cache = make(location, max_value_bytes=1000)
    with pytest.raises(TypeError, match="set"):
        cache.set("k", {1, 2})
    with pytest.raises(TypeError, match="serializer='pickle'"):
        cache.add("k", object())
    assert not cache.has_key("k")
    with pytest.raises(ValueError, match="max_value_bytes"):
        cache.set("big", b"x" * 5000)
    assert cache.get("big") is None
    cache.close()


# -- signed pickles ---------------------------------------------------------------------------------


def _planted(pickled: TierStoreCache, key: str, payload: Any) -> None:
    pickled.store.set(pickled.make_key(key), payload)


def test_forged_and_moved_payloads_are_counted_misses(pickled: TierStoreCache, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # what an attacker plants: pickle opcodes that call open(marker, "w") when unpickled, written by hand
    evil = b"cbuiltins\nopen\n(V" + str(marker).encode() + b"\nVw\ntR."
    opens_marker = type("Evil", (), {"__reduce__": lambda self: (open, (str(marker), "w"))})()
    other = PickleCodec("another secret")
    pickled.set("real", {"a": 1})
    good = pickled.store.get(pickled.make_key("real"))
    forged = {
        "other_secret": other.encode(pickled.make_key("f"), opens_marker),  # signed, but not with our secret
        "truncated": good[:-3],
        "tag_only": b"TSP1",
        "moved": good,  # valid, but signed for another key
        "msgpack_value": {"a": 1},
        "raw_pickle": evil,
    }
    before = pickled.store.stats()["corrupt_records"]
    for name, payload in forged.items():
        _planted(pickled, name, payload)
        assert pickled.get(name, "miss") == "miss", name
        assert not pickled.has_key(name), name
        assert pickled.get_many([name]) == {}, name
        with pytest.raises(ValueError):
            pickled.incr(name)
    assert pickled.store.stats()["corrupt_records"] - before == 4 * len(forged)
    for name in forged:
        assert pickled.add(name, "fresh") is True, name  # absent to add
        assert pickled.get(name) == "fresh"
    _planted(pickled, "gos", forged["other_secret"])
    assert pickled.get_or_set("gos", lambda: "made") == "made"
    assert not marker.exists()  # nothing was ever unpickled


def test_a_payload_of_a_bytes_key_is_not_valid_for_a_str_key() -> None:
    codec = PickleCodec("s3cret")
    signed = codec.encode(b"abc", "value")
    assert codec.verify(b"abc", signed) and codec.decode(b"abc", signed) == "value"
    for other in ("\x00abc", "abc", "\xffabc", b"\x00abc"):
        assert not codec.verify(other, signed), other


def test_a_directory_switched_between_serializers(location: str) -> None:
    as_msgpack = make(location)
    as_msgpack.set("m", {"a": 1})
    as_msgpack.close()
    as_pickle = make(location, serializer="pickle", secret="s3cret")
    assert as_pickle.get("m", "miss") == "miss"
    as_pickle.set("p", {"a": 1})
    as_pickle.close()
    as_msgpack = make(location)
    before = as_msgpack.store.stats()["corrupt_records"]
    assert as_msgpack.get("p", "miss") == "miss"  # a signed pickle is not a msgpack value
    assert not as_msgpack.has_key("p") and as_msgpack.get_many(["p"]) == {}
    assert as_msgpack.store.stats()["corrupt_records"] - before == 3
    assert as_msgpack.add("p", 1) is True and as_msgpack.get("p") == 1
    with pytest.raises(ValueError, match="signed pickle"):
        as_msgpack.set("b", b"TSP1 looks like one")
    assert as_msgpack.get("b") is None
    as_msgpack.close()


# -- dogpile ----------------------------------------------------------------------------------------


@pytest.fixture
def region_path(tmp_path: Path) -> str:
    return str(tmp_path / "d")


def test_dogpile_records_of_the_wrong_shape_are_misses(region_path: str) -> None:
    region = make_region().configure("tierstore", arguments={"path": region_path, "checkpoint_interval": None})
    store = region.backend.store
    hostile = [
        ["x", {}],
        ["x", {"ct": 1.0}],
        ["x", {"v": 2}],
        ["x", {"ct": None, "v": 2}],
        ["x", {"ct": "soon", "v": 2}],
        ["x", {"ct": 1.0, "v": "2"}],
        ["x", {"ct": True, "v": 2}],
        ["x", {"ct": float("nan"), "v": 2}],
        ["x", "metadata"],
        [1, 2, 3],
        "plain",
        b"bytes",
    ]
    for value in hostile:
        store.set("k", value)
        assert region.get("k") is NO_VALUE, value
        assert region.get_or_create("k", lambda: "made", expiration_time=60) == "made", value
    region.backend.close()


def test_dogpile_cached_values_round_trip_exactly(region_path: str) -> None:
    backend = TierStoreBackend({"path": region_path, "checkpoint_interval": None})
    value = CachedValue({"x": [1.5, None]}, {"ct": 1234567890.1234567, "v": 2})
    backend.set_multi({"a": value, "b": value})
    for got in (backend.get("a"), *backend.get_multi(["b", "a"])):
        assert got.payload == {"x": [1.5, None]} and got.metadata == {"ct": 1234567890.1234567, "v": 2}
    assert backend.get_multi([]) == [] and backend.get_multi(["zz", "a"])[0] is NO_VALUE
    backend.delete_multi(["a", "a", "missing"])
    assert backend.get("a") is NO_VALUE
    with pytest.raises(TypeError):
        backend.set("c", "not a CachedValue")
    with pytest.raises(ValueError, match="metadata"):
        backend.set("c", CachedValue(1, {"ct": 1.0}))  # it would read back as a miss
    assert backend.get("c") is NO_VALUE
    backend.close()


def test_two_regions_on_one_directory_and_a_serializer_region(region_path: str) -> None:
    plain = make_region().configure("tierstore", arguments={"path": region_path})
    serialized = make_region(serializer=msgpack.packb, deserializer=msgpack.unpackb).configure(
        "tierstore", arguments={"path": region_path}
    )
    assert plain.backend.store is serialized.backend.store
    serialized.set("s", b"\x00bytes")
    plain.set("p", 1)
    assert serialized.get("s") == b"\x00bytes" and plain.get("p") == 1
    assert serialized.get("p") is NO_VALUE and plain.get("s") is NO_VALUE  # each reads only its own shape
    plain.backend.close()
    assert serialized.get("s") == b"\x00bytes"
    serialized.backend.close()
    assert open_count(region_path) == 0


def test_a_dogpile_mutex_outlives_the_close_of_its_backend(region_path: str) -> None:
    backend = TierStoreBackend({"path": region_path, "lock_timeout": 0.5})
    mutex = backend.get_mutex("k")
    assert mutex.acquire()
    backend.close()  # its holder "died" with the lock taken
    other = TierStoreBackend({"path": region_path, "lock_timeout": 0.5})
    contender = other.get_mutex("k")
    assert contender.locked() and not contender.acquire(wait=False)
    assert contender.acquire(wait=True)  # the lease ends and frees it
    mutex.release()  # a late release by the dead holder frees nothing
    assert contender.locked()
    contender.release()
    other.close()


def test_a_process_killed_holding_a_dogpile_mutex_leaves_nothing_held(region_path: str) -> None:
    code = """
import os, signal, sys
from dogpile.cache import make_region
region = make_region().configure("tierstore", arguments={"path": sys.argv[1], "lock_timeout": 600})
region.set("k", "from the child")
assert region.backend.get_mutex("k").acquire()
sys.stdout.write("held\\n")
sys.stdout.flush()
sys.stdin.read()
"""
    child = subprocess.Popen(
        [sys.executable, "-c", code, region_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        with pytest.raises(StoreLocked):
            TierStoreBackend({"path": region_path}).get("k")  # the child has it open
    finally:
        child.kill()  # SIGKILL: no close, no release
        child.wait(WAIT)
    region = make_region().configure("tierstore", arguments={"path": region_path, "lock_timeout": 600})
    assert region.get("k") == "from the child"
    mutex = region.backend.get_mutex("k")
    assert mutex.acquire(wait=False)  # the dead process's lock died with it
    mutex.release()
    region.backend.close()


def test_store_holder_rejects_unknown_settings_and_counts_never_go_negative(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    holders = [StoreHolder(path, {}) for _ in range(3)]
    for holder in holders:
        holder.store.get("k")
    for holder in holders * 3:
        holder.close()
    assert open_count(path) == 0
    with pytest.raises(StoreLocked), holders[0] as store:
        TierStore(path)  # while a holder has it open, a second open is refused
    assert not store.closed and open_count(path) == 1
    holders[0].close()
    assert store.closed and open_count(path) == 0
