"""The existence filter in shared mode, on a real redis-server: one Redis bitmap that every store checks and fills.

Two stores in one process stand for two processes (each has its own client and
cached parameters); the writers in ``test_keys_written_in_other_processes_are_admitted``
are real spawned processes (``part_workers``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.shared import part_workers
from tests.shared.parts_support import PREFIX, SPAWN, dump, guard_of, round_trips
from tests.shared.redis_server import RedisServer
from tests.shared.support import wait_for
from tierstore import ABSENT, SharedUnavailable, StoreClosed, TierStore, TierStoreError, codec
from tierstore.bloom import BloomFilter, probe_positions
from tierstore.shared.client import CALL_TIMEOUT


def test_a_key_written_in_one_store_is_admitted_by_the_others(stores: Callable[..., TierStore]) -> None:
    first, second = stores(guard=True, bloom_capacity=1000), stores(guard=True, bloom_capacity=1000)
    assert guard_of(first) is first._loading._guard  # get_or_load's check asks Redis's filter
    assert not guard_of(second).might_contain("k")
    first.set("k", "v")
    assert guard_of(second).might_contain("k")
    first.set("absent", ABSENT)  # a negative entry admits nothing: the source said no
    assert not guard_of(second).might_contain("absent")
    second.guard_keys(["g1", b"g2"])
    assert guard_of(first).might_contain("g1") and guard_of(first).might_contain(b"g2")
    assert not guard_of(first).might_contain("g2")  # str and bytes are different keys
    stats = first.stats()
    assert stats["guard_keys"] == 3 and stats["guard_degraded"] == 0 and stats["guard_over_capacity"] == 0
    assert stats["guard_error_ppm"] >= 0


def test_get_or_loads_check_asks_the_shared_filter(stores: Callable[..., TierStore]) -> None:
    """A key no store admitted never reaches the loader; a key another store admitted does."""
    first, second = stores(guard=True, bloom_capacity=1000), stores(guard=True, bloom_capacity=1000)
    asked: list[str] = []

    def loader() -> object:
        asked.append("asked")
        raise LookupError("the loader ran")

    assert first.get_or_load("never", loader, default="d") == "d"
    assert asked == [] and first.stats()["guard_rejections"] == 1
    second.guard_keys(["exists"])
    with pytest.raises(LookupError, match="the loader ran"):
        first.get_or_load("exists", loader)
    assert asked == ["asked"] and first.stats()["guard_rejections"] == 1


def test_a_fill_and_set_many_admit_their_keys_in_every_store(stores: Callable[..., TierStore]) -> None:
    """A loaded value is admitted before its fill lands, even when the filter was rebuilt during the load."""
    first, second = stores(guard=True, bloom_capacity=1000), stores(guard=True, bloom_capacity=1000)
    first.guard_keys(["k"])  # let the load through

    def loader() -> str:
        second.rebuild_guard([])  # the filter forgets every key while the load runs
        assert not guard_of(second).might_contain("k")
        return "v"

    assert first.get_or_load("k", loader) == "v"
    assert guard_of(second).might_contain("k")  # the fill admitted it again
    second.rebuild_guard([])
    first.set_many({"m1": 1, "m2": 2})
    assert guard_of(second).might_contain("m1") and guard_of(second).might_contain("m2")


def test_the_filter_and_its_seed_are_stored_and_hashed_as_bloom_does(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    first = stores(guard=True, bloom_capacity=500, bloom_error_rate=0.02)
    params = raw.hgetall(PREFIX + b"g:params")
    seed, nbits, nhashes = int(params[b"seed"]), int(params[b"nbits"]), int(params[b"nhashes"])
    reference = BloomFilter(500, 0.02, seed=seed)
    assert (nbits, nhashes) == (reference.nbits, reference.nhashes)
    second = stores(guard=True, bloom_capacity=99, bloom_error_rate=0.1)  # the stored filter wins over options
    assert raw.hgetall(PREFIX + b"g:params") == params
    keys = [f"key-{i}" for i in range(50)] + [b"\x00raw"]
    first.guard_keys(keys)
    reference.update(keys)
    bits = raw.get(PREFIX + b"g:bits") or b""
    as_bloom = bytes(int(f"{byte:08b}"[::-1], 2) for byte in bits.ljust((nbits + 7) // 8, b"\x00"))
    assert as_bloom == reference.bit_array()  # the same bits, in Redis's bit order
    for key in keys:
        data = codec.encode_key(key)
        assert all(raw.getbit(PREFIX + b"g:bits", p) for p in probe_positions(data, seed, nbits, nhashes))
        assert guard_of(second).might_contain(key)
    assert int(params[b"count"]) == 0 and int(raw.hget(PREFIX + b"g:params", "count") or 0) == len(reference)


def test_a_check_and_an_add_are_one_round_trip(
    stores: Callable[..., TierStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores(guard=True, bloom_capacity=1000)
    guard = guard_of(store)
    guard.add("warm")
    guard.might_contain("warm")  # both scripts loaded
    made = round_trips(store, monkeypatch)
    assert guard.might_contain("warm") and not guard.might_contain("cold")
    assert len(made) == 2
    guard.add("k")
    store.set("j", 1)
    assert made[2:] == ["guard add", "guard add", "set"]  # a guarded write: the admission, then the write


def test_an_over_capacity_filter_says_so_once(
    stores: Callable[..., TierStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = stores(guard=True, bloom_capacity=10, bloom_error_rate=0.01)
    with caplog.at_level("WARNING", logger="tierstore"):
        for i in range(60):
            store.set(f"k{i}", i)
    assert store.stats()["guard_over_capacity"] == 1 and guard_of(store).over_capacity
    assert sum("over capacity" in record.message for record in caplog.records) == 1
    store.rebuild_guard([f"k{i}" for i in range(60)])  # sized for 120 keys
    assert store.stats()["guard_over_capacity"] == 0 and not guard_of(store).over_capacity


def test_rebuild_replaces_the_filter_for_every_store(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    first, second = stores(guard=True, bloom_capacity=100), stores(guard=True, bloom_capacity=100)
    first.guard_keys([f"old-{i}" for i in range(20)])
    seed = raw.hget(PREFIX + b"g:params", "seed")
    assert guard_of(second).might_contain("old-3")
    second.rebuild_guard([f"new-{i}" for i in range(300)])
    params = raw.hgetall(PREFIX + b"g:params")
    assert params[b"seed"] != seed  # a new seed
    assert int(params[b"capacity"]) == 600  # sized for 2 * len(keys)
    rebuilt = BloomFilter(600, float(params[b"error_rate"]), seed=int(params[b"seed"]))
    for i in range(300):
        rebuilt.add_encoded(codec.encode_key(f"new-{i}"))
    assert int(params[b"count"]) == len(rebuilt) >= 290  # keys that set a bit: 300 less the rare false positive
    assert guard_of(first).might_contain("new-299")  # first's parameters were out of date: it read the new ones
    assert sum(guard_of(first).might_contain(f"old-{i}") for i in range(20)) <= 2  # shrunk (false positives aside)
    first.set("after", 1)
    assert guard_of(second).might_contain("after")
    assert [key for key in raw.keys("*") if b":g:" in key and not key.endswith((b"g:bits", b"g:params"))] == []


def test_keys_added_during_a_rebuild_are_carried_over(
    stores: Callable[..., TierStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: another store writes a key after the new filter was built aside, before the swap."""
    first, second = stores(guard=True, bloom_capacity=100), stores(guard=True, bloom_capacity=100)
    scripts = guard_of(first)._scripts
    real = scripts.run
    swaps: list[str] = []

    def run(what: str, source: str, keys: list[bytes], args: list[bytes | str]) -> Any:
        if what == "guard rebuild" and not swaps:
            swaps.append("late write")
            second.set("late", 1)  # lands in the old filter and in the rebuild's carry list
        return real(what, source, keys, args)

    monkeypatch.setattr(scripts, "run", run)
    first.rebuild_guard(["listed"])
    assert guard_of(second).might_contain("late") and guard_of(second).might_contain("listed")
    assert swaps == ["late write"]


