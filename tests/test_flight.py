"""Single-flight on its own: leaders, waiters, busy policies, leases, invalidation, renewals."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import start, wait_until
from tierstore import LoadTimeout, TierStoreError
from tierstore.flight import NOTHING, Flight, Flights, check_policy
from tierstore.stats import Stats

WAIT = 5.0


def blocking_load(release: threading.Event, started: threading.Event, value: Any) -> Callable[[Flight], Any]:
    def load(flight: Flight) -> Any:
        started.set()
        assert release.wait(WAIT)
        return value

    return load


def test_first_caller_leads_and_others_join() -> None:
    flights = Flights(lease=30.0)
    first, leads = flights.begin("k")
    second, follows = flights.begin("k")
    other, leads_other = flights.begin("j")
    assert leads and not follows and leads_other
    assert second is first and other is not first
    flights.finish(first, "v")
    assert first.done and first.result() == "v"
    assert "k" not in flights.in_flight


def test_waiters_get_the_leaders_value_and_are_counted() -> None:
    stats = Stats(["load_waits"])
    flights = Flights(lease=30.0, stats=stats)
    release, started = threading.Event(), threading.Event()
    leader, leader_out = start(lambda: flights.run("k", blocking_load(release, started, "v")))
    assert started.wait(WAIT)
    followers = [start(lambda: flights.run("k", lambda f: "never")) for _ in range(8)]
    wait_until(lambda: flights.in_flight["k"].waiters == 8)
    release.set()
    for thread, _ in [(leader, leader_out), *followers]:
        thread.join(WAIT)
    assert leader_out == ["v"]
    assert all(out == ["v"] for _, out in followers)
    assert stats["load_waits"] == 8


def test_failure_reaches_every_waiter_and_frees_the_key() -> None:
    flights = Flights(lease=30.0)
    release, started = threading.Event(), threading.Event()
    boom = ValueError("source down")

    def failing(flight: Flight) -> Any:
        started.set()
        assert release.wait(WAIT)
        raise boom

    leader, leader_out = start(lambda: flights.run("k", failing))
    assert started.wait(WAIT)
    followers = [start(lambda: flights.run("k", lambda f: "never")) for _ in range(4)]
    wait_until(lambda: flights.in_flight["k"].waiters == 4)
    release.set()
    for thread, _ in [(leader, leader_out), *followers]:
        thread.join(WAIT)
    assert leader_out == [boom]
    assert all(out[0] is boom for _, out in followers)
    assert flights.in_flight == {}
    assert flights.run("k", lambda f: "again") == "again"


def test_interrupt_reaches_waiters_as_a_tierstore_error() -> None:
    flights = Flights(lease=30.0)
    flight, _ = flights.begin("k")
    interrupt = KeyboardInterrupt()
    flights.finish(flight, error=interrupt)
    with pytest.raises(TierStoreError) as info:
        flight.result()
    assert info.value.__cause__ is interrupt


def test_busy_fallback_is_returned_unless_it_is_nothing() -> None:
    flights = Flights(lease=30.0)
    flight, _ = flights.begin("k")
    assert flights.run("k", lambda f: "never", on_busy="default", busy=lambda: "fallback") == "fallback"
    with pytest.raises(LoadTimeout, match="wait_timeout"):
        flights.run("k", lambda f: "never", on_busy="stale", busy=lambda: NOTHING, wait_timeout=0.01)
    flights.finish(flight, "v")


def test_wait_timeout_raises_and_leaves_the_flight_running() -> None:
    flights = Flights(lease=30.0)
    flight, _ = flights.begin("k")
    with pytest.raises(LoadTimeout):
        flights.run("k", lambda f: "never", wait_timeout=0)
    assert flights.in_flight["k"] is flight
    assert flights.admits(flight)


def test_expired_lease_lets_a_waiter_take_over_and_rejects_the_late_fill() -> None:
    flights = Flights(lease=0.1)
    hung, _ = flights.begin("k")
    # the follower waits out the lease, then leads a new flight of its own
    result = flights.run("k", lambda f: ("new", f is not hung, flights.admits(f)))
    assert result == ("new", True, True)
    assert not flights.admits(hung)
    flights.finish(hung, "late")  # must not free a newer flight's key either
    assert hung.result() == "late"


def test_expired_lease_is_not_admitted_even_if_not_replaced() -> None:
    flights = Flights(lease=0.05)
    flight, _ = flights.begin("k")
    assert flights.admits(flight)
    wait_until(lambda: not flights.running("k"))
    assert not flights.admits(flight)


def test_finish_of_a_replaced_flight_keeps_the_new_one() -> None:
    flights = Flights(lease=30.0)
    old, _ = flights.begin("k")
    flights.invalidate("k")
    new, leads = flights.begin("k")
    assert leads and new is not old
    flights.finish(old, "old")
    assert flights.in_flight["k"] is new
    assert flights.admits(new) and not flights.admits(old)


def test_invalidate_detaches_the_flight_but_its_waiters_still_get_a_value() -> None:
    flights = Flights(lease=30.0)
    release, started = threading.Event(), threading.Event()
    leader, leader_out = start(lambda: flights.run("k", blocking_load(release, started, "old")))
    assert started.wait(WAIT)
    flight = flights.in_flight["k"]
    waiter, waiter_out = start(lambda: flights.run("k", lambda f: "never"))
    wait_until(lambda: flight.waiters == 1)
    flights.invalidate("k")
    assert not flights.admits(flight)
    # a caller arriving after the invalidation loads afresh instead of joining the old load
    assert flights.run("k", lambda f: "fresh") == "fresh"
    release.set()
    leader.join(WAIT)
    waiter.join(WAIT)
    assert leader_out == ["old"] and waiter_out == ["old"]


def test_invalidate_prefix_detaches_the_flights_under_it_of_its_kind_only() -> None:
    flights = Flights(lease=30.0)
    keys: list[Any] = ["user:1", "user:2", "users", b"user:1", "post:1"]
    begun = {key: flights.begin(key)[0] for key in keys}
    assert flights.invalidate_prefix("user:") == 2
    assert [key for key in keys if flights.admits(begun[key])] == ["users", b"user:1", "post:1"]
    assert flights.invalidate_prefix(b"") == 1
    assert not flights.admits(begun[b"user:1"])
    assert flights.invalidate_prefix(None) == 2
    assert flights.in_flight == {}
    assert flights.invalidate_prefix("") == 0


def test_invalidate_without_a_flight_keeps_no_state() -> None:
    flights = Flights(lease=30.0)
    for i in range(100):
        flights.invalidate(f"k{i}")
    assert flights.in_flight == {}


def test_claim_renewal_is_rate_limited_per_key() -> None:
    flights = Flights(lease=30.0)
    assert flights.claim_renewal("k", 60.0)
    assert not flights.claim_renewal("k", 60.0)
    assert flights.claim_renewal("j", 60.0)
    assert flights.claim_renewal("k", 0.0)  # no limit
    assert flights.claim_renewal("k", 0.0)


def test_claim_renewal_allows_again_after_the_interval() -> None:
    flights = Flights(lease=30.0)
    assert flights.claim_renewal("k", 0.05)
    assert not flights.claim_renewal("k", 0.05)
    wait_until(lambda: flights.claim_renewal("k", 0.05))


def test_renewal_memory_is_pruned() -> None:
    flights = Flights(lease=30.0)
    for i in range(3000):
        assert flights.claim_renewal(i, 0.01)
    wait_until(lambda: flights.claim_renewal(0, 0.01))
    time.sleep(0.02)  # every claim above is now older than the interval
    for i in range(3000, 6000):
        flights.claim_renewal(i, 0.01)
    assert len(flights._renewed) <= 3000  # only the claims of the last interval are kept
    assert 1 not in flights._renewed


@pytest.mark.parametrize("policy", ["wait", "stale", "default"])
def test_check_policy_accepts_the_three_policies(policy: str) -> None:
    assert check_policy(policy) == policy


@pytest.mark.parametrize("policy", ["WAIT", "", None, 1, "block"])
def test_check_policy_rejects_others(policy: object) -> None:
    with pytest.raises(ValueError, match="on_busy"):
        check_policy(policy)


def test_a_leader_asking_for_its_own_key_is_refused_at_once() -> None:
    flights = Flights(lease=3600.0)  # a wait would outlast the test

    def reenter(flight: Flight) -> Any:
        return flights.run("k", lambda f: "inner")

    with pytest.raises(RuntimeError, match="its own key"):
        flights.run("k", reenter)
    assert "k" not in flights.in_flight
    assert flights.run("k", lambda f: flights.run("j", lambda g: "j") + "k") == "jk"
    assert flights.run("k", lambda f: flights.run("k", lambda g: 1, on_busy="default", busy=lambda: "d")) == "d"
