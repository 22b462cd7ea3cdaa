"""get_or_load and recomputation through the store: single-flight, policies, leases, fill generations."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import ROUNDS_FACTOR, FakeClock, start, wait_until
from tierstore import ABSENT, LoadTimeout, StoreClosed, TierStore, Versioned

WAIT = 5.0
OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


def open_store(path: str | None = None, clock: FakeClock | None = None, **settings: Any) -> TierStore:
    if clock is not None:
        settings["clock"] = clock
    return TierStore(path, **{**OPTS, **settings})


@pytest.fixture
def store(clock: FakeClock) -> Iterator[TierStore]:
    with open_store(clock=clock, min_refresh_interval=0.0) as opened:
        yield opened


def waiters(store: TierStore, key: str) -> int:
    flight = store._flights.in_flight.get(key)
    return 0 if flight is None else flight.waiters


class Source:
    """A source of truth whose loader can be held at a gate: ``started`` fires once it has read."""

    def __init__(self, value: Any = "v1") -> None:
        self.value = value
        self.calls = 0
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def hold(self) -> None:
        self.gate.clear()
        self.started.clear()

    def load(self) -> Any:
        with self._lock:
            self.calls += 1
        value = self.value  # read the source before waiting: this is the race being tested
        self.started.set()
        assert self.gate.wait(WAIT)
        if self.error is not None:
            raise self.error
        return value


# -- hits and misses ------------------------------------------------------------------------


def test_miss_loads_once_then_hits(store: TierStore) -> None:
    source = Source((1, [2, "x"]))
    assert store.get_or_load("k", source.load) == [1, [2, "x"]]  # reads as the tiers would return it
    assert store.get_or_load("k", source.load) == [1, [2, "x"]]
    assert store.get("k") == [1, [2, "x"]]
    assert source.calls == 1
    stats = store.stats()
    assert stats["loads"] == 1 and stats["misses"] == 1 and stats["hits_memory"] == 2  # get_or_load and get


def test_hit_from_disk_after_reopen(store_path: str) -> None:
    with open_store(store_path) as store:
        store.get_or_load("k", lambda: "v")
    with open_store(store_path) as store:
        assert store.get_or_load("k", lambda: pytest.fail("loader called on a hit")) == "v"
        assert store.stats()["hits_disk"] == 1


def test_ttl_of_a_fill(store: TierStore, clock: FakeClock) -> None:
    source = Source()
    store.get_or_load("k", source.load, ttl=10)
    entry = store.get_entry("k")
    assert entry is not None and entry.expires_at == clock.now + 10
    clock.advance(11)
    source.value = "v2"
    assert store.get_or_load("k", source.load, ttl=10) == "v2"
    assert source.calls == 2


def test_stampede_on_a_cold_key_calls_the_loader_once() -> None:
    threads = 64
    with open_store() as store:
        for round_ in range(50 * ROUNDS_FACTOR):
            key = f"cold-{round_}"
            source = Source(round_)
            source.hold()
            barrier = threading.Barrier(threads)

            def call(source: Source = source, key: str = key, barrier: threading.Barrier = barrier) -> Any:
                barrier.wait(WAIT)
                return store.get_or_load(key, source.load)

            running = [start(call) for _ in range(threads)]
            assert source.started.wait(WAIT)
            # every other caller has joined the one flight before the loader may return
            wait_until(lambda key=key: waiters(store, key) == threads - 1)  # type: ignore[misc]
            source.gate.set()
            for thread, _ in running:
                thread.join(WAIT)
            assert source.calls == 1, f"round {round_}"
            assert all(out == [round_] for _, out in running)
        assert store.stats()["loads"] == 50 * ROUNDS_FACTOR


# -- failures, leases and fill generations ---------------------------------------------------


def test_failing_loader_reaches_every_waiter_and_frees_the_key(store: TierStore) -> None:
    source = Source()
    source.error = RuntimeError("source down")
    source.hold()
    leader, leader_out = start(lambda: store.get_or_load("k", source.load))
    assert source.started.wait(WAIT)
    followers = [start(lambda: store.get_or_load("k", source.load)) for _ in range(5)]
    wait_until(lambda: waiters(store, "k") == 5)
    source.gate.set()
    for thread, _ in [(leader, leader_out), *followers]:
        thread.join(WAIT)
    assert all(out[0] is source.error for _, out in [(leader, leader_out), *followers])
    assert source.calls == 1
    assert store.get_entry("k") is None  # nothing cached
    assert store.stats()["load_errors"] == 1
    source.error = None
    assert store.get_or_load("k", source.load) == "v1"  # the key is free again
    assert source.calls == 2


def test_unencodable_loader_result_raises_and_caches_nothing(store: TierStore) -> None:
    with pytest.raises(TypeError, match="object"):
        store.get_or_load("k", lambda: object())
    assert store.get_entry("k") is None
    assert store.get_or_load("k", lambda: "ok") == "ok"


def test_hung_loader_past_its_lease_does_not_wedge_the_key_nor_overwrite() -> None:
    with open_store(lock_timeout=0.2) as store:
        source = Source("old")
        source.hold()
        hung, hung_out = start(lambda: store.get_or_load("k", source.load))
        assert source.started.wait(WAIT)
        # this caller waits out the 0.2 s lease, then loads the key itself
        assert store.get_or_load("k", lambda: "new") == "new"
        assert store.get("k") == "new"
        source.gate.set()
        hung.join(WAIT)
        assert hung_out == ["old"]  # the late result goes to its own caller...
        assert store.get("k") == "new"  # ...and never overwrites
        assert store.stats()["fills_rejected"] == 1


def test_late_result_past_the_lease_is_not_stored_even_without_a_new_load() -> None:
    with open_store(lock_timeout=0.1) as store:
        source = Source("late")
        source.hold()
        hung, hung_out = start(lambda: store.get_or_load("k", source.load))
        assert source.started.wait(WAIT)
        wait_until(lambda: not store._flights.running("k"))
        source.gate.set()
        hung.join(WAIT)
        assert hung_out == ["late"]
        assert store.get_entry("k") is None


@pytest.mark.parametrize("write", ["invalidate", "delete", "set"])
def test_write_during_a_load_keeps_the_old_value_out_of_both_tiers(store_path: str, write: str) -> None:
    """The cache-aside race: read the old row, the writer updates and invalidates, the fill must not land."""
    with open_store(store_path) as store:
        source = Source("old")
        source.hold()
        reader, reader_out = start(lambda: store.get_or_load("k", source.load))
        assert source.started.wait(WAIT)  # the reader has read "old"
        source.value = "new"
        if write == "invalidate":
            store.invalidate("k")
        elif write == "delete":
            store.delete("k")
        else:
            store.set("k", "new")
        source.gate.set()
        reader.join(WAIT)
        assert reader_out == ["old"]  # returned to its caller
        assert store.get("k") == (None if write != "set" else "new")
        assert store.stats()["fills_rejected"] == 1
        store._memory.clear()  # tier 2 too
        assert store.get("k") == (None if write != "set" else "new")
        assert store.get_or_load("k", source.load) == "new"
    with open_store(store_path) as store:
        assert store.get("k") == "new"


@pytest.mark.parametrize(
    "refused",
    [
        lambda s: s.set("k", object()),
        lambda s: s.set("k", 2**64),
        lambda s: s.set("k", b"x" * 65),  # past max_value_bytes
        lambda s: s.set("k", object(), version=5),
        lambda s: s.add("k", object()),
        lambda s: s.add("k", {(1, 2): 1}),  # a dict key tier 2 could not give back
    ],
    ids=["object", "65-bit-int", "too-long", "versioned-object", "add-object", "add-tuple-key"],
)
def test_a_write_refused_for_its_value_leaves_the_load_in_flight_free_to_fill(
    clock: FakeClock, refused: Callable[[TierStore], Any]
) -> None:
    """Bad input changes nothing: the refused write never happened, so the fill is not detached by it."""
    with open_store(clock=clock, max_value_bytes=64) as store:
        source = Source("loaded")
        source.hold()
        reader, reader_out = start(lambda: store.get_or_load("k", source.load))
        assert source.started.wait(WAIT)
        with pytest.raises((TypeError, ValueError, OverflowError)):
            refused(store)
        source.gate.set()
        reader.join(WAIT)
        assert reader_out == ["loaded"]
        assert store.get("k") == "loaded"
        assert store.stats()["fills_rejected"] == 0


def test_an_add_during_a_load_wins_over_its_fill(store: TierStore) -> None:
    source = Source("old")
    source.hold()
    reader, reader_out = start(lambda: store.get_or_load("k", source.load))
    assert source.started.wait(WAIT)
    assert store.add("k", "added")
    source.gate.set()
    reader.join(WAIT)
    assert reader_out == ["old"] and store.get("k") == "added"
    assert store.stats()["fills_rejected"] == 1


def test_caller_after_an_invalidation_does_not_join_the_old_load(store: TierStore) -> None:
    source = Source("old")
    source.hold()
    reader, reader_out = start(lambda: store.get_or_load("k", source.load))
    assert source.started.wait(WAIT)
    store.invalidate("k")
    assert store.get_or_load("k", lambda: "fresh") == "fresh"  # does not wait for the old load
    source.gate.set()
    reader.join(WAIT)
    assert reader_out == ["old"]
    assert store.get("k") == "fresh"


# -- busy policies ------------------------------------------------------------------------------


def test_on_busy_default_returns_the_default_at_once(store: TierStore) -> None:
    source = Source()
    source.hold()
    leader, _ = start(lambda: store.get_or_load("k", source.load))
    assert source.started.wait(WAIT)
    assert store.get_or_load("k", source.load, on_busy="default", default="dflt") == "dflt"
    assert store.stats()["busy_defaults"] == 1
    source.gate.set()
    leader.join(WAIT)
    assert source.calls == 1


def test_on_busy_stale_serves_the_stale_value_while_one_renewal_runs(clock: FakeClock) -> None:
    with open_store(clock=clock, stale_ttl=60.0, min_refresh_interval=0.0) as store:
        store.set("k", "old", ttl=1)
        clock.advance(2)
        source = Source("new")
        source.hold()
        # finding only a stale value and no load running, this caller loads itself
        renewer, renewer_out = start(lambda: store.get_or_load("k", source.load, on_busy="stale"))
        assert source.started.wait(WAIT)
        assert store.get_or_load("k", source.load, on_busy="stale") == "old"
        waiter, waiter_out = start(lambda: store.get_or_load("k", source.load, on_busy="wait"))
        wait_until(lambda: waiters(store, "k") == 1)
        source.gate.set()
        renewer.join(WAIT)
        waiter.join(WAIT)
        assert renewer_out == ["new"] and waiter_out == ["new"]
        assert source.calls == 1
        assert store.stats()["stale_served"] == 1


def test_on_busy_stale_without_a_stale_value_waits(clock: FakeClock) -> None:
    with open_store(clock=clock, stale_ttl=5.0) as store:
        store.set("k", "old", ttl=1)
        clock.advance(10)  # past the stale window
        source = Source("new")
        source.hold()
        leader, _ = start(lambda: store.get_or_load("k", source.load))
        assert source.started.wait(WAIT)
        follower, follower_out = start(lambda: store.get_or_load("k", source.load, on_busy="stale"))
        wait_until(lambda: waiters(store, "k") == 1)
        source.gate.set()
        leader.join(WAIT)
        follower.join(WAIT)
        assert follower_out == ["new"]


def test_on_busy_stale_with_no_load_running_loads_even_within_min_refresh_interval(clock: FakeClock) -> None:
    # min_refresh_interval limits background renewals; a caller that finds only a stale
    # value and no load running loads itself, and after a failed load the next call loads again
    with open_store(clock=clock, stale_ttl=60.0, min_refresh_interval=60.0) as store:
        store.set("k", "old", ttl=1)
        clock.advance(2)
        source = Source()
        source.error = RuntimeError("down")
        with pytest.raises(RuntimeError):
            store.get_or_load("k", source.load, on_busy="stale")
        with pytest.raises(RuntimeError):
            store.get_or_load("k", source.load, on_busy="stale")  # not cached: loads again
        assert source.calls == 2
        source.error = None
        assert store.get_or_load("k", source.load, on_busy="stale", ttl=1) == "v1"
        clock.advance(2)  # stale again, well within min_refresh_interval of real time
        source.value = "v2"
        assert store.get_or_load("k", source.load, on_busy="stale") == "v2"
        assert source.calls == 4
        assert store.stats()["stale_served"] == 0


def test_wait_timeout_raises_load_timeout(store: TierStore) -> None:
    source = Source()
    source.hold()
    leader, leader_out = start(lambda: store.get_or_load("k", source.load))
    assert source.started.wait(WAIT)
    with pytest.raises(LoadTimeout, match="'k'"):
        store.get_or_load("k", source.load, wait_timeout=0.05)
    source.gate.set()
    leader.join(WAIT)
    assert leader_out == ["v1"] and source.calls == 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"on_busy": "block"}, ValueError),
        ({"on_busy": None}, ValueError),
        ({"ttl": 0}, ValueError),
        ({"ttl": "10"}, TypeError),
        ({"wait_timeout": -1}, ValueError),
    ],
)
def test_bad_arguments_are_refused_before_loading(store: TierStore, kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        store.get_or_load("k", lambda: pytest.fail("loader called"), **kwargs)
    assert store.get_entry("k") is None


def test_bad_key_and_loader(store: TierStore) -> None:
    with pytest.raises(TypeError, match="loader"):
        store.get_or_load("k", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.get_or_load(42, lambda: "v")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.get_or_load("x" * 5000, lambda: "v")


# -- negative entries and versions ----------------------------------------------------------------


@pytest.mark.parametrize("nothing", [None, ABSENT])
def test_loader_returning_nothing_stores_a_negative_entry(clock: FakeClock, nothing: Any) -> None:
    with open_store(clock=clock, negative_ttl=30.0) as store:
        calls = []

        def loader() -> Any:
            calls.append(1)
            return nothing

        assert store.get_or_load("k", loader, ttl=1000, default="none") == "none"
        entry = store.get_entry("k")
        assert entry is not None and entry.negative and entry.expires_at == clock.now + 30
        assert store.get_or_load("k", loader, default="none") == "none"
        assert len(calls) == 1
        clock.advance(31)
        store.get_or_load("k", loader)
        assert len(calls) == 2


def test_waiters_get_their_own_default_for_a_negative_load(store: TierStore) -> None:
    source = Source(None)
    source.hold()
    leader, leader_out = start(lambda: store.get_or_load("k", source.load, default="a"))
    assert source.started.wait(WAIT)
    follower, follower_out = start(lambda: store.get_or_load("k", source.load, default="b"))
    wait_until(lambda: waiters(store, "k") == 1)
    source.gate.set()
    leader.join(WAIT)
    follower.join(WAIT)
    assert leader_out == ["a"] and follower_out == ["b"]


def test_versioned_result_stamps_the_version(store: TierStore) -> None:
    assert store.get_or_load("k", lambda: Versioned("v", 5)) == "v"
    entry = store.get_entry("k")
    assert entry is not None and entry.version == 5
    assert store.set("k", "older", version=4) is False


def test_versioned_fill_never_goes_below_a_newer_version(store: TierStore, clock: FakeClock) -> None:
    store.set("k", "newer", version=7, ttl=1)
    clock.advance(2)  # expired: the next call loads
    assert store.get_or_load("k", lambda: Versioned("stale-row", 5)) == "stale-row"
    clock.advance(-2)
    entry = store.get_entry("k")
    assert entry is not None and (entry.value, entry.version) == ("newer", 7)
    assert store.stats()["fills_rejected"] == 1


def test_versioned_fill_at_the_same_version_renews_the_entry(store: TierStore, clock: FakeClock) -> None:
    store.get_or_load("k", lambda: Versioned("v", 5), ttl=10)
    clock.advance(11)
    assert store.get_or_load("k", lambda: Versioned("v", 5), ttl=10) == "v"
    entry = store.get_entry("k")
    assert entry is not None and entry.version == 5 and entry.expires_at == clock.now + 10


def test_versioned_fill_does_not_resurrect_a_tombstone_of_its_version(store: TierStore) -> None:
    store.set("k", "v", version=3)
    store.delete("k", version=5)
    assert store.get_or_load("k", lambda: Versioned("ghost", 5)) == "ghost"
    assert store.get_entry("k") is None
    assert store.get_or_load("k", lambda: Versioned("back", 6)) == "back"
    assert store.get("k") == "back"


def test_bad_version_from_a_loader_raises(store: TierStore) -> None:
    with pytest.raises(ValueError, match="version"):
        store.get_or_load("k", lambda: Versioned("v", -1))
    assert store.get_entry("k") is None


# -- refresh-ahead, XFetch, refresh_every --------------------------------------------------------


def test_refresh_ahead_returns_at_once_and_renews_in_the_background(clock: FakeClock) -> None:
    with open_store(clock=clock, refresh_ahead=0.2, min_refresh_interval=0.0) as store:
        source = Source("v1")
        store.get_or_load("k", source.load, ttl=100)
        clock.advance(79)  # 21 s left: not yet in the last 20%
        assert store.get_or_load("k", source.load, ttl=100) == "v1"
        assert store.drain(WAIT) and source.calls == 1
        clock.advance(2)  # 19 s left
        source.value = "v2"
        source.hold()
        assert store.get_or_load("k", source.load, ttl=100) == "v1"  # at once, while the refresh is held
        assert source.started.wait(WAIT)
        assert store.get_or_load("k", source.load, ttl=100) == "v1"  # no second refresh
        source.gate.set()
        assert store.drain(WAIT)
        assert source.calls == 2
        entry = store.get_entry("k")
        assert entry is not None and entry.value == "v2" and entry.expires_at == clock.now + 100
        assert store.stats()["refreshes"] == 1


def test_background_refresh_is_single_flight_with_foreground_loads(clock: FakeClock) -> None:
    with open_store(clock=clock, refresh_ahead=0.5, min_refresh_interval=0.0) as store:
        source = Source("v1")
        store.get_or_load("k", source.load, ttl=10)
        clock.advance(6)
        source.value = "v2"
        source.hold()
        assert store.get_or_load("k", source.load, ttl=10) == "v1"
        assert source.started.wait(WAIT)
        clock.advance(5)  # now expired: a foreground caller joins the background refresh
        follower, follower_out = start(lambda: store.get_or_load("k", source.load, ttl=10))
        wait_until(lambda: waiters(store, "k") == 1)
        source.gate.set()
        follower.join(WAIT)
        assert follower_out == ["v2"] and source.calls == 2


def test_a_hit_that_read_the_entry_before_a_renewal_landed_starts_no_second_one(clock: FakeClock) -> None:
    """A hit reads the old entry (due for renewal) and asks for its renewal only after another
    hit's renewal has loaded and landed: the key was written since, so nothing is loaded again."""
    with open_store(clock=clock, refresh_ahead=0.5, min_refresh_interval=0.0) as store:
        source = Source("v1")
        store.get_or_load("k", source.load, ttl=10)
        clock.advance(6)  # in the last half of the TTL
        loading = store._loading
        real_renew = loading._renew
        asked, paused, go = [], threading.Event(), threading.Event()

        def renew_late(*args: Any) -> None:
            asked.append(args[0])
            if len(asked) == 1:  # the first hit: pause between its read and its request
                paused.set()
                assert go.wait(WAIT)
            real_renew(*args)

        loading._renew = renew_late  # type: ignore[method-assign]
        source.value = "v2"
        late, late_out = start(lambda: store.get_or_load("k", source.load, ttl=10))
        assert paused.wait(WAIT)  # it read "v1" and is about to ask for a renewal
        assert store.get_or_load("k", source.load, ttl=10) == "v1"  # this hit's renewal runs...
        assert store.drain(WAIT) and source.calls == 2 and store.get("k") == "v2"  # ...and lands
        go.set()
        late.join(WAIT)
        assert late_out == ["v1"] and store.drain(WAIT)
        assert source.calls == 2 and store.stats()["refreshes"] == 1


