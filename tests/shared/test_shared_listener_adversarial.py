"""Adversarial cases of the listener's batching sleep and of pushed records carrying their epoch id.

Real redis-server; B's listener handles A's messages one at a time (``stepping``) or holds
them back, so a read of B runs at an exact point between two of them. Each test asserts a
promise of the README's "Shared tier" section: no older value after a newer one, nothing
from an emptied data set once the listener noticed the new one, hostile messages resync
and land nothing, close stays prompt, lease waiters elsewhere are still woken, and the
asyncio facade behaves the same.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis

from tests.shared.redis_server import RedisServer
from tests.shared.support import wait_for
from tests.shared.test_shared_mirror_adversarial import (
    Stores,
    drive,
    heard,
    messages_held_back,
    once,
    read_steps,
    stamp_held,
)
from tests.shared.test_shared_push_adversarial import stepping
from tests.shared.test_shared_refused import b_holding_a_tombstone
from tierstore import TierStore, codec
from tierstore.aio import AsyncTierStore
from tierstore.shared import leasing
from tierstore.shared.client import CALL_TIMEOUT, Names
from tierstore.shared.listener import Listener

NAMES = Names("tierstore")


def listener_of(store: TierStore) -> Listener:
    assert store._shared is not None and store._shared.listener is not None
    return store._shared.listener


def holding(stores: Stores, **options: Any) -> tuple[TierStore, TierStore]:
    """A and B, B holding a trusted copy of ``k`` = "v1" (read from Redis once)."""
    a, b = stores(**options), stores(**options)
    a.set("k", "v1")
    wait_for(heard(b, 1))
    assert b.get("k") == "v1" and b.stats()["hits_shared"] == 1
    return a, b


class Reads:
    """Every value B serves for ``key``, in order, checked never to go back in ``order``."""

    def __init__(self, store: TierStore, order: list[Any], key: str = "k") -> None:
        self.store, self.order, self.key = store, order, key
        self.seen = [order.index(store.get(key))]

    def __call__(self) -> Any:
        value = self.store.get(self.key)
        rank = self.order.index(value)
        assert rank >= self.seen[-1], f"served {value!r} after {self.order[self.seen[-1]]!r}"
        self.seen.append(rank)
        return value


# -- epoch ids --------------------------------------------------------------------------------


def test_an_epoch_id_changed_by_hand_drops_pushed_records_and_never_goes_back(stores: Stores, raw: redis.Redis) -> None:
    """The epoch id is rewritten by hand while writes go on (their seqs still follow): each pushed
    record names an epoch B has not read, so B drops the key instead of copying it, and reads the
    newest value from Redis each time; flipping the id back changes nothing."""
    a, b = holding(stores)
    original = raw.get(NAMES.epoch)
    reads = Reads(b, ["v1", "v2", "v3", "v4"])
    with stepping(b) as step:
        raw.set(NAMES.epoch, b"by-hand")
        a.set("k", "v2")
        assert reads() == "v1"  # not heard yet
        a.set("k", "v3")
        step()  # v2, of the epoch "by-hand": dropped
        assert stamp_held(b, "k") is None
        assert reads() == "v3"  # from Redis, stamped "by-hand"
        raw.set(NAMES.epoch, original)
        a.set("k", "v4")
        step()  # v3 ("by-hand"): B's copy of v3 is stamped so, a data set B has not read: dropped
        assert reads() == "v4"
        step()  # v4, of the epoch B read: B's copy of v4 is as new, kept
        assert reads() == "v4"
    assert b.stats()["resyncs"] == 0


def test_a_replayed_message_of_the_current_data_set_resyncs_and_copies_nothing(
    stores: Stores, raw: redis.Redis
) -> None:
    """A real message (its record, the current epoch id) is published again after newer writes: its
    seq is stale, so B resyncs and drops the key; it never serves the replayed, older record."""
    a, b = holding(stores)
    spy = raw.pubsub()
    spy.subscribe(NAMES.channel)
    assert spy.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    a.set("k", "v2")
    replayed = spy.get_message(timeout=2)
    spy.close()
    assert replayed is not None and replayed["data"].endswith(raw.get(NAMES.epoch))
    a.set("k", "v3")
    wait_for(heard(b, 3))
    assert b.get("k") == "v3"
    resyncs = b.stats()["resyncs"]
    raw.publish(NAMES.channel, replayed["data"])
    wait_for(heard(b, 4))  # counted once handled
    assert b.stats()["resyncs"] == resyncs + 1
    assert stamp_held(b, "k") is None  # dropped: the replayed record is not copied
    assert b.get("k") == "v3"
    a.set("k", "v4")  # the next real message is a gap again (seq after the replayed one): still no copy
    wait_for(lambda: b.stats()["resyncs"] > resyncs + 1)
    assert b.get("k") == "v4"


@pytest.mark.parametrize(
    "tail",
    [
        lambda tagged, env, epoch: (b"0+%d+%d" % (len(env) + 2, len(epoch)), tagged + env + epoch),  # swallows the key
        lambda tagged, env, epoch: (b"0+%d+%d" % (len(env), len(epoch) + 3), tagged + env + epoch),
        lambda tagged, env, epoch: (b"0+%d+%d" % (len(env), len(epoch)), tagged + b":+" + env + epoch),
        lambda tagged, env, epoch: (b"0+%d+%d" % (len(env), len(epoch)), tagged + env + epoch[:-1] + b":"),
    ],
)
def test_a_push_whose_lengths_are_off_lands_no_copy_of_any_key(stores: Stores, raw: redis.Redis, tail: Any) -> None:
    """Hostile pushes at the next seq for the key ``k:1+2`` whose lengths are off by a few bytes (the
    key split short, ``:+`` spliced in, the epoch id bent): none lands a copy with a wrong value
    under any key; B keeps listening and serves Redis's values."""
    a, b = stores(), stores()
    key = "k:1+2"
    a.set(key, "v1")
    wait_for(heard(b, 1))
    assert b.get(key) == "v1"
    tagged = codec.encode_key(key)
    envelope = raw.hget(NAMES.entry(tagged), "d")
    a.set("x", "other")
    wait_for(heard(b, 2))
    forged = b"forged"
    fake = envelope.replace(b"v1", forged[:2])  # same length: a well-formed record of another value
    epoch = raw.get(NAMES.epoch)
    sizes, rest = tail(tagged, fake, epoch)
    seq = int(raw.incr(NAMES.seq))
    raw.publish(NAMES.channel, b"%d:%s:elsewhere:%s" % (seq, sizes, rest))
    wait_for(lambda: b.stats()["invalidations_received"] >= 3 or b.stats()["resyncs"] > 0)
    for name in (key, "k", "k:", "k:1", "k:1+2:+", "x"):
        assert b.get(name) == a.get(name)
    assert listener_of(b)._thread.is_alive()
    a.set(key, "v3")
    wait_for(lambda: b.get(key) == "v3")