def test_guard_bad_input_raises_and_admits_nothing(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store = stores(guard=True, bloom_capacity=100)
    store.guard_keys(["kept"])
    before = dump(raw)
    for bad, error in (("single", TypeError), (b"single", TypeError), (5, TypeError), (["ok", 3], TypeError)):
        with pytest.raises(error):
            store.guard_keys(bad)  # type: ignore[arg-type]
        with pytest.raises(error):
            store.rebuild_guard(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.guard_keys(["ok", "x" * 100_000])
    assert dump(raw) == before
    assert not guard_of(store).might_contain("ok") and guard_of(store).might_contain("kept")
    with pytest.raises(StoreClosed):
        store.close()
        store.guard_keys(["k"])


@pytest.mark.parametrize("bad", ["single", b"single", 5, ["ok", 3], ["ok", "x" * 100_000], [None]])
def test_guard_errors_are_the_local_ones(stores: Callable[..., TierStore], tmp_path: Path, bad: Any) -> None:
    with TierStore(tmp_path / "local", guard=True, bloom_capacity=100) as local:
        shared = stores(guard=True, bloom_capacity=100)
        for call in ("guard_keys", "rebuild_guard"):
            with pytest.raises(Exception) as expected:
                getattr(local, call)(bad)
            with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
                getattr(shared, call)(bad)
        assert shared.stats()["guard_keys"] == local.stats()["guard_keys"] == 0


def test_without_guard_a_shared_store_keeps_no_filter(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store = stores()
    store.set("k", 1)
    assert store._guard is None and store.stats()["guard_keys"] == 0
    assert not [key for key in raw.keys("*") if b":g:" in key]
    with pytest.raises(Exception, match="without guard=True"):
        store.guard_keys(["k"])


def test_a_first_guarded_store_admits_every_key_redis_holds(stores: Callable[..., TierStore]) -> None:
    unguarded = stores()
    unguarded.set("written-before", 1)
    guarded = stores(guard=True, bloom_capacity=100)
    assert guard_of(guarded).might_contain("written-before")
    assert not guard_of(guarded).might_contain("never-written")


def test_a_filter_lost_from_redis_admits_every_key_until_rebuilt(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    store = stores(guard=True, bloom_capacity=100)
    store.set("k", 1)
    raw.delete(PREFIX + b"g:params", PREFIX + b"g:bits")
    assert guard_of(store).might_contain("anything")  # it could have held keys the source has
    assert store.stats()["guard_degraded"] == 1
    store.set("j", 1)  # adds do nothing: there is no filter
    store.rebuild_guard(["r"])
    assert store.stats()["guard_degraded"] == 0
    assert guard_of(store).might_contain("r") and not guard_of(store).might_contain("anything")


def test_keys_written_in_other_processes_are_admitted(redis_server: RedisServer) -> None:
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(target=part_workers.admit, args=(redis_server.url, [f"p{n}-{i}" for i in range(50)], results))
        for n in range(3)
    ]
    for process in processes:
        process.start()
    admitted = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    assert all(len(keys) == 50 for keys in admitted)
    with TierStore(shared=redis_server.url, guard=True) as store:
        guard = guard_of(store)
        assert all(guard.might_contain(f"p{n}-{i}") for n in range(3) for i in range(50))
        assert store.stats()["guard_keys"] == 150


def test_a_rebuild_whose_keys_expired_changes_nothing(
    stores: Callable[..., TierStore], raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced: the filter built aside is gone before the swap (as after an hour): an error, the old filter kept."""
    store = stores(guard=True, bloom_capacity=100)
    store.guard_keys(["kept"])
    params = raw.hgetall(PREFIX + b"g:params")
    scripts = guard_of(store)._scripts
    real = scripts.run

    def run(what: str, source: str, keys: list[bytes], args: list[bytes | str]) -> Any:
        if what == "guard rebuild":
            raw.delete(keys[2])  # the bitmap built aside
        return real(what, source, keys, args)

    monkeypatch.setattr(scripts, "run", run)
    with pytest.raises(TierStoreError, match="outlived"):
        store.rebuild_guard(["new"])
    assert raw.hgetall(PREFIX + b"g:params") == params
    assert guard_of(store).might_contain("kept") and not guard_of(store).might_contain("new")
    assert sorted(key for key in raw.keys("*") if b":g:" in key) == [PREFIX + b"g:bits", PREFIX + b"g:params"]


@pytest.mark.parametrize("failure", ["local", "raise"])
def test_get_or_load_with_the_filter_during_an_outage_loads_without_storing_or_raises(
    redis_server: RedisServer, stores: Callable[..., TierStore], failure: str
) -> None:
    """The filter lives in Redis: with Redis unreachable and "local", a miss is a miss that loads (the filter
    cannot say no, and admitting is never a wrong answer), as without a filter; "raise" raises."""
    store = stores(guard=True, shared_failure=failure, shared_grace=60.0)
    store.guard_keys(["far"])
    calls: list[str] = []
    redis_server.pause()
    try:
        for key in ("far", "never-guarded"):
            if failure == "raise":
                with pytest.raises(SharedUnavailable):
                    store.get_or_load(key, lambda key=key: calls.append(key) or "loaded")
                continue
            assert store.get_or_load(key, lambda key=key: calls.append(key) or "loaded") == "loaded"
            assert store.get(key, "none") == "none"  # loaded, not stored
    finally:
        redis_server.resume()
    assert calls == ([] if failure == "raise" else ["far", "never-guarded"])


@pytest.mark.parametrize("filter_exists", [True, False])
def test_a_store_with_the_filter_opens_while_redis_is_down_and_finds_the_filter_once_it_is_back(
    redis_server: RedisServer, stores: Callable[..., TierStore], filter_exists: bool
) -> None:
    """With "local" a store opens without Redis, guard=True included: meanwhile every miss loads (nothing stored);
    once Redis answers, the first check finds the filter (or builds it from the keys Redis holds)."""
    writer = stores(guard=filter_exists)
    writer.set("held", 1)
    redis_server.pause()
    try:
        store = stores(guard=True)
        assert store._shared is not None and store._shared.client.down
        assert store.get_or_load("never", lambda: "loaded") == "loaded"
        with pytest.raises(SharedUnavailable):
            store.set("k", 1)
    finally:
        redis_server.resume()
    wait_for(lambda: not store._shared.client.down, CALL_TIMEOUT + 5.0)  # type: ignore[union-attr]
    calls: list[str] = []
    assert store.get_or_load("never", lambda: calls.append("never") or "x") is None  # the filter says no
    assert calls == [] and guard_of(store).might_contain("held")
    store.set("new", 2)
    assert guard_of(writer if filter_exists else stores(guard=True)).might_contain("new")


def test_a_degraded_store_s_writes_reach_a_filter_another_store_installed_since(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    """A store that found the filter gone admits every key; once another store's ``rebuild_guard`` installs
    a new one, its writes are added there, or that filter would turn away keys it wrote."""
    first, second = stores(guard=True), stores(guard=True)
    first.set("k", 1)
    raw.delete(PREFIX + b"g:params", PREFIX + b"g:bits")  # Redis lost the filter
    assert second.get_or_load("absent", lambda: 2) == 2  # its check finds it gone: degraded, admits
    assert second.stats()["guard_degraded"] == 1
    first.rebuild_guard(["k"])
    second.set("new", 3)
    assert guard_of(first).might_contain("new")
    assert not guard_of(second).degraded and guard_of(second).might_contain("new")
    assert second.get_or_load("never", lambda: 4) is None  # it checks the new filter again
