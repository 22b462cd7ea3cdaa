"""add, touch, pop, replace_value, the *_many and prefix calls and the listings in shared mode.

Each call is checked against the local store's semantics by running one
sequence of operations on a local store and on a shared one (same clock) and
comparing every answer, every entry and the counts; then against another store
over the same Redis (its listener's messages), against leases, and for the
listings' pruning of expired members.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import FakeClock
from tests.shared.redis_server import RedisServer
from tests.shared.support import entry_hash, wait_for
from tierstore import ABSENT, SharedUnavailable, StoreClosed, TierStore, codec
from tierstore.keyspace import NS_ENTRY
from tierstore.shared.client import CALL_TIMEOUT, Names

NAMES = Names("tierstore")
Op = tuple[Any, ...]


def run(store: TierStore, clock: FakeClock, op: Op) -> Any:
    """One operation of a sequence; what it returned (or the type of what it raised)."""
    name, *args = op
    if name == "advance":
        clock.advance(args[0])
        return None
    kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
    try:
        result = getattr(store, name)(*args, **kwargs)
        return list(result) if name in ("keys", "items") else result
    except (KeyError, TypeError, ValueError) as exc:
        return type(exc).__name__


KEYS = ["a", "b", "c", "user:1", "user:2", "users", b"user:1", "neg", "v"]
SEQUENCES: dict[str, list[Op]] = {
    "add": [
        ("add", "a", 1), ("add", "a", 2), ("set", "neg", ABSENT), ("add", "neg", "now"),
        ("set", "b", "old", {"ttl": 1}), ("advance", 2), ("add", "b", "new"),
        ("set", "v", "v5", {"version": 5}), ("delete", "v"), ("add", "v", "old", {"version": 4}),
        ("add", "v", "same", {"version": 5}), ("add", "v", "plain"), ("add", "c", "x", {"version": 3}),
        ("add", "c", "y", {"version": 9}), ("add", "a", 3, {"ttl": -1}), ("add", "a", object()),
    ],
    "pop": [
        ("set", "a", [1, 2]), ("pop", "a"), ("pop", "a"), ("pop", "a", "dflt"), ("set", "neg", ABSENT),
        ("pop", "neg", "dflt"), ("set", "v", "x", {"version": 7}), ("pop", "v"), ("set", "v", "late", {"version": 7}),
        ("set", "v", "new", {"version": 8}), ("set", "b", 1, {"ttl": 1}), ("advance", 2), ("pop", "b", "gone"),
        ("pop", "v", None), ("pop", "v", None), ("pop", 1),
    ],
    "touch": [
        ("set", "a", {"x": 1}, {"ttl": 10, "version": 3}), ("touch", "a", {"ttl": 100}), ("advance", 50),
        ("touch", "a", {"ttl": None}), ("advance", 500), ("touch", "missing"), ("set", "neg", ABSENT),
        ("touch", "neg", {"ttl": 1000}), ("set", "b", 1, {"ttl": 1}), ("advance", 2), ("touch", "b", {"ttl": 1000}),
        ("set", "v", 1, {"version": 2}), ("delete", "v"), ("touch", "v"), ("touch", "a", {"ttl": 0}),
        ("set", "c", 1), ("touch", "c"), ("touch", "c", {"ttl": 30}),
    ],
    "replace_value": [
        ("set", "a", 1, {"ttl": 100, "version": 3}), ("advance", 10), ("replace_value", "a", 2),
        ("set", "b", 1, {"ttl": None}), ("replace_value", "b", [1]), ("set", "neg", ABSENT), ("delete", "v"),
        ("replace_value", "missing", 9), ("replace_value", "neg", 9), ("replace_value", "v", 9), ("advance", 200),
        ("replace_value", "a", 3), ("replace_value", "b", object()), ("replace_value", "b", "last"),
    ],
    "set_many": [
        ("set", "v", "old", {"version": 5}), ("set", "c", "old", {"version": 9}), ("delete", "c"),
        ("set_many", {"v": "new", "c": "back", "a": (1, 2), b"user:1": ABSENT, "b": 3}, {"ttl": 50}),
        ("set", "v", "older", {"version": 5}), ("set_many", {}), ("set_many", {"a": 1, "bad": object()}),
        ("set_many", [("a", 1)]), ("set_many", {"a": 1}, {"ttl": -1}), ("advance", 60), ("set_many", {"b": 4}),
    ],
    "delete_many": [
        ("set", "a", 1), ("set", "v", 2, {"version": 4}), ("set", "neg", ABSENT), ("set", "b", 1, {"ttl": 1}),
        ("advance", 2), ("delete_many", ["a", "v", "neg", "b", "missing", "a"]), ("delete_many", []),
        ("delete_many", ["v"]), ("set", "v", "old", {"version": 4}), ("set", "v", "new", {"version": 5}),
        ("delete_many", ["c", 3]), ("delete_many", "ab"),
    ],
    "delete_prefix": [
        ("set_many", {f"user:{i:03d}": i for i in range(30)}), ("set_many", {b"user:1": 1, "users": 2, "post": 4}),
        ("set", "user:v", "x", {"version": 3}), ("set", "user:neg", ABSENT), ("delete_prefix", "user:"),
        ("keys", "user"), ("set", "user:v", "old", {"version": 3}), ("delete_prefix", b"user"),
        ("delete_prefix", "nothing"), ("delete_prefix", 1), ("delete_prefix", ""), ("keys",),
    ],
    "clear": [
        ("set_many", {"a": 1, b"b": 2, "c": ABSENT}), ("set", "v", 1, {"version": 6}), ("set", "w", 1, {"ttl": 1}),
        ("advance", 2), ("clear",), ("keys",), ("set", "v", 2, {"version": 6}), ("set", "v", 2, {"version": 7}),
        ("clear",), ("items",),
    ],
    "listings": [
        ("set_many", {"b": 2, "a": 1, b"z": 3, b"a": 4, "user:1": 5, "neg": ABSENT}), ("set", "short", 1, {"ttl": 1}),
        ("set", "gone", 1, {"version": 2}), ("delete", "gone"), ("keys",), ("items",), ("keys", "user"),
        ("items", b""), ("keys", ""), ("advance", 2), ("keys",), ("__len__",), ("keys", 5),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_each_call_answers_as_the_local_store_does(stores: Callable[..., TierStore], tmp_path: Path, name: str) -> None:
    clock = FakeClock()
    settings: dict[str, Any] = {"clock": clock, "negative_ttl": 30, "stale_ttl": 30, "tombstone_ttl": 1000}
    shared = stores(**settings)
    with TierStore(tmp_path / "local", sweep_interval=None, **settings) as local:
        for op in SEQUENCES[name]:
            assert run(shared, clock, op) == run(local, clock, op), op
            for key in KEYS:
                assert shared.get_entry(key) == local.get_entry(key), (op, key)
        assert list(shared.items()) == list(local.items())
        assert len(shared) == len(local)
        for counted in ("sets", "sets_rejected", "deletes"):
            assert shared.stats()[counted] == local.stats()[counted], counted


def test_another_store_sees_each_write_once_its_message_arrives(stores: Callable[..., TierStore]) -> None:
    writer, reader = stores(), stores(memory_admission="always")

    def cached(*keys: str) -> None:
        for key in keys:  # both of the reader's tiers hold a copy
            reader.get(key)
            reader.get(key)

    writer.set_many({"a": 1, "b": 2, "c": 3, "user:1": 4, "user:2": 5, "post:1": 6})
    wait_for(lambda: reader.get_many(["a", "b", "c", "user:1", "user:2", "post:1"]) == dict(
        a=1, b=2, c=3, **{"user:1": 4, "user:2": 5, "post:1": 6}))  # fmt: skip
    cached("a", "b", "c", "user:1", "user:2", "post:1")
    assert writer.replace_value("a", 10) is True
    wait_for(lambda: reader.get("a") == 10)
    assert writer.touch("b", ttl=500) is True
    expires_at = writer.get_entry("b").expires_at  # type: ignore[union-attr]
    wait_for(lambda: reader.get_entry("b").expires_at == expires_at)  # type: ignore[union-attr]
    assert writer.pop("c") == 3
    wait_for(lambda: reader.get("c") is None)
    assert writer.add("c", "added") is True
    wait_for(lambda: reader.get("c") == "added")
    assert writer.delete_many(["a", "b"]) == 2
    wait_for(lambda: reader.get_many(["a", "b"]) == {})
    assert writer.delete_prefix("user:") == 2
    wait_for(lambda: reader.get_many(["user:1", "user:2", "post:1"]) == {"post:1": 6})
    assert writer.clear() == 2
    wait_for(lambda: reader.get_many(["c", "post:1"]) == {})
    assert reader.stats()["resyncs"] == 0


def test_messages_keep_the_seq_contiguous(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    """One seq and one message per key of set_many/delete_many, one for a prefix: no gap, no resync."""
    writer, reader = stores(), stores()
    writer.set("warm", 0)  # the reader's baseline
    wait_for(lambda: reader.stats()["invalidations_received"] == 1)
    writer.set_many({f"k{i}": i for i in range(50)})  # 50 messages
    writer.delete_many([f"k{i}" for i in range(0, 50, 2)] + ["missing"])  # 26
    writer.delete_prefix("k1")  # 1
    writer.clear()  # 1
    assert writer.add("a", 1) and writer.touch("a", ttl=60) and writer.replace_value("a", 2)  # 3
    assert writer.pop("a") == 2  # 1
    assert int(raw.get(NAMES.seq) or 0) == 1 + 50 + 26 + 1 + 1 + 3 + 1
    wait_for(lambda: reader.stats()["invalidations_received"] == 1 + 50 + 26 + 1 + 1 + 3 + 1)
    assert reader.stats()["resyncs"] == 0
    assert writer.stats()["invalidations_received"] == 0  # its own messages


def test_a_prefix_message_drops_only_what_is_under_it(stores: Callable[..., TierStore]) -> None:
    writer, reader = stores(), stores(memory_admission="always")
    writer.set_many({"user:1": 1, "users": 2, b"user:1": 3})
    for key in ("user:1", "users", b"user:1"):
        wait_for(lambda key=key: reader.get(key) is not None)  # type: ignore[misc]
        reader.get(key)
    hits = reader.stats()["hits_shared"]
    reader._flights.begin("user:9")  # a load of this process in flight under the prefix
    reader._flights.begin(b"user:9")  # and one of the other kind
    writer.delete_prefix("user:")
    wait_for(lambda: "user:9" not in reader._flights.in_flight)
    assert b"user:9" in reader._flights.in_flight
    assert reader.get("user:1") is None
    assert [reader.get("users"), reader.get(b"user:1")] == [2, 3]
    assert reader.stats()["hits_shared"] == hits  # the copies outside the prefix answered, not Redis


def test_delete_prefix_releases_the_leases_under_it(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    """A fill whose lease was taken before delete_prefix finds it gone (refused, in every process)."""
    store = stores()
    store.set("user:1", "stored")

    def lease(key: str | bytes) -> bytes:
        tagged = codec.encode_key(key)
        assert raw.set(NAMES.lease(tagged), b"token", nx=True, px=60_000)
        raw.zadd(NAMES.leases, {tagged: 0})
        return tagged

    inside = [lease("user:1"), lease("user:never-stored")]
    outside = [lease("post:1"), lease(b"user:1")]
    assert store.delete_prefix("user:") == 1
    for tagged in inside:
        assert raw.exists(NAMES.lease(tagged)) == 0 and raw.zscore(NAMES.leases, tagged) is None
    for tagged in outside:
        assert raw.get(NAMES.lease(tagged)) == b"token" and raw.zscore(NAMES.leases, tagged) == 0
    store.clear()
    assert raw.zcard(NAMES.leases) == 0
    assert all(raw.exists(NAMES.lease(tagged)) == 0 for tagged in outside)


def test_the_bulk_writes_release_leases_and_keep_the_keys_set(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    store = stores()
    tagged = [codec.encode_key(key) for key in ("a", "b")]
    for name in tagged:
        raw.set(NAMES.lease(name), b"token", px=60_000)
        raw.zadd(NAMES.leases, {name: 0})
    store.set_many({"a": 1, "b": 2})
    assert raw.zcard(NAMES.leases) == 0 and raw.exists(*(NAMES.lease(name) for name in tagged)) == 0
    assert sorted(raw.zrange(NAMES.keys, 0, -1)) == tagged
    store.set("v", 1, version=3)
    assert store.delete_many(["a", "v"]) == 2
    assert sorted(raw.zrange(NAMES.keys, 0, -1)) == [codec.encode_key("b"), codec.encode_key("v")]  # v: a tombstone
    assert entry_hash(raw, "v")[b"v"] == b"3"
    assert 86_000_000 < raw.pttl(NAMES.entry(codec.encode_key("v"))) <= 86_400_000  # tombstone_ttl


def test_writes_refuse_when_redis_fails_and_the_resync_covers_what_redis_applied(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    store = stores(memory_admission="always")
    store.set_many({"a": 1, "user:1": 2, "b": 3})
    assert [store.get(key) for key in ("a", "user:1", "b")] == [1, 2, 3]
    redis_server.pause()
    try:
        for call in (
            lambda: store.set_many({"a": 10}),
            lambda: store.delete_prefix("user:"),
            lambda: store.add("new", 1),
        ):
            started = time.monotonic()
            with pytest.raises(SharedUnavailable):
                call()
            assert time.monotonic() - started < 2 * CALL_TIMEOUT + 1
    finally:
        redis_server.resume()

    # Each call found Redis down (the first by its timeout): nothing changed locally, though Redis,
    # resumed, may apply what it had buffered; the resync on reconnect distrusts every copy kept.
    def copy(key: str) -> bytes | None:  # tier 2 (the listener's resync has cleared tier 1 anyway)
        found: bytes | None = store._disk.get(NS_ENTRY + codec.encode_key(key))
        return found

    assert [copy(key) is not None for key in ("a", "user:1", "new", "b")] == [True, True, False, True]
    fresh = stores()
    for key in ("a", "user:1", "new", "b"):
        wait_for(lambda key=key: _read(store, key) == _read(fresh, key))  # type: ignore[misc]


def _read(store: TierStore, key: str) -> Any:
    try:
        return store.get(key, "missing")
    except SharedUnavailable:
        return "unavailable"


def test_bad_input_changes_nothing_in_redis(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store = stores(max_value_bytes=65_536)
    store.set("a", "before")
    seq = int(raw.get(NAMES.seq) or 0)
    for call, error in (
        (lambda: store.set_many({"a": "after", "b": object()}), TypeError),
        (lambda: store.set_many({"a": "after", "b": "x" * 70_000}), ValueError),
        (lambda: store.delete_many(["a", 3]), TypeError),
        (lambda: store.delete_prefix(None), TypeError),  # type: ignore[arg-type]
        (lambda: store.delete_prefix("\ud800"), ValueError),
        (lambda: store.add("new", object()), TypeError),
        (lambda: store.touch("a", ttl=-1), ValueError),
        (lambda: store.replace_value("a", object()), TypeError),
        (lambda: list(store.keys(3)), TypeError),  # type: ignore[arg-type]
    ):
        with pytest.raises(error):
            call()
    assert store.add("a", object()) is False  # a live entry refuses it before the value matters, as locally
    assert int(raw.get(NAMES.seq) or 0) == seq
    assert store.get("a") == "before" and raw.zcard(NAMES.keys) == 1


def test_calls_on_a_closed_shared_store_raise_store_closed(stores: Callable[..., TierStore]) -> None:
    store = stores()
    store.close()
    for call in (
        lambda: store.add("k", 1), lambda: store.touch("k"), lambda: store.pop("k"),
        lambda: store.replace_value("k", 1), lambda: store.set_many({"k": 1}), lambda: store.delete_many(["k"]),
        lambda: store.delete_prefix("k"), store.clear, lambda: len(store), lambda: list(store.keys()),
    ):  # fmt: skip
        with pytest.raises(StoreClosed):
            call()


def test_racing_adds_and_pops_in_threads_have_one_winner(stores: Callable[..., TierStore]) -> None:
    first, second = stores(), stores()
    for round_ in range(10):
        key = f"race-{round_}"
        barrier = threading.Barrier(8)
        added: list[tuple[int, bool]] = []
        popped: list[Any] = []

        def contender(
            n: int, key: str = key, barrier: threading.Barrier = barrier, added: list[Any] = added,
            popped: list[Any] = popped,
        ) -> None:  # fmt: skip
            store = (first, second)[n % 2]  # two stores: two origins, two local copies
            barrier.wait(10)
            added.append((n, store.add(key, n)))
            barrier.wait(10)
            popped.append(store.pop(key, None))

        threads = [threading.Thread(target=contender, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        winners = [n for n, won in added if won]
        assert len(added) == 8 and len(winners) == 1
        assert len(popped) == 8 and [value for value in popped if value is not None] == winners


def test_touch_retries_when_the_entry_changed_under_it(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    """touch reads, then lands only over the entry it read: a write in between makes it read again."""
    store, other = stores(), stores()
    store.set("k", "first", ttl=10)
    conditional = store._shared.conditional  # type: ignore[union-attr]
    real = conditional._run_steps  # the script's step: made after the read's answer, before it is sent
    calls: list[str] = []

    def run_after_a_write(*args: Any) -> Any:
        if not calls:
            other.set("k", "second", ttl=10)  # lands between touch's read and its script
        calls.append(args[2])
        return real(*args)

    conditional._run_steps = run_after_a_write
    try:
        assert store.touch("k", ttl=500) is True
    finally:
        conditional._run_steps = real
    assert calls == ["touch", "touch"]  # refused once (the stamp moved), then landed
    entry = store.get_entry("k")
    assert entry is not None and entry.value == "second" and entry.expires_at is not None
    assert entry.expires_at > time.time() + 400
    assert 490_000 < raw.pttl(NAMES.entry(codec.encode_key("k"))) <= 500_000


def test_touch_keeps_the_lease_and_the_other_writes_free_it(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    """As locally: touch keeps the value, so a fill in flight may still land; a new value or a delete refuses it."""
    store = stores()
    tagged = codec.encode_key("k")

    def leased() -> bool:
        return raw.exists(NAMES.lease(tagged)) == 1 and raw.zscore(NAMES.leases, tagged) == 0

    for call in (
        lambda: store.add("k", 1),
        lambda: store.replace_value("k", 2),
        lambda: store.pop("k"),
        lambda: store.set_many({"k": 3}),
        lambda: store.delete_many(["k"]),
    ):
        raw.set(NAMES.lease(tagged), b"token", px=60_000)
        raw.zadd(NAMES.leases, {tagged: 0})
        call()
        assert not leased()
    store.set("k", 4)
    raw.set(NAMES.lease(tagged), b"token", px=60_000)
    raw.zadd(NAMES.leases, {tagged: 0})
    assert store.touch("k", ttl=60) is True
    assert leased()


def test_a_prefix_drop_refuses_a_copy_read_before_it(stores: Callable[..., TierStore]) -> None:
    """A read in flight of a key under the prefix, held nowhere locally, must not store what it fetched before."""
    store = stores()
    mirror = store._shared.mirror  # type: ignore[union-attr]
    key = "user:9"
    disk_key = NS_ENTRY + codec.encode_key(key)
    stripe = hash(key) % mirror.stripe_count
    seen = mirror.seen(key, stripe)  # what a read notes before its Redis call
    mirror.drop_prefix("user:")  # a prefix message arrives meanwhile
    record = (10, 0, None, 0, "old", time.time(), None, 0, 0.0)
    mirror.commit(key, disk_key, stripe, seen, record, (1, mirror.epoch), read=False)
    assert store._disk.get(disk_key) is None and store._memory.get(key) is None  # refused: dropped
    seen = mirror.seen(key, stripe)
    mirror.commit(key, disk_key, stripe, seen, record, (1, mirror.epoch), read=False)
    assert store._disk.get(disk_key) is not None  # a read after it lands


def test_durations_past_what_redis_takes_in_milliseconds_mean_never(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    """A TTL, stale_ttl, lock_timeout or interval is only checked to be finite: 1e300 s is "never".
    Its milliseconds are past Redis's integers, which a script refused half way (the entry written,
    its PEXPIRE refused): the write raised SharedUnavailable with its value stored."""
    store = stores(stale_ttl=1e300, lock_timeout=1e300, tombstone_ttl=1e300)
    assert store.set("a", 1, ttl=1e300) is True
    assert store.add("b", 2, ttl=1e300) is True
    assert store.set_many({"c": 3}, ttl=1e300) == 1
    assert store.get_or_load("d", lambda: 4, ttl=1e300) == 4
    assert store.delete("a", version=3) is True  # a tombstone living tombstone_ttl
    store.refresh_every("e", lambda: 5, 1e300)
    assert store.drain(10)
    other = stores()
    assert [other.get(key) for key in "bcde"] == [2, 3, 4, 5]
    assert store.stats()["shared_errors"] == 0
    names = Names("tierstore")
    for key in "abcd":
        assert raw.pttl(names.entry(codec.encode_key(key))) > 10**18  # about 146 million years