# -- emptied data sets ----------------------------------------------------------------------


@pytest.mark.parametrize("write", ["delete", "set_many", "long", "touch"])
def test_a_data_set_emptied_twice_around_a_write_that_pushes_nothing_never_goes_back(
    stores: Stores, raw: redis.Redis, write: str
) -> None:
    """As the emptied-twice case, with the write in between one whose message carries no record (a
    delete, ``set_many``, a long envelope, ``touch``): its drop keeps only copies of the newest data
    set stamped at or after it, so B never serves "w2" after "z"."""
    a, b = stores(), stores()
    a.set("other", "o")
    wait_for(heard(b, 1))
    writes = {
        "delete": lambda: a.delete("k"),
        "set_many": lambda: a.set_many({"k": "w2"}),
        "long": lambda: a.set("k", "w2" + "x" * 2000),
        "touch": lambda: a.touch("k", ttl=60),
    }
    with stepping(b) as step:
        raw.flushall()
        a.set("k", "w1")
        writes[write]()
        raw.flushall()
        a.set("k", "z")
        a.set("pad", "p")  # seq 2 of the newest data set: the message from in between lands on a seq as new
        step()  # "w1": a reset, the epoch id re-read (the newest)
        assert b.get("k") == "z"
        step()  # the write in between, at seq 2
        assert b.get("k") == "z"
        step()  # "z": seq 1 again, a reset
        assert b.get("k") == "z"
        step()
        assert b.get("k") == "z"


