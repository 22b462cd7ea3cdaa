"""Outages of the shared tier on a real redis-server: paused (a partition), killed, restarted empty, absent at open.

Bounds the tests hold the store to (``FAST`` and ``SLOW`` below): once an
outage is known (``client.down``), every call returns or raises within
``FAST``; a call that is the first to meet an unreachable server returns or
raises within ``SLOW`` (``CALL_TIMEOUT`` plus slack), never a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.shared.redis_server import RedisServer
from tests.shared.support import wait_for
from tests.shared.workers import Worker
from tierstore import SharedUnavailable, TierStore
from tierstore.shared.client import CALL_TIMEOUT, Names, SharedClient

FAST = 1.0  # seconds: any call once the outage is known (no connect timeout is waited for; they take ms)
SLOW = CALL_TIMEOUT + 1.5  # seconds: the first call to meet a paused server (slack for a loaded machine)
RECOVERY = CALL_TIMEOUT + 2.0 + 3.0  # an attempt in flight, the longest backoff, slack for a loaded machine


def client_of(store: TierStore) -> SharedClient:
    assert store._shared is not None
    return store._shared.client


def timed(call: Callable[[], Any], bound: float = FAST) -> Any:
    """``call()``'s result (or the ``SharedUnavailable`` it raised), checked to come within ``bound`` seconds."""
    started = time.monotonic()
    try:
        result = call()
    except SharedUnavailable as exc:
        result = exc
    took = time.monotonic() - started
    assert took < bound, f"took {took:.2f}s"
    return result


def raises(call: Callable[[], Any], bound: float = FAST) -> None:
    assert isinstance(timed(call, bound), SharedUnavailable)


def warm(store: TierStore, other: TierStore, values: dict[str, Any]) -> None:
    """``other`` writes ``values``; ``store`` holds each in both tiers."""
    heard = store.stats()["invalidations_received"]
    for key, value in values.items():
        other.set(key, value)
    wait_for(lambda: store.stats()["invalidations_received"] == heard + len(values))
    for key, value in values.items():
        assert [store.get(key) for _ in range(3)] == [value] * 3
        assert store._memory.get(key) is not None  # tier 1


def recovers(store: TierStore, key: str, value: Any, *others: TierStore) -> None:
    """Redis answers again: the listeners resubscribe and resync, and ``key`` reads ``value`` from Redis."""
    for one in (store, *others):
        client = client_of(one)
        wait_for(lambda client=client: not client.down, RECOVERY)  # type: ignore[misc]
    assert store.get(key) == value


