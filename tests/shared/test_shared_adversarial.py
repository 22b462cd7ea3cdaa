"""Adversarial tests of the shared tier: a damaged Redis, hostile input, close and fork at bad moments."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.shared.parts_support import PREFIX, dump
from tests.shared.redis_server import RedisServer
from tierstore import CorruptRecord, SharedUnavailable, StoreClosed, StoreLocked, TierStore
from tierstore.codec import encode_key
from tierstore.keyspace import NS_ENTRY
from tierstore.shared.mirror import envelope_stamp

Stores = Callable[..., TierStore]


def _entry(key: str) -> bytes:
    return PREFIX + b"e:" + encode_key(key)


def _forget_locally(store: TierStore) -> None:
    """Distrust every local copy, so the next read asks Redis."""
    shared = store._shared
    assert shared is not None
    shared.mirror.resync(listening=True)


@pytest.mark.parametrize("field, garbage", [(b"s", b"abc"), (b"s", b"1.5"), (b"v", b"-1"), (b"v", b"x" * 30)])
def test_a_read_of_a_hash_with_a_garbage_field_is_a_counted_miss(
    stores: Stores, raw: redis.Redis, field: bytes, garbage: bytes
) -> None:
    store = stores()
    store.set("k", 1)
    raw.hset(_entry("k"), field, garbage)
    _forget_locally(store)
    before = store.stats()["corrupt_records"]
    assert store.get("k") is None
    assert store.stats()["corrupt_records"] == before + 1


@pytest.mark.parametrize("field, garbage", [(b"s", b"abc"), (b"v", b"abc")])
def test_get_or_load_over_a_hash_with_a_garbage_field_loads_or_raises_cleanly(
    stores: Stores, raw: redis.Redis, field: bytes, garbage: bytes
) -> None:
    store = stores()
    store.set("k", 1)
    raw.hset(_entry("k"), field, garbage)
    _forget_locally(store)
    try:
        value = store.get_or_load("k", lambda: 2)
    except (CorruptRecord, SharedUnavailable):
        return
    assert value == 2


@pytest.mark.parametrize("field, garbage", [(b"s", b"abc"), (b"v", b"abc")])
def test_writes_over_a_hash_with_a_garbage_field_raise_cleanly(
    stores: Stores, raw: redis.Redis, field: bytes, garbage: bytes
) -> None:
    store = stores()
    for call in (
        lambda: store.set("k", 2),
        lambda: store.delete("k"),
        lambda: store.touch("k", 10),
        lambda: store.replace_value("k", 3),
        lambda: store.pop("k"),
        lambda: store.set_many({"k": 4}),
        lambda: store.delete_many(["k"]),
        lambda: store.add("k", 5),
    ):
        raw.delete(_entry("k"))
        store.set("k", 1)
        raw.hset(_entry("k"), field, garbage)
        try:
            call()
        except (CorruptRecord, SharedUnavailable):
            pass
        got = store.get("k")
        assert got in (None, 1, 2, 3, 4, 5)


def test_a_lease_wait_ends_with_store_closed_when_the_store_closes(stores: Stores, raw: redis.Redis) -> None:
    store = stores()
    raw.set(PREFIX + b"l:" + encode_key("k"), b"someone-else", px=60_000)
    outcome: list[Any] = []

    def wait() -> None:
        try:
            outcome.append(store.get_or_load("k", lambda: 1))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    assert not outcome  # waiting for the other holder
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 10
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], StoreClosed)


@pytest.mark.parametrize(
    "message", [b"", b"\xff\x00", b"1:2:x", b"abc:1:x:\x01k", b"5:1:x:\x09k", b"5:P:x:\x09", b"-1:1:x:\x01k"]
)
def test_garbage_on_the_channel_resyncs_and_serves_nothing_stale(
    stores: Stores, raw: redis.Redis, message: bytes
) -> None:
    store = stores()
    other = stores()
    store.set("k", 1)
    assert store.get("k") == 1
    resyncs = store.stats()["resyncs"]
    raw.publish(PREFIX + b"inv", message)
    other.set("k", 2)
    deadline = time.monotonic() + 10
    while store.get("k") != 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert store.stats()["resyncs"] > resyncs
    store.set("j", 1)
    assert store.get("j") == 1


@pytest.mark.parametrize(
    "prefix", ["*", "?", "[a]", "%", "%a", "\x00", "a\x00", b"\xff", b"\xff\xff", b"\x00", "]", "^$.+-"]
)
def test_prefix_deletes_with_special_characters_delete_exactly_the_keys_under_them(
    stores: Stores, raw: redis.Redis, prefix: str | bytes
) -> None:
    store = stores()
    other = stores()
    same = type(prefix)
    under = [prefix + same("x") if isinstance(prefix, str) else prefix + b"x", prefix]
    others: list[Any] = ["a", "b", b"a", "x", "ab", b"\xfe", "\x01"]
    others = [key for key in others if not (type(key) is type(prefix) and key.startswith(prefix))]  # type: ignore[arg-type]
    for key in [*under, *others]:
        store.set(key, 1)
        assert other.get(key) == 1
    store.delete_prefix(prefix)
    for key in under:
        assert store.get(key) is None
    for key in others:
        assert store.get(key) == 1
    deadline = time.monotonic() + 10
    while any(other.get(key) is not None for key in under):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sorted(map(repr, other.keys())) == sorted(map(repr, others))


@pytest.mark.parametrize("ttl", [float("nan"), -1, float("inf"), float("-inf"), "1", True])
def test_bad_ttls_raise_and_change_nothing_in_redis(stores: Stores, raw: redis.Redis, ttl: Any) -> None:
    store = stores()
    store.set("k", 1)
    before = dump(raw)
    for call in (
        lambda: store.set("k", 2, ttl=ttl),
        lambda: store.add("n", 2, ttl=ttl),
        lambda: store.touch("k", ttl),
        lambda: store.set_many({"k": 3, "m": 3}, ttl=ttl),
        lambda: store.get_or_load("n", lambda: 4, ttl=ttl),
    ):
        with pytest.raises((TypeError, ValueError)):
            call()
    assert dump(raw) == before
    assert store.get("k") == 1


@pytest.mark.parametrize("key", [1, 1.5, None, ("a",), ["a"], object()])
def test_bad_keys_raise_type_error_and_change_nothing_in_redis(stores: Stores, raw: redis.Redis, key: Any) -> None:
    store = stores()
    store.set("k", 1)
    before = dump(raw)
    for call in (
        lambda: store.set(key, 2),
        lambda: store.get(key),
        lambda: store.delete(key),
        lambda: store.add(key, 2),
        lambda: store.touch(key, 5),
        lambda: store.pop(key),
        lambda: store.replace_value(key, 2),
        lambda: store.set_many({key: 1, "k": 3}),
        lambda: store.delete_many([key, "k"]),
        lambda: store.get_or_load(key, lambda: 1),
        lambda: store.incr(key),
        *([] if key is None else [lambda: store.delete_prefix(key), lambda: list(store.keys(key))]),  # None: all
    ):
        with pytest.raises(TypeError):
            call()
    assert dump(raw) == before


@pytest.mark.parametrize("version", [-1, 2**63, True, 1.0, "1"])
def test_bad_versions_raise_and_change_nothing_in_redis(stores: Stores, raw: redis.Redis, version: Any) -> None:
    store = stores()
    store.set("k", 1, version=5)
    before = dump(raw)
    for call in (
        lambda: store.set("k", 2, version=version),
        lambda: store.delete("k", version=version),
        lambda: store.add("n", 2, version=version),
    ):
        with pytest.raises((TypeError, ValueError)):
            call()
    assert dump(raw) == before


def test_the_edge_versions_round_trip_exactly(stores: Stores) -> None:
    store = stores()
    other = stores()
    assert store.set("k", 0, version=0) is False or store.get("k") == 0
    assert store.set("k", 1, version=2**63 - 2)
    assert store.set("k", 2, version=2**63 - 1)
    assert not store.set("k", 3, version=2**63 - 2)
    entry = other.get_entry("k")
    assert entry is not None and entry.version == 2**63 - 1 and entry.value == 2


def test_a_fill_whose_reply_is_lost_in_local_mode_returns_the_loaded_value_and_keeps_no_copy(
    redis_server: RedisServer, stores: Stores
) -> None:
    store = stores(shared_failure="local", shared_grace=60.0)
    other = stores()

    def loader() -> str:
        redis_server.pause()  # the fill's call meets a paused server: its reply never comes
        return "loaded"

    try:
        started = time.monotonic()
        assert store.get_or_load("k", loader) == "loaded"
        assert time.monotonic() - started < 15
        assert store._memory.get("k") is None
    finally:
        redis_server.resume()
    # the fill ran once the server resumed, or not at all: either way every store agrees after resync
    deadline = time.monotonic() + 15
    while True:
        try:
            if store.get("k") == other.get("k"):
                break
        except SharedUnavailable:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _in_child(store: TierStore) -> dict[str, str]:
    """Fork; in the child, call the store every way and report each outcome's type name."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        outcomes: dict[str, str] = {}
        try:
            for name, call in (
                ("get", lambda: store.get("k")),
                ("set", lambda: store.set("k", 2)),
                ("delete_prefix", lambda: store.delete_prefix("k")),
                ("get_or_load", lambda: store.get_or_load("n", lambda: 1)),
                ("incr", lambda: store.incr("c")),
                ("keys", lambda: list(store.keys())),
                ("index", lambda: store.index("i").add("m", 1.0)),
                ("close", store.close),
            ):
                try:
                    call()
                    outcomes[name] = "returned"
                except BaseException as exc:
                    outcomes[name] = type(exc).__name__
            os.write(write, json.dumps(outcomes).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


def test_a_forked_child_raises_store_forked_and_the_parent_keeps_working(stores: Stores, raw: redis.Redis) -> None:
    store = stores()
    other = stores()
    store.set("k", 1)
    store.index("i").add("m", 0.0)
    before = dump(raw)
    outcomes = _in_child(store)
    assert outcomes == dict.fromkeys(outcomes, "StoreForked") and len(outcomes) == 8
    assert dump(raw) == before  # the child wrote nothing
    other.set("k", 3)  # the parent's listener still hears the others
    deadline = time.monotonic() + 10
    while store.get("k") != 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    store.set("k", 4)
    assert other.get("k") == 4 or other.get("k") == 3


def test_close_while_redis_is_paused_is_bounded(redis_server: RedisServer, stores: Stores) -> None:
    store = stores()
    store.set("k", 1)
    store.refresh_every("r", lambda: 1, 0.2)
    time.sleep(0.5)  # a round has claimed the job: close frees the claim
    redis_server.pause()
    try:
        started = time.monotonic()
        store.close()
        assert time.monotonic() - started < 15
    finally:
        redis_server.resume()


def test_script_flush_mid_run_reloads_every_script(stores: Stores, raw: redis.Redis) -> None:
    store = stores(guard=True)
    other = stores()
    store.set("k", 1)
    raw.script_flush()
    assert store.set("k", 2)
    assert store.add("a", 1)
    assert store.touch("k", 100)
    assert store.replace_value("k", 3)
    assert store.pop("a") == 1
    raw.script_flush()
    assert store.set_many({"x": 1, "y": 2}) == 2
    raw.script_flush()
    assert store.delete_many(["x", "y"]) == 2
    raw.script_flush()
    assert store.incr("c", 5) == 5
    raw.script_flush()
    store.guard_keys(["n"])
    raw.script_flush()
    assert store.get_or_load("n", lambda: 7) == 7
    raw.script_flush()
    assert store.delete_prefix("k") == 1
    raw.script_flush()
    store.index("i").add("m", 1.0)
    assert other.get("n") == 7 and other.get("k") is None


@pytest.mark.parametrize("keys", [["k", "k"], ["k", "k", "j"], ["k", "j", "k", "j"]])
def test_delete_many_with_repeated_keys_answers_as_locally(stores: Stores, tmp_path: Any, keys: list[str]) -> None:
    shared = stores()
    local = TierStore(path=str(tmp_path / "local"))
    try:
        for store in (shared, local):
            store.set("k", 1)
            store.set("j", 2, version=3)
        assert shared.delete_many(keys) == local.delete_many(keys)
        for key in ("k", "j"):
            assert shared.get(key) == local.get(key)
            assert (shared.get(key) is None) is (key in keys)
        assert stores().get("k") is None
    finally:
        local.close()


def test_on_busy_stale_across_processes_answers_the_value_kept_past_expiry(stores: Stores, raw: redis.Redis) -> None:
    clock = [1000.0]
    holder = stores(clock=lambda: clock[0], stale_ttl=60)
    asker = stores(clock=lambda: clock[0], stale_ttl=60)
    holder.set("k", "old", ttl=1)
    assert asker.get("k") == "old"
    clock[0] += 5  # expired for both, still kept stale_ttl longer in Redis
    raw.set(PREFIX + b"l:" + encode_key("k"), b"a-loader-elsewhere", px=60_000)
    assert asker.get_or_load("k", lambda: "new", on_busy="stale") == "old"
    fresh = stores(clock=lambda: clock[0], stale_ttl=60)
    assert fresh.get_or_load("k", lambda: "new", on_busy="stale") == "old"  # stale from Redis


def test_an_entry_of_the_wrong_type_in_redis_is_a_counted_corrupt_miss(stores: Stores, raw: redis.Redis) -> None:
    store = stores()
    store.set("a", 1)
    store.set("k", 1)
    store.set("z", 1)
    raw.delete(_entry("k"))
    raw.rpush(_entry("k"), b"not a hash")
    _forget_locally(store)
    before = store.stats()["corrupt_records"]
    assert store.get("k") is None
    assert store.stats()["corrupt_records"] == before + 1
    assert sorted(store.keys()) == ["a", "z"]  # one damaged entry does not break every listing
    assert len(store) == 2


def test_a_resync_during_a_commit_leaves_no_trusted_copy_of_what_was_read_before_it(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores()
    other = stores()
    other.set("k", "before")
    shared = store._shared
    assert shared is not None
    mirror, outage = shared.mirror, shared.outage
    real_copy = mirror._copy
    racers: list[threading.Thread] = []

    def copy_racing_a_resync(*args: Any) -> Any:
        # a gap is found while the read's copy is being committed: a missed message may have
        # made what the read fetched stale
        racer = threading.Thread(target=outage.resync, args=("test",))
        racer.start()
        racer.join(0.5)  # blocks while the commit holds its stripe: then it runs right after
        racers.append(racer)
        return real_copy(*args)

    monkeypatch.setattr(mirror, "_copy", copy_racing_a_resync)
    assert store.get("k") == "before"
    monkeypatch.undo()
    for racer in racers:
        racer.join(10)
    assert racers
    # nothing read before the gap is trusted after it: not in tier 1, and tier 2's copy below the floor
    assert store._memory.get("k") is None
    data = store._disk.get(NS_ENTRY + encode_key("k"))
    found = None if data is None else envelope_stamp(data)
    assert found is None or found[0] <= mirror.floor


def test_flushall_then_a_write_is_noticed_by_a_listener_that_heard_no_message_yet(
    stores: Stores, raw: redis.Redis
) -> None:
    writer = stores()
    writer.set("k", "old")
    reader = stores()  # subscribed after that write: its first message will set its baseline
    assert reader.get("k") == "old"  # a copy stamped (seq 1, epoch E1)
    raw.flushall()  # the data set is gone: seq counts from 1 again, a new epoch id comes with the next write
    writer.set("k", "new")  # seq 1 again, in epoch E2
    deadline = time.monotonic() + 10
    while reader.stats()["invalidations_received"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert reader.get("k") == "new"


@pytest.mark.parametrize("key", ["x" * 5000, b"x" * 5000, "\ud800", "a\udfffb"])
def test_keys_too_long_or_not_encodable_raise_value_error_and_change_nothing(
    stores: Stores, raw: redis.Redis, key: Any
) -> None:
    store = stores(guard=True)
    store.set("k", 1)
    store.index("i").add("m", 1.0)
    before = dump(raw)
    for call in (
        lambda: store.set(key, 2),
        lambda: store.get(key),
        lambda: store.delete(key),
        lambda: store.add(key, 2),
        lambda: store.touch(key, 5),
        lambda: store.pop(key),
        lambda: store.replace_value(key, 2),
        lambda: store.set_many({"k": 3, key: 1}),
        lambda: store.delete_many(["k", key]),
        lambda: store.delete_prefix(key),
        lambda: store.get_or_load(key, lambda: 1),
        lambda: store.incr(key),
        lambda: list(store.keys(key)),
        lambda: store.guard_keys(["n", key]),
        lambda: store.index("i").add(key, 2.0),
        lambda: store.index(key),
    ):
        with pytest.raises(ValueError):
            call()
    assert dump(raw) == before
    assert store.get("k") == 1


@pytest.mark.parametrize(
    "params",
    [
        {"seed": "abc"},
        {"nbits": "0"},
        {"nbits": "x"},
        {"nhashes": "1e9"},
        {"nhashes": "100000000"},
        {"error_rate": "nope"},
    ],
)
def test_damaged_guard_parameters_degrade_the_filter_never_a_raw_error_or_a_wrong_answer(
    stores: Stores, raw: redis.Redis, params: dict[str, str]
) -> None:
    first = stores(guard=True)
    first.set("k", 1)
    first.close()
    raw.hset(PREFIX + b"g:params", mapping=params)
    store = stores(guard=True)
    started = time.monotonic()
    assert store.get_or_load("n", lambda: 2) == 2  # a damaged filter admits: never a wrong "absent"
    assert store.get_or_load("k", lambda: 3) == 1
    store.set("m", 4)
    assert time.monotonic() - started < 10
    assert store.stats()["guard_degraded"] == 1
    store.rebuild_guard(["k", "m", "n"])
    assert store.stats()["guard_degraded"] == 0
    assert store.get_or_load("m", lambda: 5) == 4


@pytest.mark.parametrize("option", ["shared_grace", "shared_ping_interval", "lock_timeout"])
@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf"), "1", True])
def test_bad_shared_settings_are_refused_at_open(redis_server: RedisServer, option: str, bad: Any) -> None:
    if option == "shared_grace" and bad == float("inf"):
        pytest.skip("an endless grace is a choice: copies served until Redis is back")
    with pytest.raises((TypeError, ValueError)):
        TierStore(shared=redis_server.url, **{option: bad}).close()


def test_garbage_members_of_the_keys_and_leases_sets_are_skipped_and_cleared(stores: Stores, raw: redis.Redis) -> None:
    store = stores()
    store.set("a", 1)
    for name in (PREFIX + b"keys", PREFIX + b"leases"):
        raw.zadd(name, {b"\x09junk": 0, b"\x01\xff\xfe": 0, b"": 0})
    for junk in (b"\x09junk", b"\x01\xff\xfe", b""):
        raw.hset(PREFIX + b"e:" + junk, mapping={"d": b"x", "v": b"0", "s": b"1", "e": b"e"})
    assert list(store.keys()) == ["a"]
    assert store.clear() == 1
    assert list(store.keys()) == []
    assert store.get("a") is None


def test_a_seq_key_holding_text_makes_writes_raise_and_change_nothing_locally(stores: Stores, raw: redis.Redis) -> None:
    store = stores()
    store.set("k", 1)
    raw.set(PREFIX + b"seq", b"not a number")
    for call in (
        lambda: store.set("k", 2),
        lambda: store.delete("k"),
        lambda: store.set_many({"k": 3}),
        lambda: store.delete_prefix("k"),
        lambda: store.get_or_load("n", lambda: 4),
    ):
        with pytest.raises(SharedUnavailable, match="not an integer"):
            call()
    assert raw.get(PREFIX + b"seq") == b"not a number"
    assert store.get("k") in (1, None)  # never a value Redis did not take


def _listeners() -> int:
    return sum(thread.name == "tierstore-shared-listener" and thread.is_alive() for thread in threading.enumerate())


def test_a_second_open_of_the_same_path_is_refused_and_leaves_nothing_running(
    redis_server: RedisServer, stores: Stores, tmp_path: Any, raw: redis.Redis
) -> None:
    path = str(tmp_path / "one")
    first = stores(path=path)
    first.set("k", 1)
    running, clients = _listeners(), len(raw.client_list())
    with pytest.raises(StoreLocked):
        TierStore(path=path, shared=redis_server.url)
    deadline = time.monotonic() + 10
    while _listeners() != running or len(raw.client_list()) > clients:
        assert time.monotonic() < deadline, (_listeners(), raw.client_list())
        time.sleep(0.05)
    second = stores(namespace="tierstore")  # the same namespace twice in one process: two stores, one truth
    second.set("k", 2)
    deadline = time.monotonic() + 10
    while first.get("k") != 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def write_and_delete_prefixes(store: TierStore, count: int, start_at: float) -> int:
    """Worker routine: ``set("p:k", n, version=n)`` for n = 1..count, a ``delete_prefix("p:")`` every 7th."""
    time.sleep(max(0.0, start_at - time.time()))
    for n in range(1, count + 1):
        store.set("p:k", n, version=n)
        store.set("p:j", n)
        if n % 7 == 0:
            store.delete_prefix("p:")
    return count


def read_values(store: TierStore, until: float) -> list[Any]:
    """Worker routine: read ``p:k`` (get, get_entry, keys) until the wall clock reaches ``until``."""
    seen: list[Any] = []
    while time.time() < until:
        value = store.get("p:k")
        found = store.get_entry("p:k")
        listed = "p:k" in list(store.keys("p:"))
        seen.append((value, None if found is None else found.value, listed))
    return seen


def test_prefix_deletes_racing_versioned_writes_never_take_a_reader_back(redis_server: RedisServer) -> None:
    from tests.shared.workers import Worker

    module = "tests.shared.test_shared_adversarial"
    writer = Worker(redis_server.url, shared_ping_interval=0.2)
    readers = [Worker(redis_server.url, shared_ping_interval=0.2) for _ in range(2)]
    try:
        start_at = time.time() + 1.0
        for reader in readers:
            reader.start(f"{module}:read_values", start_at + 6.0)
        writer.start(f"{module}:write_and_delete_prefixes", 300, start_at)
        assert writer.result(timeout=120) == 300
        for reader in readers:
            seen = reader.result(timeout=120)
            newest = 0
            for value, entry_value, _ in seen:
                for got in (value, entry_value):
                    if got is not None:
                        assert got >= newest, (got, newest)  # a value older than one served: never
                        newest = got
            assert newest == 300
    finally:
        writer.close()
        for reader in readers:
            reader.close()