def test_an_emptied_data_set_whose_epoch_id_is_recreated_by_the_listener_pushes_nothing_old(
    stores: Stores, raw: redis.Redis
) -> None:
    """B's first message after a malformed one comes from a data set emptied since, and Redis holds no
    epoch id yet when B checks it: B creates the new one and resyncs; the old record is not copied,
    and A's next write (into that epoch) is copied and served."""
    a, b = holding(stores)
    with stepping(b) as step:
        raw.publish(NAMES.channel, b"junk")
        a.set("k", "old")
        raw.flushall()
        step()  # junk: a resync; the epoch id re-read (created: Redis is empty)
        created = raw.get(NAMES.epoch)
        assert created is not None and b._shared is not None and b._shared.mirror.epoch == created
        assert b.get("k") is None
        step()  # "old", of the emptied data set
        assert b.get("k") is None
        a.set("k", "new")
        step()
        assert b.get("k") == "new"
    assert stamp_held(b, "k") == (1, created)


# -- the sleep against outages and close ------------------------------------------------------


def test_a_server_killed_and_restarted_empty_while_the_listener_sleeps_serves_nothing_from_before(
    redis_server: RedisServer, stores: Stores
) -> None:
    """B's listener sleeps (a widened window) when the server is killed and restarted empty: once B
    is subscribed again it serves nothing from before, and A's next write reaches it."""
    a, b = holding(stores, shared_failure="raise")
    listener = listener_of(b)
    listener.coalesce = 0.5
    a.set("j", "before")
    wait_for(heard(b, 2))  # the window starts
    redis_server.kill()
    redis_server.start()
    client = b._shared.client  # type: ignore[union-attr]
    wait_for(lambda: client.down, CALL_TIMEOUT + 3)
    wait_for(lambda: not client.down, CALL_TIMEOUT + 5)
    assert b.get("k") is None and b.get("j") is None
    a_client = a._shared.client  # type: ignore[union-attr]
    wait_for(lambda: not a_client.down, CALL_TIMEOUT + 5)
    listener.coalesce = 0.0
    assert a.set("k", "after")
    wait_for(lambda: b.get("k") == "after")


def test_a_paused_server_is_noticed_and_the_grace_holds_with_the_window_widened(
    redis_server: RedisServer, stores: Stores
) -> None:
    """A window wider than the PING interval: the unanswered PING is still noticed within about the
    interval plus the window, "local" serves B's copy until the grace's end, then misses."""
    grace = 1.0
    _, b = holding(stores, shared_grace=grace)
    listener_of(b).coalesce = 0.3
    assert b.get("k") == "v1"
    redis_server.pause()
    try:
        paused = time.monotonic()
        client = b._shared.client  # type: ignore[union-attr]
        wait_for(lambda: client.down, 3.0)
        assert time.monotonic() - paused < grace + 1.0
        assert b.get("k") == "v1"  # within the grace
        wait_for(lambda: b.get("k") is None, grace + 2.0)
    finally:
        redis_server.resume()
    wait_for(lambda: not client.down, CALL_TIMEOUT + 5)
    assert b.get("k") == "v1"


def test_close_during_the_window_with_a_paused_server_is_bounded(redis_server: RedisServer, stores: Stores) -> None:
    _, b = holding(stores, shared_failure="raise")
    listener_of(b).coalesce = 30.0
    redis_server.pause()
    try:
        started = time.monotonic()
        b.close()
        assert time.monotonic() - started < CALL_TIMEOUT + 1.5
        assert not listener_of(b)._thread.is_alive()
    finally:
        redis_server.resume()


# -- lease waiters and the asyncio facade ---------------------------------------------------------


@pytest.fixture
def slow_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lease waiters poll Redis every 30 s: one answered sooner was woken by a message."""
    monkeypatch.setattr(leasing, "POLL", 30.0)


def loading_in(store: TierStore) -> tuple[threading.Thread, threading.Event]:
    """``store`` leads a load of ``k`` that answers "loaded" once the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "loaded"

    leader = threading.Thread(target=lambda: store.get_or_load("k", slow))
    leader.start()
    assert started.wait(5)
    return leader, release


