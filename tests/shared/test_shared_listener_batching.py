"""The listener reads a stream of messages in batches: after each wake-up it sleeps ``coalesce`` seconds.

What arrives while it sleeps waits in the socket and is read at the next
wake-up in one go, so a stream costs one wake-up per window instead of one per
message; an isolated message is handled at once. Real redis-server, two stores:
A writes, B listens. The window is widened here so the timing is not at the
machine's mercy, and PINGs are put off past the test (their PONG would be a
wake-up of its own).
"""

from __future__ import annotations

import time

from tests.shared.support import wait_for
from tests.shared.test_shared_mirror_adversarial import Stores, heard
from tierstore import TierStore
from tierstore.shared.listener import _DRAIN, COALESCE, Listener

WINDOW = 1.5  # seconds: the widened sleep after each wake-up
QUIET: dict[str, object] = {"shared_ping_interval": 60.0, "shared_failure": "raise"}  # no PING in a test


def listener_of(store: TierStore) -> Listener:
    assert store._shared is not None and store._shared.listener is not None
    return store._shared.listener


def test_the_default_window_is_short() -> None:
    assert 0 < COALESCE <= 0.005  # a few milliseconds at most are added to the lag of a message in a stream


def test_messages_arriving_while_it_sleeps_take_one_wake_up(stores: Stores) -> None:
    a, b = stores(**QUIET), stores(**QUIET)
    listener = listener_of(b)
    listener.coalesce = WINDOW
    a.set("k0", "first")
    wait_for(heard(b, 1))
    woken = listener.wakeups
    started = time.monotonic()
    for index in range(1, 10):
        a.set(f"k{index}", f"v{index}")
    assert time.monotonic() - started < WINDOW / 2, "the writes were too slow for the window to cover them"
    wait_for(heard(b, 10), timeout=WINDOW + 5)
    assert listener.wakeups == woken + 1  # nine messages, one wake-up
    assert [b.get(f"k{index}") for index in range(1, 10)] == [f"v{index}" for index in range(1, 10)]


def test_without_the_window_each_message_may_wake_it(stores: Stores) -> None:
    a, b = stores(**QUIET), stores(**QUIET)
    listener = listener_of(b)
    listener.coalesce = 0.0
    a.set("k0", "first")
    wait_for(heard(b, 1))
    woken = listener.wakeups
    for index in range(1, 10):
        a.set(f"k{index}", f"v{index}")
        wait_for(heard(b, index + 1))  # each heard before the next is written
    assert listener.wakeups - woken == 9


def test_an_isolated_message_is_handled_at_once_and_the_next_after_the_window(stores: Stores) -> None:
    a, b = stores(**QUIET), stores(**QUIET)
    listener_of(b).coalesce = WINDOW
    time.sleep(0.1)  # past any wake-up of the stores' opening
    started = time.monotonic()
    a.set("k", "v1")
    wait_for(heard(b, 1))
    first = time.monotonic() - started
    a.set("k", "v2")
    wait_for(heard(b, 2), timeout=WINDOW + 5)
    second = time.monotonic() - started
    assert first < WINDOW / 2  # not held back: the sleep comes after a wake-up, not before
    assert second >= WINDOW * 0.9  # held until the window after the first ended
    assert b.get("k") == "v2"


def test_close_does_not_wait_for_the_window(stores: Stores) -> None:
    a, b = stores(**QUIET), stores(**QUIET)
    listener_of(b).coalesce = 30.0
    a.set("k", "v1")
    wait_for(heard(b, 1))  # B's listener now sleeps for the window
    started = time.monotonic()
    b.close()
    assert time.monotonic() - started < 5.0


def test_a_backlog_past_one_wake_ups_cap_is_read_on_without_the_window(stores: Stores) -> None:
    a, b = stores(**QUIET), stores(**QUIET)
    listener = listener_of(b)
    window = 4.0
    listener.coalesce = window
    a.set("k0", "first")
    wait_for(heard(b, 1))  # B's listener now sleeps for the window
    started = time.monotonic()
    backlog = _DRAIN + 200
    a.set_many({f"k{index}": index for index in range(backlog)})  # one message per key, in one script
    assert time.monotonic() - started < window / 2, "the writes were too slow for the window to cover them"
    wait_for(heard(b, 1 + backlog), timeout=3 * window)
    # The first wake-up after the window reads the cap's worth; sleeping again before the
    # rest would take a second window.
    assert time.monotonic() - started < 1.5 * window
    assert b.get(f"k{backlog - 1}") == backlog - 1
