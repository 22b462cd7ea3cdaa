"""Counters in shared mode, on a real redis-server: shared by every store and process, exact, checked, never hanging.

Two stores in one process stand for two processes (each has its own client);
the races run in real spawned processes (``part_workers``). The outage test
covers indexes and the existence filter too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.shared import part_workers
from tests.shared.parts_support import PREFIX, SPAWN, dump, guard_of, round_trips, wait_for_answer
from tests.shared.redis_server import RedisServer
from tierstore import SharedUnavailable, TierStore, codec
from tierstore.counters import COUNTER_MAX, COUNTER_MIN
from tierstore.errors import CorruptRecord
from tierstore.shared.client import CALL_TIMEOUT


def test_counters_are_shared_and_live_only_in_redis(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    first, second = stores(), stores()
    assert first.counter("hits") == 0
    assert first.incr("hits") == 1
    assert second.incr("hits", 5) == 6
    assert first.decr("hits", 2) == 4
    assert second.counter("hits") == 4
    assert raw.get(PREFIX + b"c:" + codec.encode_key("hits")) == b"4"  # a Redis integer, under its tagged key
    assert second.counter(b"hits") == 0  # str and bytes keys are different counters, as locally
    second.set("hits", "a value")  # a counter and a cached value may share a name
    assert first.counter("hits") == 4 and second.get("hits") == "a value"
    assert stores(namespace="other").counter("hits") == 0
    assert first.stats()["sets"] == 0  # nothing local: no entry was written by the counters


def test_counters_cover_the_signed_64_bit_range_exactly(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store = stores()
    assert store.incr("top", COUNTER_MAX) == COUNTER_MAX
    with pytest.raises(OverflowError, match="outside the signed 64-bit range"):
        store.incr("top")
    assert store.counter("top") == COUNTER_MAX  # unchanged
    assert store.decr("top", COUNTER_MAX) == 0
    assert store.decr("bottom", -COUNTER_MIN) == COUNTER_MIN
    with pytest.raises(OverflowError, match=str(COUNTER_MIN - 1)):
        store.decr("bottom")
    # deltas past 64 bits: applied in parts when the result fits, refused whole when not
    assert store.incr("bottom", COUNTER_MAX - COUNTER_MIN) == COUNTER_MAX
    assert store.decr("bottom", 2**64 - 1) == COUNTER_MIN
    assert store.incr("bottom", 2**63 + 5) == 5
    for delta in (2**63 + COUNTER_MAX, 2**64, 2**80, -(2**80)):
        before = dump(raw)
        with pytest.raises(OverflowError):
            store.incr("bottom", delta)
        assert dump(raw) == before
    assert store.counter("bottom") == 5


def test_counter_bad_input_raises_and_changes_nothing(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store = stores()
    store.incr("c", 3)
    before = dump(raw)
    for delta, error in ((1.5, TypeError), ("1", TypeError), (True, TypeError), (None, TypeError)):
        with pytest.raises(error, match="counter delta must be an int"):
            store.incr("c", delta)  # type: ignore[arg-type]
        with pytest.raises(error, match="counter delta must be an int"):
            store.decr("c", delta)  # type: ignore[arg-type]
    for key, error in ((3, TypeError), (None, TypeError), ("x" * 100_000, ValueError)):
        for call in (store.incr, store.decr, store.counter):
            with pytest.raises(error):
                call(key)  # type: ignore[operator]
    assert dump(raw) == before
    assert store.counter("c") == 3


COUNTER_BAD_CALLS: list[Callable[[TierStore], object]] = [
    lambda store: store.incr("c", 1.5),  # type: ignore[arg-type]
    lambda store: store.decr("c", "1"),  # type: ignore[arg-type]
    lambda store: store.incr("c", True),
    lambda store: store.incr(3),  # type: ignore[arg-type]
    lambda store: store.counter(None),  # type: ignore[arg-type]
    lambda store: store.decr("x" * 100_000),
    lambda store: store.incr("c", COUNTER_MAX),  # 3 + MAX
    lambda store: store.decr("c", 2**64),
    lambda store: store.incr("c", 2**70),
]


@pytest.mark.parametrize("call", COUNTER_BAD_CALLS)
def test_counter_errors_are_the_local_ones(
    stores: Callable[..., TierStore], tmp_path: Path, call: Callable[[TierStore], object]
) -> None:
    with TierStore(tmp_path / "local") as local:
        shared = stores()
        for store in (local, shared):
            store.incr("c", 3)
        with pytest.raises(Exception) as expected:
            call(local)
        with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
            call(shared)
        assert shared.counter("c") == local.counter("c") == 3


def test_a_damaged_counter_in_redis_is_corrupt_not_zero(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store = stores()
    name = PREFIX + b"c:" + codec.encode_key("c")
    for bad in (b"abc", b"1.5", b"99999999999999999999", b"007", b"-0", b"+5"):  # what INCRBY refuses too
        raw.set(name, bad)
        with pytest.raises(CorruptRecord, match="corrupt"):
            store.counter("c")
        with pytest.raises(CorruptRecord, match="corrupt"):
            store.incr("c")
        assert raw.get(name) == bad
    raw.hset(name + b"h", "f", 1)
    raw.rename(name + b"h", name)  # a hash where a count belongs: Redis's WRONGTYPE is no outage
    with pytest.raises(SharedUnavailable):
        store.counter("c")


def test_a_counter_call_is_one_round_trip(stores: Callable[..., TierStore], monkeypatch: pytest.MonkeyPatch) -> None:
    store = stores()
    store.incr("low", COUNTER_MIN)  # loads the script
    made = round_trips(store, monkeypatch)
    store.incr("c")
    store.decr("c", 2)
    store.counter("c")
    assert store.incr("low", 2**64 - 1) == COUNTER_MAX  # past 64 bits: still one script
    assert len(made) == 4, made


def test_processes_incrementing_concurrently_lose_no_update(redis_server: RedisServer) -> None:
    results = SPAWN.Queue()
    start_at = time.time() + 3.0  # every process is open by then: the increments race
    processes = [
        SPAWN.Process(target=part_workers.bump, args=(redis_server.url, "total", 300, start_at, results))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    last = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    with TierStore(shared=redis_server.url) as store:
        assert store.counter("total") == 1200
    assert max(last) == 1200  # the very last increment was the last of its process
    assert len(set(last)) == len(last)  # no two increments returned the same count


def test_threads_of_two_stores_lose_no_update(stores: Callable[..., TierStore]) -> None:
    import threading

    first, second = stores(), stores()
    seen: list[int] = []
    lock = threading.Lock()

    def run(store: TierStore) -> None:
        for _ in range(200):
            count = store.incr("t")
            with lock:
                seen.append(count)

    threads = [threading.Thread(target=run, args=(store,)) for store in (first, second, first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(1, 801))  # every count returned exactly once
    assert first.counter("t") == 800


def test_counters_indexes_and_the_guard_raise_shared_unavailable_when_redis_is_gone(
    stores: Callable[..., TierStore], redis_server: RedisServer
) -> None:
    store = stores(guard=True, bloom_capacity=100)
    index = store.index("i")
    index.add("m", 1)
    store.incr("c")
    calls: list[Callable[[], object]] = [
        lambda: store.incr("c"), lambda: store.decr("c"), lambda: store.counter("c"),
        lambda: index.add("n", 2), lambda: index.page(), lambda: len(index), lambda: index.score("m"),
        lambda: index.replace({"x": 1}), lambda: index.page_after("bff0000000000000736d"),
        lambda: index.mark_dirty(), lambda: index.stamp, lambda: index.range_by_score(0, 1),
        lambda: store.guard_keys(["k"]), lambda: store.rebuild_guard(["k"]), lambda: store.set("k", 1),
    ]  # fmt: skip
    guard_keys = store.stats()["guard_keys"]
    redis_server.pause()  # nothing answers: each call ends at its timeout
    try:
        for call in (calls[0], calls[4], calls[-2]):
            started = time.monotonic()
            with pytest.raises(SharedUnavailable):
                call()
            assert time.monotonic() - started < CALL_TIMEOUT + 1.5
    finally:
        redis_server.resume()
    redis_server.kill()  # connections refused
    try:
        for call in calls:
            with pytest.raises(SharedUnavailable):
                call()
        assert guard_of(store).might_contain("never")  # get_or_load's check admits: "local" loads, stores nothing
        stats = store.stats()  # stats never fail: the filter's are the last Redis gave
        assert stats["guard_keys"] == guard_keys and stats["shared_errors"] >= len(calls) + 3
        assert "members=?" in repr(index)
    finally:
        redis_server.start()
    wait_for_answer(lambda: store.incr("c") == 1)  # an empty Redis: the counter starts again