@pytest.mark.usefixtures("slow_poll")
def test_a_lease_waiter_elsewhere_is_woken_by_the_fill_s_pushed_message(stores: Stores) -> None:
    """B waits (``on_busy="wait"``) for A's load of ``k``; A's fill is pushed (a record and its epoch
    id after the key): B's listener still wakes the waiter with the key's tagged bytes."""
    a, b = stores(), stores()
    listener_of(b).coalesce = 0.2  # the fill's message follows B's lease call within the window
    leader, release = loading_in(a)
    answered: list[Any] = []
    waiter = threading.Thread(target=lambda: answered.append(b.get_or_load("k", lambda: "mine", on_busy="wait")))
    waiter.start()
    wait_for(lambda: bool(b._shared and b._shared.leases._waiting))  # type: ignore[attr-defined]
    release.set()
    leader.join(5)
    started = time.monotonic()
    waiter.join(5)
    assert answered == ["loaded"] and time.monotonic() - started < 2.0
    assert b.stats()["invalidations_received"] == 1


@pytest.mark.usefixtures("slow_poll")
def test_an_async_lease_waiter_is_woken_by_the_fill_s_pushed_message(redis_server: RedisServer, stores: Stores) -> None:
    a = stores()

    async def body() -> None:
        s = await AsyncTierStore.open(None, shared=redis_server.url, shared_ping_interval=0.2)
        try:
            leader, release = loading_in(a)
            waiting = asyncio.ensure_future(s.get_or_load("k", _mine, on_busy="wait"))
            store = s._store
            assert store is not None and store._shared is not None
            while not store._shared.leases._waiting:  # type: ignore[attr-defined]
                await asyncio.sleep(0.005)
            release.set()
            await asyncio.to_thread(leader.join, 5)
            assert await asyncio.wait_for(waiting, 2.0) == "loaded"
        finally:
            await s.close()

    asyncio.run(body())


async def _mine() -> str:
    return "mine"


def test_the_async_facade_never_serves_a_record_of_a_data_set_emptied_twice(
    redis_server: RedisServer, stores: Stores, raw: redis.Redis
) -> None:
    a = stores()

    async def body() -> None:
        s = await AsyncTierStore.open(None, shared=redis_server.url, shared_ping_interval=0.2)
        try:
            store = s._store
            assert store is not None
            a.set("other", "o")
            wait_for(heard(store, 1))
            with stepping(store) as step:
                raw.flushall()
                a.set("k", "w1")
                a.set("k", "w2")
                raw.flushall()
                a.set("k", "z")
                await asyncio.to_thread(step)
                assert await s.get("k") == "z"
                await asyncio.to_thread(step)  # "w2", of the data set in between
                assert await s.get("k") == "z"
                await asyncio.to_thread(step)
                assert await s.get("k") == "z"
        finally:
            await s.close()

    asyncio.run(body())


# -- listings ---------------------------------------------------------------------------------


def test_a_listing_that_served_a_newer_value_is_not_followed_by_an_older_one(stores: Stores) -> None:
    """A writes v2 while B's listener has not heard it (a message in the socket, or the batching
    window): ``items()`` reads Redis and serves v2; B's ``get`` must not serve its copy of v1 after
    that, nor ``keys()`` list a key that ``in`` then denies."""
    a, b = holding(stores)
    a.set("gone", "x")
    wait_for(heard(b, 2))
    b.delete("gone")  # B holds its tombstone
    wait_for(heard(a, 1))
    with messages_held_back(b):
        a.set("k", "v2")
        a.set("gone", "back")
        assert dict(b.items()) == {"k": "v2", "gone": "back"}
        assert b.get("k") == "v2"
        assert "gone" in list(b.keys()) and "gone" in b


def test_a_read_in_flight_across_a_listing_lands_nothing_older_than_it_served(stores: Stores) -> None:
    """B's read fetched v1 (its copy not landed yet) when A writes v2 and B's ``items()`` serves v2
    (B's listener not having heard it): the read answers v1, as it began before, but its copy must
    not land: B's next ``get`` would go back to v1."""
    a, b = stores(), stores()
    a.set("k", "v1")
    wait_for(heard(b, 1))
    listed: list[dict[Any, Any]] = []

    def write_and_list() -> None:
        a.set("k", "v2")
        listed.append(dict(b.items()))

    with messages_held_back(b):
        answered = drive(b, read_steps(b, "k"), once(write_and_list))
        assert answered[codec.VALUE] == "v1" and listed == [{"k": "v2"}]
        assert b.get("k") == "v2"


