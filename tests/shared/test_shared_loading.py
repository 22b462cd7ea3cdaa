"""Single flight across processes: ``get_or_load``, ``cached`` and ``refresh_every`` over Redis load leases.

Real store processes (``workers.Worker``, loaders in ``lease_routines``) and real
stores in this process over one real redis-server. Loaders count their calls in
Redis, so "exactly one load" is counted across every process; blocking loaders
wait for the test's signal, so the interleavings are forced, not slept into.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.shared.lease_routines import GO, LOADED_AT, LOADS
from tests.shared.redis_server import RedisServer
from tests.shared.support import entry_hash, wait_for
from tests.shared.workers import Worker, WorkerError
from tierstore import TierStore, Versioned, codec
from tierstore.shared.client import Names

ROUTINES = "tests.shared.lease_routines:"
NAMES = Names("tierstore")


def lease_of(key: str) -> bytes:
    return NAMES.lease(codec.encode_key(key))


def loads(raw: redis.Redis) -> int:
    return int(raw.get(LOADS) or 0)


# -- across processes ---------------------------------------------------------------------


def test_one_load_for_many_processes_and_threads_on_a_cold_key(
    workers: Callable[..., Worker], raw: redis.Redis, redis_server: RedisServer
) -> None:
    processes = [workers() for _ in range(4)]
    start_at = time.time() + 1.0  # every process is ready by then: all 32 callers miss at once
    for process in processes:
        process.start(ROUTINES + "load_in_threads", redis_server.url, "cold", 8, start_at, 0.3)
    results = [process.result() for process in processes]
    assert results == [["loaded"] * 8] * 4
    assert loads(raw) == 1  # one loader call in all 4 processes x 8 threads
    assert sum(process.stats()["loads"] for process in processes) == 1
    assert not raw.exists(lease_of("cold"))  # the fill freed the lease
    assert raw.zcard(NAMES.leases) == 0
    assert [process.call("get", "cold") for process in processes] == ["loaded"] * 4


def test_an_invalidation_in_one_process_refuses_a_fill_running_in_another(
    workers: Callable[..., Worker], raw: redis.Redis, redis_server: RedisServer
) -> None:
    loader, other = workers(), workers()
    loader.start(ROUTINES + "load_when_told", redis_server.url, "k", "before", False)
    wait_for(lambda: loads(raw) == 1)  # the loader runs, holding the lease
    assert raw.exists(lease_of("k"))
    other.call("invalidate", "k")
    assert not raw.exists(lease_of("k"))  # the invalidation took the lease away
    raw.lpush(GO, 1)  # only now does the loader return
    assert loader.result() == "before"  # still returned to its own caller
    assert loader.stats()["fills_rejected"] == 1
    assert entry_hash(raw, "k") == {}  # refused in Redis
    assert loader.call("get", "k") is None  # and in the loader's own tiers
    assert other.call(ROUTINES + "load_noting_when", redis_server.url, "k", "after") == "after"
    assert loads(raw) == 2  # the next get_or_load loaded again
    wait_for(lambda: loader.call("get", "k") == "after")


def test_a_delete_in_another_store_detaches_a_load_in_flight_here_so_later_callers_load_afresh(
    stores: Callable[..., TierStore],
) -> None:
    here, there = stores(), stores()
    entered, release = threading.Event(), threading.Event()

    def slow() -> str:
        entered.set()
        release.wait(10)
        return "before the delete"

    early: list[Any] = []
    thread = threading.Thread(target=lambda: early.append(here.get_or_load("k", slow)))
    thread.start()
    try:
        assert entered.wait(10)
        there.delete("k")
        wait_for(lambda: here.stats()["invalidations_received"] == 1)  # heard: the load in flight is detached
        answer = here.get_or_load("k", lambda: "after the delete", on_busy="default", default="joined the old load")
        assert answer == "after the delete"
    finally:
        release.set()
        thread.join(10)
    assert early == ["before the delete"]
    assert here.get("k") == "after the delete"  # the old load's fill was refused
    wait_for(lambda: there.get("k") == "after the delete")


def test_a_dead_holder_frees_the_key_when_its_lease_ends_and_not_before(
    workers: Callable[..., Worker], raw: redis.Redis, redis_server: RedisServer
) -> None:
    holder, waiter = workers(lock_timeout=1.5), workers()
    holder.start(ROUTINES + "load_and_hang", redis_server.url, "k")
    wait_for(lambda: loads(raw) == 1)
    left = raw.pttl(lease_of("k")) / 1000
    lease_ends = time.time() + left
    assert left > 0.5
    holder.process.kill()  # SIGKILL inside its loader: nothing frees the lease but its PX
    holder.process.join(10)
    assert waiter.call(ROUTINES + "load_noting_when", redis_server.url, "k", "mine") == "mine"
    loaded_at = float(raw.get(LOADED_AT) or 0)
    assert loaded_at >= lease_ends - 0.05  # not before the lease ended (50 ms for the clocks' reading)
    assert loaded_at < lease_ends + 2.0  # and soon after
    assert loads(raw) == 2
    assert waiter.call("get", "k") == "mine"


def test_a_loader_error_frees_the_lease_at_once_and_a_waiter_elsewhere_loads(
    workers: Callable[..., Worker], raw: redis.Redis, redis_server: RedisServer
) -> None:
    failing, waiter = workers(), workers()  # lock_timeout 30 s: only a release frees the lease in time
    failing.start(ROUTINES + "load_when_told", redis_server.url, "k", "never", True)
    wait_for(lambda: loads(raw) == 1)
    waiter.start(ROUTINES + "load_noting_when", redis_server.url, "k", "second")
    assert not waiter._conn.poll(0.5)  # it waits for the lease, not loading itself
    raw.lpush(GO, 1)
    failed_at = time.time()
    with pytest.raises(WorkerError) as error:
        failing.result()
    assert error.value.kind == "ValueError"  # the error reached its own caller
    assert waiter.result() == "second"  # not the error: the waiter loaded in turn
    assert float(raw.get(LOADED_AT) or 0) - failed_at < 3.0  # far within lock_timeout
    assert loads(raw) == 2
    assert failing.stats()["load_errors"] == 1
    wait_for(lambda: failing.call("get", "k") == "second")


# -- two stores in this process -------------------------------------------------------------


class Blocking:
    """A loader that signals it started and returns ``value`` once let go."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.started = threading.Event()
        self.go = threading.Event()

    def __call__(self) -> Any:
        self.started.set()
        assert self.go.wait(30)
        return self.value


