"""The flight table's hooks for coroutines, on their own: listeners, live callers, abandoning a task's load."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import start, wait_until
from tierstore import TierStoreError
from tierstore.flight import Flight, Flights


def cancellable(flights: Flights, key: str) -> tuple[Flight, list[str]]:
    """A flight led, as a task's would be, by something that records being cancelled."""
    flight, leads = flights.begin(key)
    assert leads
    cancelled: list[str] = []
    flight.cancel = lambda: cancelled.append(key)
    return flight, cancelled


def test_the_last_caller_to_leave_abandons_a_cancellable_flight_and_frees_its_key() -> None:
    flights = Flights(lease=30.0)
    flight, cancelled = cancellable(flights, "k")
    flights.follow(flight)
    flights.follow(flight)
    assert flights.leave(flight) is False and cancelled == []
    assert flights.leave(flight) is True and cancelled == ["k"]
    assert flight.abandoned and not flights.running("k")
    assert not flights.admits(flight)  # what it loads is never stored
    fresh, leads = flights.begin("k")
    assert leads and fresh is not flight


def test_a_flight_without_cancel_is_never_abandoned() -> None:
    flights = Flights(lease=30.0)
    flight, _ = flights.begin("k")  # led by a thread: nothing to cancel
    flights.follow(flight)
    assert flights.leave(flight) is False and not flight.abandoned and flights.running("k")


def test_a_waiting_thread_keeps_a_task_s_flight_alive() -> None:
    flights = Flights(lease=30.0)
    flight, cancelled = cancellable(flights, "k")
    flights.follow(flight)  # the coroutine that started it
    thread, out = start(lambda: flights.run("k", lambda f: "thread loaded"))
    wait_until(lambda: flight.following == 2)
    assert flights.leave(flight) is False and cancelled == []  # the coroutine leaves; the thread stays
    flights.finish(flight, "task loaded")
    thread.join(5)
    assert out == ["task loaded"] and flight.following == 0


def test_a_thread_woken_by_an_abandoned_flight_starts_over() -> None:
    flights = Flights(lease=30.0)
    flight, _ = cancellable(flights, "k")
    thread, out = start(lambda: flights.run("k", lambda f: "reloaded"))
    wait_until(lambda: flight.following == 1)
    # the race this covers: the coroutines' last caller abandoned it just as the thread joined
    with flights._lock:
        flight.abandoned = True
        del flights.in_flight["k"]
    flights.finish(flight, error=TierStoreError("cancelled"))
    thread.join(5)
    assert out == ["reloaded"]


def test_an_interrupted_flight_sends_callers_elsewhere_to_the_next_load_and_fails_its_own_scope() -> None:
    flights = Flights(lease=30.0)
    flight, _ = cancellable(flights, "k")
    thread, out = start(lambda: flights.run("k", lambda f: "reloaded"))
    wait_until(lambda: flight.following == 1)
    scope, cause = object(), KeyboardInterrupt()
    flights.interrupt(flight, scope, cause)  # its leader's loop stopped it: no error of the loader
    thread.join(5)
    assert out == ["reloaded"]  # a thread is in no loop: it loads again
    assert flight.starts_over(object()) and not flight.starts_over(scope)
    with pytest.raises(TierStoreError, match="interrupted") as raised:
        flight.result()  # what a caller in that loop gets
    assert raised.value.__cause__ is cause


def test_listeners_are_called_once_when_the_flight_ends_and_not_after() -> None:
    flights = Flights(lease=30.0)
    flight, _ = flights.begin("k")
    woken: list[str] = []
    assert flights.listen(flight, lambda: woken.append("a"))
    gone = lambda: woken.append("gone")  # noqa: E731
    assert flights.listen(flight, gone)
    flights.unlisten(flight, gone)
    finisher = threading.Thread(target=lambda: flights.finish(flight, "v"))
    finisher.start()
    finisher.join(5)
    assert woken == ["a"]
    assert flights.listen(flight, lambda: woken.append("late")) is False  # ended: read the result now
    assert woken == ["a"] and flight.result() == "v"