def test_a_listing_of_a_data_set_the_listener_has_not_noticed_drops_the_copies_of_the_old_one(
    stores: Stores, raw: redis.Redis
) -> None:
    """Redis is emptied and A writes "z" (seq 1 of a new data set, below B's copy's seq); B's listener
    has not heard it. ``items()`` serves "z": B's copy of the emptied data set, stamped higher in
    another epoch, is dropped, so ``get`` serves "z" too."""
    a, b = holding(stores)
    for n in range(3):
        a.set("k", f"v{n + 2}")  # B's copy of k will be stamped above the new data set's seq 1
    wait_for(heard(b, 4))
    assert b.get("k") == "v4"
    with messages_held_back(b):
        raw.flushall()
        a.set("k", "z")
        assert dict(b.items()) == {"k": "z"}
        assert b.get("k") == "z"


def test_a_resync_and_a_reset_arriving_during_the_window_never_serve_an_older_value(
    stores: Stores, raw: redis.Redis
) -> None:
    """While B's listener sleeps (a widened window) a malformed message arrives, Redis is emptied and A
    writes "z" then "z2" to ``m``; B reads "z" from Redis in between. Handling them all at the next
    wake-up, B never serves nothing or "z" after "z2", and once it noticed the emptied data set it
    no longer serves its copy of ``k`` from before."""
    a, b = holding(stores)
    listener_of(b).coalesce = 0.5
    a.set("j", "wake")
    wait_for(heard(b, 2))  # B's listener now sleeps
    raw.publish(NAMES.channel, b"junk")
    raw.flushall()
    a.set("m", "z")
    reads = Reads(b, [None, "z", "z2"], "m")
    assert reads() == "z"  # from Redis, during the window
    a.set("m", "z2")
    wait_for(lambda: b.stats()["resyncs"] >= 1)
    wait_for(lambda: reads() == "z2")
    assert b.get("k") is None and b.get("j") is None


def test_a_flushall_during_the_listener_s_epoch_read_is_no_outage(stores: Stores, raw: redis.Redis) -> None:
    """B's listener re-reads the epoch id at a reset (FLUSHALL: seq 1 again) and a second FLUSHALL lands
    in the middle of that read (after the id is created when missing, before it is read back). Redis
    answered every call: B must resync, not declare it unreachable (writes would raise
    ``SharedUnavailable`` until the listener reconnected)."""
    a, b = holding(stores)
    client = b._shared.client  # type: ignore[union-attr]
    real = client.redis.execute_command
    flushed: list[bool] = []

    def flush_after_creating_the_epoch_id(*args: Any, **options: Any) -> Any:
        answer = real(*args, **options)
        if args[:2] == ("SET", NAMES.epoch) and not flushed:
            flushed.append(True)
            raw.flushall()  # another client's FLUSHALL, between this step and the next
        return answer

    mirror = b._shared.mirror  # type: ignore[union-attr]
    read_before = mirror.epoch
    client.redis.execute_command = flush_after_creating_the_epoch_id  # type: ignore[method-assign]
    raw.flushall()
    a.set("k", "z")  # seq 1: B's listener sees a reset and re-reads the epoch id
    wait_for(lambda: client.down or mirror.epoch != read_before)
    assert not client.down and b.stats()["resyncs"] == 1
    assert b.set("k", "mine") and b.get("k") == "mine"


# -- refused writes ---------------------------------------------------------------------------


def test_an_add_refused_by_a_write_not_heard_yet_is_not_followed_by_an_absent_read(stores: Stores) -> None:
    """B holds its tombstone of ``k``; A writes v3 and B's listener has not heard it. B's ``add`` is
    refused (Redis holds a live entry): B's ``get`` and ``in`` must not then answer from the older
    tombstone, as no local store would after refusing an ``add``."""
    a, b = b_holding_a_tombstone(stores)
    with messages_held_back(b):
        a.set("k", "v3", version=3)
        assert not b.add("k", "x")
        assert b.get("k") == "v3" and "k" in b


def test_a_versioned_set_refused_by_a_write_not_heard_yet_leaves_no_lower_version_served(stores: Stores) -> None:
    a, b = holding(stores)
    with messages_held_back(b):
        a.set("k", "v7", version=7)
        assert not b.set("k", "b5", version=5)
        entry = b.get_entry("k")
        assert entry is not None and (entry.value, entry.version) == ("v7", 7)