def never() -> Any:
    raise AssertionError("this loader must not run")


def load_in_thread(store: TierStore, key: str, loader: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(store.get_or_load(key, loader)))
    thread.start()
    return thread, results


def test_on_busy_default_and_stale_while_another_store_loads(stores: Callable[..., TierStore]) -> None:
    now = [1_000_000.0]
    loading, other = stores(stale_ttl=600, clock=lambda: now[0]), stores(stale_ttl=600, clock=lambda: now[0])
    loading.set("k", "old", ttl=10)
    now[0] += 20  # expired in both stores; Redis keeps it ttl + stale_ttl
    blocking = Blocking("new")
    thread, results = load_in_thread(loading, "k", blocking)
    assert blocking.started.wait(10)
    assert other.get_or_load("k", never, on_busy="default", default="d") == "d"
    assert other.get_or_load("k", never, on_busy="stale") == "old"  # the stale value Redis kept
    assert other.get_or_load("fresh", lambda: "f", on_busy="default") == "f"  # another key is not busy
    stats = other.stats()
    assert stats["busy_defaults"] == 1 and stats["stale_served"] == 1
    blocking.go.set()
    thread.join(10)
    assert results == ["new"]
    wait_for(lambda: other.get("k") == "new")
    assert other.stats()["loads"] == 1  # "fresh" only


def test_a_store_waiting_on_another_is_woken_by_the_fill(stores: Callable[..., TierStore]) -> None:
    loading, waiting = stores(), stores()
    blocking = Blocking("v")
    thread, _ = load_in_thread(loading, "k", blocking)
    assert blocking.started.wait(10)
    waiter, results = load_in_thread(waiting, "k", never)
    time.sleep(0.2)
    assert waiter.is_alive()  # waiting, not loading
    blocking.go.set()
    waiter.join(10)
    thread.join(10)
    assert results == ["v"]
    assert waiting.stats()["loads"] == 0