def test_failed_background_refresh_keeps_the_old_value_and_is_rate_limited(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with open_store(clock=clock, refresh_ahead=0.5, min_refresh_interval=60.0) as store:
        source = Source("v1")
        store.get_or_load("k", source.load, ttl=10)
        clock.advance(6)
        source.error = RuntimeError("down")
        assert store.get_or_load("k", source.load, ttl=10) == "v1"
        assert store.drain(WAIT)
        assert store.get("k") == "v1"
        assert store.stats()["refresh_errors"] == 1
        assert any("refresh" in r.getMessage() and r.exc_info for r in caplog.records)
        assert store.get_or_load("k", source.load, ttl=10) == "v1"  # within min_refresh_interval
        assert store.drain(WAIT)
        assert source.calls == 2


def test_xfetch_renews_early_by_its_rule(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tierstore.loading.random.random", lambda: 0.5)  # ln(1 - 0.5): a fixed draw
    with open_store(clock=clock, early_beta=1e12, min_refresh_interval=0.0) as store:
        source = Source("v1")
        store.get_or_load("k", source.load, ttl=100)  # any measurable load time * 1e12 spans the TTL
        assert store.get_or_load("k", source.load, ttl=100) == "v1"
        assert store.drain(WAIT)
        assert source.calls == 2 and store.stats()["refreshes"] == 1


def test_xfetch_leaves_entries_far_from_expiry_alone(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tierstore.loading.random.random", lambda: 0.5)
    with open_store(clock=clock, early_beta=1e-6, min_refresh_interval=0.0) as store:
        source = Source("v1")
        store.get_or_load("k", source.load, ttl=100)
        store.set("j", "no load time", ttl=1)
        assert store.get_or_load("k", source.load, ttl=100) == "v1"
        clock.advance(0.999)
        assert store.get_or_load("j", source.load) == "no load time"  # written by set: never early
        assert store.drain(WAIT)
        assert source.calls == 1


def test_refresh_every_loads_at_once_and_periodically_until_cancelled(store: TierStore) -> None:
    values = iter(range(1000))
    third = threading.Event()
    calls = 0

    def loader() -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        return next(values)

    handle = store.refresh_every("k", loader, 0.02)
    assert store.drain(WAIT)
    assert store.get("k") is not None  # the first load ran at once
    assert third.wait(WAIT)
    handle.cancel()
    assert store.drain(WAIT)
    settled = calls
    assert store.get("k") == settled - 1
    assert store.stats()["refreshes"] == settled


def test_refresh_every_failure_is_counted_and_the_old_value_stays(store: TierStore) -> None:
    store.set("k", "old")
    failed = threading.Event()

    def loader() -> Any:
        failed.set()
        raise RuntimeError("down")

    handle = store.refresh_every("k", loader, 60.0)
    assert failed.wait(WAIT)
    assert store.drain(WAIT)
    handle.cancel()
    assert store.get("k") == "old"
    assert store.stats()["refresh_errors"] == 1


def test_refresh_every_bad_arguments(store: TierStore) -> None:
    with pytest.raises(ValueError, match="interval"):
        store.refresh_every("k", lambda: 1, 0)
    with pytest.raises(TypeError):
        store.refresh_every("k", None, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.refresh_every(1, lambda: 1, 1)  # type: ignore[arg-type]


# -- invalidate and drain ---------------------------------------------------------------------


def test_invalidate_deletes_now_and_again_later_without_blocking(store: TierStore) -> None:
    store.set("k", "v")
    store.invalidate("k", again_after=60.0)  # returns at once: the second delete is a timer
    assert store.get("k") is None
    store.set("k", "put back by a slow reader")
    assert store.drain(WAIT)  # the timer is not due: drain does not wait for it
    assert store.get("k") == "put back by a slow reader"


def test_delayed_double_delete_removes_a_value_put_back(store: TierStore) -> None:
    store.set("k", "v")
    store.invalidate("k", again_after=0.05)
    store.set("k", "stale, put back by a reader")
    wait_until(lambda: store.stats()["deletes"] == 2)  # the second delete ran, in the background
    assert store.get("k") is None


def test_invalidate_bad_delay_leaves_the_store_unchanged(store: TierStore) -> None:
    store.set("k", "v")
    with pytest.raises(ValueError, match="again_after"):
        store.invalidate("k", again_after=-1)
    with pytest.raises(TypeError, match="again_after"):
        store.invalidate("k", again_after="1")  # type: ignore[arg-type]
    assert store.get("k") == "v"


def test_close_stops_background_work(clock: FakeClock) -> None:
    store = open_store(clock=clock)
    store.invalidate("k", again_after=60.0)
    calls: list[int] = []
    store.refresh_every("r", lambda: calls.append(1), 0.01)
    store.close()
    settled = len(calls)
    with pytest.raises(StoreClosed):
        store.get_or_load("k", lambda: "v")
    with pytest.raises(StoreClosed):
        store.refresh_every("r", lambda: 1, 1)
    scheduler = store._scheduler
    assert not any(t.is_alive() for t in [*scheduler._threads, scheduler._timer_thread] if t is not None)
    assert len(calls) == settled


# -- cached -----------------------------------------------------------------------------------------


def test_cached_memoizes_by_function_and_arguments(store: TierStore) -> None:
    calls: list[tuple[Any, ...]] = []

    @store.cached(ttl=60, name="add")
    def add(a: int, b: int = 0) -> int:
        calls.append((a, b))
        return a + b

    @store.cached(ttl=60, name="mul")
    def mul(a: int, b: int = 1) -> int:
        return a * b

    assert add(2, b=3) == 5 and add(2, b=3) == 5
    assert add(2, 4) == 6
    assert mul(2, b=3) == 6  # same arguments, another function: another key
    assert add.__name__ == "add"
    assert len(calls) == 2


def test_cached_sorts_keyword_arguments(store: TierStore) -> None:
    calls = []

    @store.cached(name="f")
    def f(**kwargs: int) -> int:
        calls.append(kwargs)
        return sum(kwargs.values())

    assert f(a=1, b=2) == f(b=2, a=1) == 3
    assert len(calls) == 1


def test_cached_respects_its_ttl(store: TierStore, clock: FakeClock) -> None:
    calls = []

    @store.cached(ttl=10, name="f")
    def f(x: int) -> int:
        calls.append(x)
        return x

    f(1)
    clock.advance(11)
    f(1)
    assert len(calls) == 2


def test_cached_refuses_unencodable_arguments(store: TierStore) -> None:
    @store.cached(name="f")
    def f(x: Any) -> Any:
        return 1

    with pytest.raises(TypeError, match="key"):
        f(object())
    with pytest.raises(TypeError):
        store.cached(key=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.cached(ttl=-1)


def test_cached_with_a_key_function_and_long_arguments(store: TierStore) -> None:
    @store.cached(key=lambda user_id: f"user:{user_id}")
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    assert user(7) == {"id": 7}
    assert store.get("user:7") == {"id": 7}

    @store.cached(name="length")
    def length(text: str) -> int:
        return len(text)

    assert length("x" * 10_000) == 10_000  # a key over the limit is hashed
    assert length("x" * 10_000) == 10_000


# -- existence guard hook -------------------------------------------------------------------------


def test_guard_ruling_a_key_out_skips_the_loader() -> None:
    with open_store(guard=True, bloom_capacity=1000) as store:
        store.guard_keys(["in-source"])
        store.set("known", "v")
        assert store.get_or_load("missing", lambda: pytest.fail("loader called"), default="d") == "d"
        assert store.get_or_load("known", lambda: pytest.fail("loader called")) == "v"  # a hit never asks
        assert store.get_or_load("in-source", lambda: "loaded") == "loaded"
        assert store.stats()["guard_rejections"] == 1


# -- unstorable fills, closures in cached, re-entrant loads ---------------------------------


@pytest.mark.parametrize(
    "bad", [{(1, 2): 1}, object(), 2**64, "\ud800"], ids=["tuple-key", "object", "big", "surrogate"]
)
def test_a_loader_returning_an_unstorable_value_raises_a_clear_error(store: TierStore, bad: Any) -> None:
    with pytest.raises((TypeError, ValueError, OverflowError), match="loader of 'k' returned"):
        store.get_or_load("k", lambda: bad)
    assert store.get_entry("k") is None
    assert store.stats()["load_errors"] == 1
    assert store.get_or_load("k", lambda: "fine") == "fine"  # the key is free again


def test_a_cached_function_returning_an_unstorable_value_raises(store: TierStore) -> None:
    @store.cached(name="tuple_keys")
    def tuple_keys(n: int) -> dict[tuple[int, int], int]:
        return {(n, n): n}

    with pytest.raises(TypeError, match="dict key"):
        tuple_keys(1)
    assert list(store.keys()) == []


def test_refresh_every_with_an_unstorable_value_counts_an_error_and_keeps_the_old(store: TierStore) -> None:
    store.set("k", "old")
    handle = store.refresh_every("k", lambda: {(1,): 1}, 3600)
    assert store.drain(WAIT)
    handle.cancel()
    assert store.get("k") == "old"
    assert store.stats()["refresh_errors"] == 1


def _adder(n: int, store: TierStore, name: str | None) -> Any:
    @store.cached(name=name)
    def add(x: int) -> int:
        return x + n

    return add


def test_cached_refuses_a_closure_or_lambda_without_name_or_key(store: TierStore) -> None:
    with pytest.raises(TypeError, match="name="):
        _adder(1, store, None)
    with pytest.raises(TypeError, match="name="):
        store.cached()(lambda x: x)
    with pytest.raises(TypeError, match="name="):
        store.cached(lambda x: x)


def test_closures_from_one_factory_with_names_do_not_share_entries(store: TierStore) -> None:
    add1, add10 = _adder(1, store, "add1"), _adder(10, store, "add10")
    assert add1(5) == 6
    assert add10(5) == 15
    by_key = store.cached(key=lambda x: f"sq:{x}")(lambda x: x * x)
    assert by_key(3) == 9 and store.get("sq:3") == 9


def test_cached_bare_and_positional_only(store: TierStore) -> None:
    calls: list[int] = []

    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    double.__qualname__ = "double"  # as if defined at module level
    wrapped = store.cached(double)
    assert wrapped(4) == 8 and wrapped(4) == 8
    assert calls == [4]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": 42}, TypeError),
        ({"name": ""}, ValueError),
        ({"name": "\ud800"}, ValueError),
        ({"name": "x" * 5000}, ValueError),
        ({"name": "n", "key": str}, TypeError),
    ],
    ids=["int", "empty", "surrogate", "too-long", "both"],
)
def test_cached_validates_name(store: TierStore, kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="name"):
        store.cached(**kwargs)


def test_a_loader_loading_its_own_key_fails_at_once(clock: FakeClock) -> None:
    with open_store(clock=clock, lock_timeout=3600) as store:  # a stall would outlast the test

        def loader() -> str:
            return str(store.get_or_load("k", lambda: "inner"))

        with pytest.raises(RuntimeError, match="its own key"):
            store.get_or_load("k", loader)
        assert store.get_entry("k") is None
        assert store.get_or_load("k", lambda: "v") == "v"
        assert store.get_or_load("a", lambda: store.get_or_load("b", lambda: "b") + "a") == "ba"
        assert store.get("b") == "b"


def test_a_loader_reentering_with_on_busy_default_gets_the_default(store: TierStore) -> None:
    assert store.get_or_load("k", lambda: store.get_or_load("k", lambda: 1, on_busy="default", default="d")) == "d"


def test_cached_recursion_on_the_same_arguments_fails_at_once(clock: FakeClock) -> None:
    with open_store(clock=clock, lock_timeout=3600) as store:

        @store.cached(name="loop")
        def loop(n: int) -> int:
            return loop(n)

        @store.cached(name="fact")
        def fact(n: int) -> int:
            return 1 if n <= 1 else n * fact(n - 1)

        with pytest.raises(RuntimeError, match="its own key"):
            loop(3)
        assert fact(5) == 120


def test_a_waiter_in_another_thread_still_waits_for_the_loader(store: TierStore) -> None:
    release, started = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(WAIT)
        return "v"

    leader, out = start(lambda: store.get_or_load("k", slow))
    assert started.wait(WAIT)
    follower, follower_out = start(lambda: store.get_or_load("k", lambda: "other"))
    wait_until(lambda: waiters(store, "k") == 1)
    release.set()
    leader.join(WAIT)
    follower.join(WAIT)
    assert out == ["v"] and follower_out == ["v"]


def test_durations_longer_than_a_lock_can_wait_are_waited_as_forever(clock: FakeClock) -> None:
    with open_store(clock=clock, lock_timeout=1e300) as store:
        store.invalidate("other", again_after=1e300)  # a timer the timer thread must survive
        source = Source()
        source.hold()
        leader, leader_out = start(lambda: store.get_or_load("k", source.load))
        assert source.started.wait(WAIT)
        follower, follower_out = start(lambda: store.get_or_load("k", source.load, wait_timeout=1e300))
        wait_until(lambda: waiters(store, "k") == 1)
        source.gate.set()
        leader.join(WAIT)
        follower.join(WAIT)
        assert leader_out == ["v1"] and follower_out == ["v1"] and source.calls == 1
        again = threading.Event()
        store.refresh_every("r", lambda: again.set() or 1, 0.01)
        assert again.wait(WAIT)
        assert store.drain(1e300)


def test_an_async_loader_on_the_threaded_store_is_named_and_never_left_unawaited(
    store: TierStore, recwarn: pytest.WarningsRecorder
) -> None:
    async def load() -> str:
        return "v"

    with pytest.raises(TypeError, match=r"returned a coroutine.*AsyncTierStore"):
        store.get_or_load("k", load)
    gc.collect()  # an unclosed coroutine warns "never awaited" when collected
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert store.get_entry("k") is None
    assert store.get_or_load("k", lambda: "plain") == "plain"