def test_local_mode_serves_copies_within_the_grace_then_misses(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    grace = 1.5
    store, other = stores(shared_grace=grace), stores()
    warm(store, other, {"k": "old", "j": "jold"})
    other.set("far", "x")  # held by Redis only
    client = client_of(store)
    resyncs = store.stats()["resyncs"]
    redis_server.pause()
    try:
        wait_for(lambda: client.down, 3.0)  # a PING unanswered for shared_ping_interval
        last = client.last_contact
        assert store.stats()["resyncs"] == resyncs  # an unreachable Redis is no resync: the copies stay
        assert time.monotonic() - last < grace
        assert timed(lambda: store.get("k")) == "old"  # tier 1
        assert timed(lambda: store.get_entry("k")).value == "old"  # type: ignore[union-attr]
        assert timed(lambda: store["j"]) == "jold"
        assert timed(lambda: "k" in store) is True
        assert timed(lambda: store.get_many(["k", "j", "far"])) == {"k": "old", "j": "jold"}
        assert timed(lambda: store.get("far", "missed")) == "missed"  # needs Redis: a miss, not an error
        assert timed(lambda: "far" in store) is False
        assert store.stats()["shared_errors"] >= 1
        assert store._shared is not None and not store._shared.may_store()  # a fill would not be stored
        seen: list[tuple[float, Any]] = []  # (when, value) of reads across the grace's end
        while not seen or seen[-1][1] is not None:
            value = timed(lambda: store.get("k"))
            seen.append((time.monotonic(), value))
            assert time.monotonic() < last + grace + 1.0, "the copies outlived the grace"
            time.sleep(0.005)
        first_miss = next(when for when, value in seen if value is None)
        assert first_miss >= last + grace  # served for the grace after the last contact, no less
        assert [value for _, value in seen] == ["old"] * (len(seen) - 1) + [None]
        assert store._memory.get("k") is None  # tier 1 cleared: the hot get cannot serve it
        assert store.stats()["resyncs"] == resyncs + 1
        assert timed(lambda: store.get("j", "missed")) == "missed"  # tier 2's copy is no longer served either
        assert timed(lambda: store.get_entry("k")) is None
        assert timed(lambda: store.get_many(["k", "j"])) == {}
        with pytest.raises(KeyError):
            timed(lambda: store["k"])
        raises(lambda: store.set("k", "mine"))
    finally:
        redis_server.resume()
    recovers(store, "k", "old", other)
    assert store.stats()["resyncs"] == resyncs + 2  # and once more when Redis came back
    assert store._shared.may_store()
    other.set("k", "new")
    wait_for(lambda: store.get("k") == "new")  # subscribed again


def test_a_grace_shorter_than_the_ping_interval_still_bounds_how_long_copies_are_served(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    """PINGs at most every half grace: a silent outage (a paused server, no call failing) is noticed
    within about the grace, not twice ``shared_ping_interval`` (2 s here) after the last contact."""
    grace = 0.6
    store, other = stores(shared_grace=grace, shared_ping_interval=1.0), stores()
    warm(store, other, {"k": "old"})
    client = client_of(store)
    redis_server.pause()
    try:
        while store.get("k") == "old":  # tier 1, until the grace's end clears it
            assert time.monotonic() - client.last_contact < 5.0
            time.sleep(0.01)
        assert time.monotonic() - client.last_contact < grace + 0.8  # was about 2 s (2 x 1 s of pings)
    finally:
        redis_server.resume()
    recovers(store, "k", "old", other)


def test_raise_mode_raises_on_every_call_once_the_loss_is_detected(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    store, other = stores(shared_failure="raise"), stores()
    warm(store, other, {"k": "old"})
    client = client_of(store)
    redis_server.pause()
    try:
        wait_for(lambda: client.down, 3.0)
        assert store._memory.get("k") is None  # cleared at the detection: no tier-1 hit either
        raises(lambda: store.get("k"))
        raises(lambda: store.get("far"))
        raises(lambda: store.get_entry("k"))
        raises(lambda: store.get_many(["k"]))
        raises(lambda: "k" in store)
        raises(lambda: store["k"])
        raises(lambda: store.set("k", "mine"))
        raises(lambda: store.delete("k"))
        raises(lambda: store.invalidate("k"))
        raises(lambda: store.get_or_load("k", lambda: "loaded"))
        raises(lambda: list(store.keys()))
        raises(lambda: store.add("n", 1))
        raises(lambda: store.delete_prefix("k"))
        raises(lambda: store.sweep())  # its local part runs; the pruning in Redis raises, as every call does
        assert store.stats()["shared_errors"] >= 9
    finally:
        redis_server.resume()
    recovers(store, "k", "old", other)
    assert store.stats()["resyncs"] >= 2  # at the detection and on reconnect
    other.set("k", "new")
    wait_for(lambda: store.get("k") == "new")


@pytest.mark.parametrize("failure", ["local", "raise"])
def test_the_first_call_to_meet_a_paused_server_is_bounded_and_the_next_ones_fail_fast(
    redis_server: RedisServer, stores: Callable[..., TierStore], failure: str
) -> None:
    """With a listener slow to notice (one PING a minute), a call that times out marks Redis down itself."""
    store, other = stores(shared_failure=failure, shared_ping_interval=60.0), stores()
    warm(store, other, {"k": "old"})
    other.set("far", "x")
    client = client_of(store)
    redis_server.pause()
    try:
        first = timed(lambda: store.get("far", "missed"), SLOW)
        assert first == "missed" if failure == "local" else isinstance(first, SharedUnavailable)
        assert client.down
        for _ in range(20):  # no stall per read
            got = timed(lambda: store.get("far", "missed"))
            assert got == "missed" if failure == "local" else isinstance(got, SharedUnavailable)
        got = timed(lambda: store.get("k"))
        assert got == "old" if failure == "local" else isinstance(got, SharedUnavailable)
        raises(lambda: store.set("far", "mine"))
    finally:
        redis_server.resume()
    recovers(store, "far", "x", other)  # the listener saw the call's finding, reconnected and resynced
    assert store.stats()["resyncs"] >= 1


@pytest.mark.parametrize("failure", ["local", "raise"])
def test_get_or_load_during_an_outage_loads_without_storing_or_raises(
    redis_server: RedisServer, stores: Callable[..., TierStore], failure: str
) -> None:
    store, other = stores(shared_failure=failure, shared_grace=60.0), stores()
    warm(store, other, {"k": "old"})
    calls: list[str] = []

    def loader() -> str:
        calls.append("far")
        return "loaded"

    client = client_of(store)
    redis_server.pause()
    try:
        wait_for(lambda: client.down, 3.0)
        if failure == "raise":
            raises(lambda: store.get_or_load("far", loader))
            assert calls == []  # no load without Redis in "raise" mode
            return
        assert timed(lambda: store.get_or_load("k", loader)) == "old"  # a copy within the grace: no load
        assert calls == []
        assert timed(lambda: store.get_or_load("far", loader)) == "loaded"  # a miss: loaded, not stored
        assert timed(lambda: store.get_or_load("far", loader)) == "loaded"
        assert calls == ["far", "far"]
        assert store._memory.get("far") is None and store.get("far", "none") == "none"
        raises(lambda: store.incr("counter"))  # counters live only in Redis
    finally:
        redis_server.resume()
    recovers(store, "k", "old", other)
    assert other.get("far", "none") == "none"  # nothing reached Redis either
    assert store.get_or_load("far", loader) == "loaded"  # stored again once Redis is back
    assert other.get("far") == "loaded"


def test_a_renewal_whose_fill_meets_an_outage_leaves_the_copy_served_within_the_grace(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    """A refresh-ahead renewal loads while Redis goes away: its fill fails, and the live copy it
    renewed stays served for the grace like every other copy (nothing changes locally)."""
    now = [1_000_000.0]
    store = stores(clock=lambda: now[0], refresh_ahead=0.5, min_refresh_interval=0, shared_grace=60.0)
    other = stores(clock=lambda: now[0])
    other.set("k", "v1", ttl=10)
    wait_for(lambda: store.stats()["invalidations_received"] >= 1)
    assert store.get("k") == "v1"
    client = client_of(store)

    def loader() -> str:  # Redis goes away while the renewal loads
        redis_server.pause()
        wait_for(lambda: client.down, 3.0)
        return "v2"

    now[0] += 6  # in the last half of its TTL: a hit starts a renewal
    try:
        assert store.get_or_load("k", loader) == "v1"
        assert store.drain(10)
        assert client.down and store.stats()["fills_rejected"] == 1
        assert timed(lambda: store.get("k")) == "v1"
        store._memory.clear()
        assert timed(lambda: store.get("k")) == "v1"  # tier 2 kept its copy too
    finally:
        redis_server.resume()
    recovers(store, "k", "v1", other)


def test_writes_during_an_outage_raise_and_change_nothing_locally(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    store, other = stores(shared_grace=60.0), stores()
    warm(store, other, {"k": "old", "gone": "kept"})
    client = client_of(store)
    shared_hits = store.stats()["hits_shared"]
    redis_server.pause()
    try:
        wait_for(lambda: client.down, 3.0)
        raises(lambda: store.set("k", "new"))
        raises(lambda: store.set("k", "new", version=9))
        raises(lambda: store.set("fresh", 1))
        raises(lambda: store.delete("gone"))
        raises(lambda: store.invalidate("gone"))

        def assign() -> None:
            store["k"] = "new"

        def remove() -> None:
            del store["gone"]

        raises(assign)
        raises(remove)
        raises(lambda: store.set_many({"k": "new", "fresh": 1}))
        raises(lambda: store.delete_many(["k", "gone"]))
        raises(lambda: store.delete_prefix("k"))
        raises(lambda: store.delete_prefix("go"))
        raises(store.clear)
        assert store.get("k") == "old" and store.get("gone") == "kept"  # tier 1 unchanged
        assert store.get("fresh", "none") == "none"
        store._memory.clear()  # tier 2 answers as well, with its copies unchanged
        assert store.get("k") == "old" and store.get("gone") == "kept"
        assert store.stats()["hits_shared"] == shared_hits  # nothing came from Redis
    finally:
        redis_server.resume()
    recovers(store, "k", "old", other)  # no write landed in Redis either
    assert store.get("gone") == "kept"
    assert store.get("fresh", "none") == "none"


def test_local_mode_opens_while_redis_is_down_and_works_once_it_is_back(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.kill()
    started = time.monotonic()
    with TierStore(tmp_path / "store", shared=redis_server.url, shared_ping_interval=0.2) as store:
        assert time.monotonic() - started < SLOW  # a refused connection is known at once
        client = client_of(store)
        assert client.down
        assert timed(lambda: store.get("k", "missed")) == "missed"
        raises(lambda: store.set("k", 1))
        assert store.stats()["shared_errors"] >= 2
        redis_server.start()
        wait_for(lambda: not client.down, RECOVERY)
        assert store.set("k", 1) is True  # epoch id and scripts came with the first contact
        raw = redis.Redis(unix_socket_path=redis_server.socket, socket_timeout=CALL_TIMEOUT)
        assert raw.get(Names("tierstore").epoch) is not None
        assert all(raw.script_exists(*store._shared.scripts._digests.values()))  # type: ignore[union-attr]
        assert store._shared.scripts.reloads == 0  # type: ignore[union-attr]  # loaded before the first write
        with TierStore(shared=redis_server.url) as other:
            assert other.get("k") == 1
            other.set("k", 2)
            wait_for(lambda: store.get("k") == 2)  # its listener is subscribed


def test_local_mode_opens_against_a_paused_server_within_the_bound(redis_server: RedisServer, tmp_path: Path) -> None:
    redis_server.pause()
    try:
        started = time.monotonic()
        store = TierStore(tmp_path / "store", shared=redis_server.url, shared_ping_interval=0.2)
        assert time.monotonic() - started < 2 * CALL_TIMEOUT + 1.5
        try:
            assert client_of(store).down
            assert timed(lambda: store.get("k", "missed")) == "missed"
            raises(lambda: store.set("k", 1))
        finally:
            redis_server.resume()
        wait_for(lambda: not client_of(store).down, RECOVERY)
        assert store.set("k", 1) is True
        assert store.get("k") == 1
    finally:
        redis_server.resume()
        store.close()


def test_raise_mode_refuses_to_open_while_redis_is_down(redis_server: RedisServer, tmp_path: Path) -> None:
    redis_server.kill()
    started = time.monotonic()
    with pytest.raises(SharedUnavailable, match="unreachable"):
        TierStore(tmp_path / "store", shared=redis_server.url, shared_failure="raise")
    assert time.monotonic() - started < SLOW
    with TierStore(tmp_path / "store") as store:  # the directory was released
        assert store.get("k") is None


def test_a_server_killed_mid_run_and_restarted_empty_is_recovered_from_by_every_process(
    redis_server: RedisServer,
) -> None:
    """Three processes write their own key and read everyone's while the server is killed (``SIGKILL``)
    and restarted empty on the same socket. Checked on the host's one monotonic clock:

    - no call takes longer than ``SLOW`` (a killed server refuses at once);
    - writes raise ``SharedUnavailable`` during the outage, succeed again after the restart, and
      keep succeeding once one has (a process "recovered" at its first write after the restart);
    - the ``"local"`` processes never raise on a read; the ``"raise"`` one does during the outage;
    - once recovered (its listener resubscribed and resynced), no process reads a value from
      before the restart: ``gone`` (written before only) reads ``None``, and each writer's key
      reads ``None`` or a number that writer wrote after the restart, never going back.
    """
    names = ["w0", "w1", "w2"]
    failures = ["local", "local", "raise"]
    workers = [Worker(redis_server.url, shared_ping_interval=0.2, shared_failure=f) for f in failures]
    try:
        workers[0].call("set", "gone", "before")
        for worker in workers:
            assert [worker.call("get", "gone") for _ in range(3)] == ["before"] * 3
        until = time.monotonic() + 8.0
        for name, worker in zip(names, workers, strict=True):
            worker.start("churn", name, [*names, "gone"], until)
        time.sleep(1.5)
        killed = time.monotonic()
        redis_server.kill()
        time.sleep(1.5)
        restarted = time.monotonic()
        redis_server.start()  # empty: no keys, no scripts, no epoch id
        logs = [worker.result(timeout=60) for worker in workers]
        written_after: dict[str, set[int]] = {}
        for name, (writes, _) in zip(names, logs, strict=True):
            written_after[name] = {n for n, landed, started, _ in writes if landed and started > restarted}
        for name, failure, worker, (writes, reads) in zip(names, failures, workers, logs, strict=True):
            assert max(ended - started for *_, started, ended in writes + reads) < SLOW
            assert any(landed for _, landed, started, _ in writes if started < killed)
            assert any(landed is None for _, landed, started, _ in writes if killed < started < restarted)
            recovered = min(started for _, landed, started, _ in writes if landed and started > restarted)
            assert recovered - restarted < RECOVERY
            assert all(landed for _, landed, started, _ in writes if started >= recovered)
            raised = [read for read in reads if read[2]]
            if failure == "local":
                assert raised == []
            else:
                assert any(killed < started < restarted + RECOVERY for *_, started, _ in raised)
            after = [read for read in reads if read[3] >= recovered]
            assert after, "no reads after the recovery"
            for key in names:
                values = [value for k, value, raised_, *_ in after if k == key]
                numbers = [value for value in values if value is not None]
                assert set(numbers) <= written_after[key], (name, key, values[:20])
                assert numbers == sorted(numbers), (name, key)
                assert values == [None] * (len(values) - len(numbers)) + numbers  # never back to nothing
            assert all(value is None for k, value, *_ in after if k == "gone")
            stats = worker.stats()
            assert stats["resyncs"] >= 1 and stats["shared_errors"] >= 1
        workers[0].call("set", "fresh", "v")
        for worker in workers:
            wait_for(lambda worker=worker: worker.call("get", "fresh") == "v")  # type: ignore[misc]
            assert worker.call("get", "gone") is None
    finally:
        for worker in workers:
            worker.close()


def test_a_loss_found_by_a_call_reconnects_and_an_ended_outages_timer_changes_nothing(
    stores: Callable[..., TierStore],
) -> None:
    """A call that finds Redis unreachable marks it down with the listener still subscribed: the listener
    reconnects and resyncs; the grace timer of that outage, firing after Redis came back, does nothing."""
    store, other = stores(shared_grace=0.5), stores()
    warm(store, other, {"k": "old"})
    assert store._shared is not None
    client, outage = client_of(store), store._shared.outage
    resyncs = store.stats()["resyncs"]
    outage.lost("forced, as a call that timed out would")
    assert client.down and store.get("k") == "old"  # within the grace: the copy answers
    wait_for(lambda: not client.down, RECOVERY)
    assert store.stats()["resyncs"] == resyncs + 1  # on reconnect only: the grace did not end meanwhile
    assert store._memory.get("k") is None
    time.sleep(0.7)  # past the first outage's grace
    assert store.stats()["resyncs"] == resyncs + 1
    shared_hits = store.stats()["hits_shared"]
    assert [store.get("k") for _ in range(3)] == ["old"] * 3
    assert store.stats()["hits_shared"] == shared_hits + 1  # copies land again: the store is listening
    other.set("k", "new")
    wait_for(lambda: store.get("k") == "new")


@pytest.mark.parametrize(
    ("what", "call"),
    [
        ("add", lambda store: store.add("k", 1)),
        ("pop", lambda store: store.pop("k", None)),
        ("set_many", lambda store: store.set_many({"k": 1})),
        ("delete_many", lambda store: store.delete_many(["k"])),
        ("delete_prefix", lambda store: store.delete_prefix("k")),
    ],
)
def test_a_call_whose_script_is_loaded_on_first_use_names_itself_in_an_outage(
    redis_server: RedisServer, stores: Callable[..., TierStore], what: str, call: Callable[[TierStore], Any]
) -> None:
    store = stores(shared_failure="raise")  # none of these calls ran yet: their scripts load on first use
    client = client_of(store)
    redis_server.pause()
    try:
        wait_for(lambda: client.down, 3.0)
        error = timed(lambda: call(store))
        assert isinstance(error, SharedUnavailable) and str(error).startswith(f"{what}"), error
    finally:
        redis_server.resume()


@pytest.mark.parametrize("failure", ["local", "raise"])
@pytest.mark.parametrize("setting", ["wrong password", "no such database"])
def test_a_redis_that_answers_but_refuses_the_store_is_no_outage_at_open(
    redis_server: RedisServer, failure: str, setting: str
) -> None:
    """A wrong password or database is a setting to fix: the open raises at once, also with "local", instead
    of opening as if Redis were down and retrying for ever."""
    url = redis_server.url + "?db=99999"
    if setting == "wrong password":
        redis.Redis(unix_socket_path=redis_server.socket).config_set("requirepass", "right")
        url = f"unix://:wrong@{redis_server.socket}"
    started = time.monotonic()
    with pytest.raises(SharedUnavailable, match="refused"):
        TierStore(shared=url, shared_failure=failure).close()
    assert time.monotonic() - started < SLOW
    if setting == "wrong password":
        with TierStore(shared=f"unix://:right@{redis_server.socket}", shared_failure=failure) as store:
            assert store.set("k", 1) is True


def test_a_redis_out_of_memory_at_open_is_an_outage_with_local_not_a_refusal(redis_server: RedisServer) -> None:
    """A Redis at its ``maxmemory`` (no eviction) refuses writes for a while, a state that passes, not a
    setting to fix: "local" opens as if Redis were down and carries on once it takes writes again (it was
    refused at open as a wrong password is); "raise" raises, as for any outage at open."""
    raw = redis.Redis(unix_socket_path=redis_server.socket)
    raw.set("filler", "x" * 100_000)
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", "1")
    with pytest.raises(SharedUnavailable, match="unreachable at open"):
        TierStore(shared=redis_server.url, shared_failure="raise").close()
    with TierStore(shared=redis_server.url, shared_failure="local") as store:
        assert store.get("k") is None
        raw.config_set("maxmemory", "0")
        wait_for(lambda: not client_of(store).down, timeout=10)
        assert store.set("k", 1) is True and store.get("k") == 1
