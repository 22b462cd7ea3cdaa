"""Races of the shared tier: close, fork and resyncs at bad moments, outages mid-load, cross-process prefix deletes."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.shared.parts_support import PREFIX, dump
from tests.shared.redis_server import RedisServer
from tierstore import SharedUnavailable, StoreClosed, StoreLocked, TierStore
from tierstore.codec import encode_key
from tierstore.keyspace import NS_ENTRY
from tierstore.shared.mirror import envelope_stamp

Stores = Callable[..., TierStore]


def test_a_lease_wait_ends_with_store_closed_when_the_store_closes(stores: Stores, raw: redis.Redis) -> None:
    store = stores()
    raw.set(PREFIX + b"l:" + encode_key("k"), b"someone-else", px=60_000)
    outcome: list[Any] = []

    def wait() -> None:
        try:
            outcome.append(store.get_or_load("k", lambda: 1))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    assert not outcome  # waiting for the other holder
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 10
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], StoreClosed)


def test_a_fill_whose_reply_is_lost_in_local_mode_returns_the_loaded_value_and_keeps_no_copy(
    redis_server: RedisServer, stores: Stores
) -> None:
    store = stores(shared_failure="local", shared_grace=60.0)
    other = stores()

    def loader() -> str:
        redis_server.pause()  # the fill's call meets a paused server: its reply never comes
        return "loaded"

    try:
        started = time.monotonic()
        assert store.get_or_load("k", loader) == "loaded"
        assert time.monotonic() - started < 15
        assert store._memory.get("k") is None
    finally:
        redis_server.resume()
    # the fill ran once the server resumed, or not at all: either way every store agrees after resync
    deadline = time.monotonic() + 15
    while True:
        try:
            if store.get("k") == other.get("k"):
                break
        except SharedUnavailable:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _in_child(store: TierStore) -> dict[str, str]:
    """Fork; in the child, call the store every way and report each outcome's type name."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        outcomes: dict[str, str] = {}
        try:
            for name, call in (
                ("get", lambda: store.get("k")),
                ("set", lambda: store.set("k", 2)),
                ("delete_prefix", lambda: store.delete_prefix("k")),
                ("get_or_load", lambda: store.get_or_load("n", lambda: 1)),
                ("incr", lambda: store.incr("c")),
                ("keys", lambda: list(store.keys())),
                ("index", lambda: store.index("i").add("m", 1.0)),
                ("close", store.close),
            ):
                try:
                    call()
                    outcomes[name] = "returned"
                except BaseException as exc:
                    outcomes[name] = type(exc).__name__
            os.write(write, json.dumps(outcomes).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


def test_a_forked_child_raises_store_forked_and_the_parent_keeps_working(stores: Stores, raw: redis.Redis) -> None:
    store = stores()
    other = stores()
    store.set("k", 1)
    store.index("i").add("m", 0.0)
    before = dump(raw)
    outcomes = _in_child(store)
    assert outcomes == dict.fromkeys(outcomes, "StoreForked") and len(outcomes) == 8
    assert dump(raw) == before  # the child wrote nothing
    other.set("k", 3)  # the parent's listener still hears the others
    deadline = time.monotonic() + 10
    while store.get("k") != 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    store.set("k", 4)
    assert other.get("k") == 4 or other.get("k") == 3


def test_close_while_redis_is_paused_is_bounded(redis_server: RedisServer, stores: Stores) -> None:
    store = stores()
    store.set("k", 1)
    store.refresh_every("r", lambda: 1, 0.2)
    time.sleep(0.5)  # a round has claimed the job: close frees the claim
    redis_server.pause()
    try:
        started = time.monotonic()
        store.close()
        assert time.monotonic() - started < 15
    finally:
        redis_server.resume()


def test_on_busy_stale_across_processes_answers_the_value_kept_past_expiry(stores: Stores, raw: redis.Redis) -> None:
    clock = [1000.0]
    holder = stores(clock=lambda: clock[0], stale_ttl=60)
    asker = stores(clock=lambda: clock[0], stale_ttl=60)
    holder.set("k", "old", ttl=1)
    assert asker.get("k") == "old"
    clock[0] += 5  # expired for both, still kept stale_ttl longer in Redis
    raw.set(PREFIX + b"l:" + encode_key("k"), b"a-loader-elsewhere", px=60_000)
    assert asker.get_or_load("k", lambda: "new", on_busy="stale") == "old"
    fresh = stores(clock=lambda: clock[0], stale_ttl=60)
    assert fresh.get_or_load("k", lambda: "new", on_busy="stale") == "old"  # stale from Redis


def test_a_resync_during_a_commit_leaves_no_trusted_copy_of_what_was_read_before_it(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores()
    other = stores()
    other.set("k", "before")
    deadline = time.monotonic() + 10
    while store.stats()["invalidations_received"] < 1:  # heard first: its drop does not refuse the commit
        assert time.monotonic() < deadline
        time.sleep(0.01)
    shared = store._shared
    assert shared is not None
    mirror, outage = shared.mirror, shared.outage
    real_copy = mirror._copy
    racers: list[threading.Thread] = []

    def copy_racing_a_resync(*args: Any) -> Any:
        # a gap is found while the read's copy is being committed: a missed message may have
        # made what the read fetched stale
        racer = threading.Thread(target=outage.resync, args=("test",))
        racer.start()
        racer.join(0.5)  # blocks while the commit holds its stripe: then it runs right after
        racers.append(racer)
        return real_copy(*args)

    monkeypatch.setattr(mirror, "_copy", copy_racing_a_resync)
    assert store.get("k") == "before"
    monkeypatch.undo()
    for racer in racers:
        racer.join(10)
    assert racers
    # nothing read before the gap is trusted after it: not in tier 1, and tier 2's copy below the floor
    assert store._memory.get("k") is None
    data = store._disk.get(NS_ENTRY + encode_key("k"))
    found = None if data is None else envelope_stamp(data)
    assert found is None or found[0] <= mirror.floor


def _listeners() -> int:
    return sum(thread.name == "tierstore-shared-listener" and thread.is_alive() for thread in threading.enumerate())


def test_a_second_open_of_the_same_path_is_refused_and_leaves_nothing_running(
    redis_server: RedisServer, stores: Stores, tmp_path: Any, raw: redis.Redis
) -> None:
    path = str(tmp_path / "one")
    first = stores(path=path)
    first.set("k", 1)
    running, clients = _listeners(), len(raw.client_list())
    with pytest.raises(StoreLocked):
        TierStore(path=path, shared=redis_server.url)
    deadline = time.monotonic() + 10
    while _listeners() != running or len(raw.client_list()) > clients:
        assert time.monotonic() < deadline, (_listeners(), raw.client_list())
        time.sleep(0.05)
    second = stores(namespace="tierstore")  # the same namespace twice in one process: two stores, one truth
    second.set("k", 2)
    deadline = time.monotonic() + 10
    while first.get("k") != 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def write_and_delete_prefixes(store: TierStore, count: int, start_at: float) -> int:
    """Worker routine: ``set("p:k", n, version=n)`` for n = 1..count, a ``delete_prefix("p:")`` every 7th."""
    time.sleep(max(0.0, start_at - time.time()))
    for n in range(1, count + 1):
        store.set("p:k", n, version=n)
        store.set("p:j", n)
        if n % 7 == 0:
            store.delete_prefix("p:")
    return count


def read_values(store: TierStore, until: float) -> list[Any]:
    """Worker routine: read ``p:k`` (get, get_entry, keys) until the wall clock reaches ``until``."""
    seen: list[Any] = []
    while time.time() < until:
        value = store.get("p:k")
        found = store.get_entry("p:k")
        listed = "p:k" in list(store.keys("p:"))
        seen.append((value, None if found is None else found.value, listed))
    return seen


def test_prefix_deletes_racing_versioned_writes_never_take_a_reader_back(redis_server: RedisServer) -> None:
    from tests.shared.workers import Worker

    module = "tests.shared.test_shared_races"
    writer = Worker(redis_server.url, shared_ping_interval=0.2)
    readers = [Worker(redis_server.url, shared_ping_interval=0.2) for _ in range(2)]
    try:
        start_at = time.time() + 1.0
        for reader in readers:
            reader.start(f"{module}:read_values", start_at + 6.0)
        writer.start(f"{module}:write_and_delete_prefixes", 300, start_at)
        assert writer.result(timeout=120) == 300
        for reader in readers:
            seen = reader.result(timeout=120)
            newest = 0
            for value, entry_value, _ in seen:
                for got in (value, entry_value):
                    if got is not None:
                        assert got >= newest, (got, newest)  # a value older than one served: never
                        newest = got
            assert newest == 300
    finally:
        writer.close()
        for reader in readers:
            reader.close()


def test_touch_and_replace_value_under_writers_in_another_process_land_whole_or_not_at_all(
    redis_server: RedisServer, stores: Stores
) -> None:
    from tests.shared.workers import Worker

    store = stores()
    writer = Worker(redis_server.url, shared_ping_interval=0.2)
    try:
        store.set("k", -1)
        writer.start("write_values", "k", list(range(2000)), 0.0, False)
        outcomes: list[Any] = []
        for n in range(200):
            try:
                outcomes.append(store.replace_value("k", ("mine", n)) if n % 2 else store.touch("k", 100))
            except SharedUnavailable as exc:  # gave up: the entry kept changing
                assert "kept changing" in str(exc)
                outcomes.append(None)
        assert writer.result(timeout=120) == 2000
        assert all(outcome in (True, False, None) for outcome in outcomes)
        assert True in outcomes
        final = writer.call("get", "k")
        deadline = time.monotonic() + 10
        while store.get("k") != final:  # every process agrees on what landed last
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert final == 1999 or final[0] == "mine"
    finally:
        writer.close()


def test_close_while_the_listener_handles_a_message_is_bounded_and_quiet_after(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores()
    other = stores()
    shared = store._shared
    assert shared is not None
    other.set("first", 0)  # the first message heard sets the baseline seq (no record is copied from it)
    deadline = time.monotonic() + 10
    while store.stats()["invalidations_received"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    entered, release = threading.Event(), threading.Event()
    real_replace = shared.mirror.replace

    def slow_replace(*args: Any, **kwargs: Any) -> None:
        entered.set()
        release.wait(30)
        real_replace(*args, **kwargs)

    monkeypatch.setattr(shared.mirror, "replace", slow_replace)
    other.set("k", 1)  # its message carries the record: the listener replaces (or skips) the copy
    assert entered.wait(10)  # the listener is inside the message
    closer = threading.Thread(target=store.close)
    started = time.monotonic()
    closer.start()
    time.sleep(0.2)
    release.set()  # the message ends while close is under way
    closer.join(30)
    assert not closer.is_alive() and time.monotonic() - started < 15
    assert store.closed
    with pytest.raises(StoreClosed):
        store.get("k")
    deadline = time.monotonic() + 10
    while _listeners() > 1:  # only the other store's listener is left
        assert time.monotonic() < deadline
        time.sleep(0.05)


def increments(store: TierStore, key: str, count: int, start_at: float) -> int:
    """In a worker: from the wall-clock moment ``start_at``, ``count`` increments of ``key`` by ``update_value``."""
    time.sleep(max(0.0, start_at - time.time()))
    landed = 0
    for _ in range(count):
        landed += store.update_value(key, lambda value: value + 1)
    return landed


def test_update_value_from_three_processes_and_this_one_loses_no_increment(
    stores: Stores, workers: Callable[..., Any]
) -> None:
    store = stores()
    store.set("n", 0, version=4)
    racers = [workers() for _ in range(3)]
    start_at = time.time() + 1.0
    for racer in racers:
        racer.start(f"{__name__}:increments", "n", 150, start_at)
    time.sleep(max(0.0, start_at - time.time()))
    mine = sum(store.update_value("n", lambda value: value + 1) for _ in range(150))
    assert [racer.result(timeout=120) for racer in racers] == [150, 150, 150] and mine == 150
    deadline = time.monotonic() + 10
    while store.get("n") != 600:  # this process hears the last of them
        assert time.monotonic() < deadline
        time.sleep(0.01)
    entry = store.get_entry("n")
    assert entry is not None and entry.version == 4