def test_wait_timeout_applies_to_a_load_in_another_store(stores: Callable[..., TierStore]) -> None:
    from tierstore import LoadTimeout

    loading, waiting = stores(), stores()
    blocking = Blocking("v")
    thread, _ = load_in_thread(loading, "k", blocking)
    assert blocking.started.wait(10)
    started = time.monotonic()
    with pytest.raises(LoadTimeout):
        waiting.get_or_load("k", never, wait_timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 3.0
    blocking.go.set()
    thread.join(10)


def test_fills_follow_the_version_rule_in_redis(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    deleting, loading = stores(), stores()
    assert deleting.delete("k", version=5) is False  # a tombstone at version 5
    assert loading.get_or_load("k", lambda: Versioned("same", 5)) == "same"  # returned, but:
    assert loading.stats()["fills_rejected"] == 1  # a fill never resurrects a tombstone at its version
    assert entry_hash(raw, "k")[b"v"] == b"5" and loading.get("k") is None
    assert not raw.exists(lease_of("k"))  # the refused fill freed the lease
    assert loading.get_or_load("k", lambda: Versioned("lower", 4)) == "lower"
    assert loading.stats()["fills_rejected"] == 2  # nor lowers the version
    assert loading.get_or_load("k", lambda: Versioned("higher", 6)) == "higher"
    assert entry_hash(raw, "k")[b"v"] == b"6"
    wait_for(lambda: deleting.get("k") == "higher")
    assert loading.get_or_load("n", lambda: None, default="none") == "none"  # a negative entry, in Redis too
    assert deleting.get_or_load("n", never, default="nothing") == "nothing"


def test_refresh_every_runs_each_round_in_one_store_only(stores: Callable[..., TierStore]) -> None:
    first, second = stores(), stores()
    rounds: dict[str, int] = {"first": 0, "second": 0}

    def loader(name: str) -> Callable[[], int]:
        def load() -> int:
            rounds[name] += 1
            return rounds[name]

        return load

    interval, period = 0.25, 2.5
    handles = {
        "first": first.refresh_every("k", loader("first"), interval),
        "second": second.refresh_every("k", loader("second"), interval),
    }
    time.sleep(period)
    total = rounds["first"] + rounds["second"]
    assert 4 <= total <= period / interval + 3  # one schedule's rounds, not two
    holder = max(rounds, key=lambda name: rounds[name])
    other = "second" if holder == "first" else "first"
    handles[holder].cancel()
    before = rounds[other]
    wait_for(lambda: rounds[other] >= before + 2)  # the other takes over once the claim lapses
    handles[other].cancel()


def test_keep_fresh_rebuilds_a_shared_index_in_one_store_at_a_time(stores: Callable[..., TierStore]) -> None:
    first, second = stores(), stores()
    rebuilds = {"first": 0, "second": 0}

    def rebuild(name: str) -> Callable[[], list[tuple[str, float]]]:
        def pairs() -> list[tuple[str, float]]:
            rebuilds[name] += 1
            return [("a", 1.0), (name, 2.0)]

        return pairs

    interval, period = 0.25, 2.5
    handles = [
        first.keep_fresh("ranking", rebuild("first"), stamp=time.monotonic, interval=interval),
        second.keep_fresh("ranking", rebuild("second"), stamp=time.monotonic, interval=interval),
    ]
    time.sleep(period)
    for handle in handles:
        handle.cancel()
    total = rebuilds["first"] + rebuilds["second"]
    assert 4 <= total <= period / interval + 3  # one schedule's rounds, not two
    pages = [[member for member, _ in store.index("ranking").page(0, 10)] for store in (first, second)]
    assert pages[0] == pages[1] and pages[0] in (["a", "first"], ["a", "second"])  # one index, in Redis


def test_cached_in_shared_mode(stores: Callable[..., TierStore]) -> None:
    first, second = stores(), stores()
    calls: list[str] = []

    def square_in(store: TierStore, tag: str) -> Any:
        @store.cached(name="square")
        def square(x: int) -> int:
            calls.append(tag)
            return x * x

        return square

    in_first, in_second = square_in(first, "first"), square_in(second, "second")
    assert in_first(3) == 9
    assert in_second(3) == 9  # filled by the first store: read from Redis
    assert calls == ["first"]
    in_second.invalidate(3)
    wait_for(lambda: first.get(in_first.key(3)) is None)
    assert in_first(3) == 9
    assert calls == ["first", "first"]


def test_invalidate_again_after_deletes_once_more_in_shared_mode(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    first, second = stores(), stores()
    first.set("k", "old")
    first.invalidate("k", again_after=0.3)
    assert entry_hash(raw, "k") == {}
    second.set("k", "stale copy")  # a reader that read the source before the write puts it back
    wait_for(lambda: entry_hash(raw, "k") == {})  # the second delete
    wait_for(lambda: second.get("k") is None)


def test_a_renewal_ahead_of_expiry_takes_the_lease_and_skips_while_another_holds_it(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    now = [1_000_000.0]
    writer = stores(clock=lambda: now[0])
    renewing = stores(clock=lambda: now[0], refresh_ahead=0.5, min_refresh_interval=0)
    writer.set("k", "v1", ttl=10)
    now[0] += 6  # in the last half of its TTL: a hit starts a renewal
    raw.set(lease_of("k"), b"another process", px=30_000)  # a load of k runs elsewhere
    assert renewing.get_or_load("k", never) == "v1"
    assert renewing.drain(10)
    assert renewing.stats()["refreshes"] == 0  # skipped: the lease was busy
    assert entry_hash(raw, "k")[b"d"] and writer.get("k") == "v1"
    raw.delete(lease_of("k"))
    assert renewing.get_or_load("k", lambda: "v2") == "v1"  # the hit answers; the renewal runs behind it
    assert renewing.drain(10)
    assert renewing.stats()["refreshes"] == 1
    assert not raw.exists(lease_of("k"))  # its fill freed the lease it took
    wait_for(lambda: writer.get("k") == "v2")  # filled through Redis, seen by the other store


def test_a_closing_store_frees_its_job_claim_and_another_takes_the_job_over(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    first, second = stores(), stores()
    rounds: list[str] = []
    first.refresh_every("k", lambda: rounds.append("first"), 1.0)
    wait_for(lambda: rounds == ["first"])
    second.refresh_every("k", lambda: rounds.append("second"), 1.0)  # its first round finds the job claimed
    claim = NAMES.prefix + b"job:r:" + codec.encode_key("k")
    assert raw.pttl(claim) > 1000  # held for two intervals
    held_by_first = raw.get(claim)
    first.close()
    # freed at close, not left to lapse (the other store's next round may have claimed it since)
    assert raw.get(claim) != held_by_first
    wait_for(lambda: "second" in rounds, timeout=3.0)  # the next round of the other store runs


def test_a_cold_load_asks_redis_once_then_takes_the_lease_and_fills(stores: Callable[..., TierStore]) -> None:
    """The leader's second look reads this process's copy only: the lease's take answers what Redis holds.

    Three round trips, not four (the second look read Redis again before the take).
    """
    store = stores()
    calls = store.stats()["shared_calls"]
    assert store.get_or_load("cold", lambda: "loaded") == "loaded"
    assert store.stats()["shared_calls"] - calls == 3  # HMGET (a miss), TAKE, FILL
    assert store.get("cold") == "loaded"


def test_a_leader_still_finds_what_another_process_filled_after_its_miss(
    stores: Callable[..., TierStore],
) -> None:
    """Filled elsewhere between a caller's miss and its lead: the take answers it and nothing loads here."""
    here, there = stores(), stores()
    loaded: list[str] = []
    real_held = here._loading.lease.held  # type: ignore[union-attr]

    def fill_elsewhere_first(key: Any) -> Any:
        there.set("k", "from there")  # lands in Redis after this process's miss, before its lead
        return real_held(key)

    here._loading.lease.held = fill_elsewhere_first  # type: ignore[union-attr]
    assert here.get_or_load("k", lambda: loaded.append("here") or "from here") == "from there"
    assert loaded == [] and here.get("k") == "from there"


def test_callers_joining_a_load_running_here_ask_redis_nothing(stores: Callable[..., TierStore]) -> None:
    """50 threads arrive while this process loads a cold key: they follow the load without a Redis read
    of their own (the load's lease take answers what Redis holds); one load, three round trips in all."""
    store = stores()
    entered, release = threading.Event(), threading.Event()

    def load() -> str:
        entered.set()
        assert release.wait(10)
        return "loaded"

    calls = store.stats()["shared_calls"]
    answers: list[Any] = []
    leader = threading.Thread(target=lambda: answers.append(store.get_or_load("cold", load)))
    leader.start()
    assert entered.wait(10)
    followers = [
        threading.Thread(target=lambda: answers.append(store.get_or_load("cold", lambda: "second load")))
        for _ in range(50)
    ]
    for thread in followers:
        thread.start()
    wait_for(lambda: store._flights.in_flight["cold"].following == 50)
    assert store.stats()["shared_calls"] - calls == 2  # the leader's HMGET and TAKE: none of the followers'
    release.set()
    for thread in [leader, *followers]:
        thread.join(10)
    assert answers == ["loaded"] * 51
    assert store.stats()["shared_calls"] - calls == 3  # and the FILL
