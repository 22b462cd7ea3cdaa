"""A damaged or hostile Redis: garbage fields, names of the wrong type, garbage messages, flushed scripts and data.

Each gives a counted miss or a clear error (``CorruptRecord``, ``SharedUnavailable``), never a wrong value
or a raw redis/msgpack error.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from tests.shared.parts_support import PREFIX
from tierstore import CorruptRecord, SharedUnavailable, TierStore
from tierstore.codec import encode_key

Stores = Callable[..., TierStore]


def _entry(key: str) -> bytes:
    return PREFIX + b"e:" + encode_key(key)


def _damage_field(raw: redis.Redis, key: str, field: bytes, garbage: bytes | None) -> None:
    """Replace one field of the entry hash of ``key`` with ``garbage`` (``None``: remove it)."""
    if garbage is None:
        raw.hdel(_entry(key), field)
    else:
        raw.hset(_entry(key), field, garbage)


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
        lambda: store.pop("k", None),  # a damaged entry is none to pop: KeyError without a default
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


@pytest.mark.parametrize("garbage", [b"00007", b"1e5", b"0x10", b" 12", b"99999999999999999999"])
def test_a_damaged_version_never_refuses_a_write_silently(stores: Stores, raw: redis.Redis, garbage: bytes) -> None:
    """Versions compare as strings in Redis: a ``v`` the scripts never write (leading zeros, a float, padding)
    would rank above a real one. It reads as a corrupt miss, and a write it refuses says why."""
    store = stores()
    other = stores()
    store.set("k", 1, version=7)
    raw.hset(_entry("k"), b"v", garbage)
    _forget_locally(store)
    assert store.get_entry("k") is None
    for call in (lambda: store.set("k", 2, version=10), lambda: store.add("k", 3)):
        with pytest.raises(CorruptRecord, match="refused"):
            call()
    assert other.get("k") is None
    assert raw.hget(_entry("k"), b"v") == garbage
    store.set("j", 4, version=1)
    assert other.get("j") == 4


@pytest.mark.parametrize("field, garbage", [(b"s", b"junk"), (b"s", None), (b"e", None), (b"v", None)])
def test_listings_skip_and_count_an_entry_get_calls_damaged(
    stores: Stores, raw: redis.Redis, field: bytes, garbage: bytes | None
) -> None:
    store = stores()
    store.set("k", 1)
    store.set("j", 2)
    _damage_field(raw, "k", field, garbage)
    _forget_locally(store)
    assert store.get("k") is None
    before = store.stats()["corrupt_records"]
    assert list(store.keys()) == ["j"] and list(store.items()) == [("j", 2)] and len(store) == 1
    assert store.stats()["corrupt_records"] > before


@pytest.mark.parametrize("name", [b"g:bits", b"g:params", b"g:building"])
@pytest.mark.parametrize("reopen", [False, True])
def test_a_filter_name_of_another_type_degrades_the_filter_until_rebuild_guard(
    stores: Stores, raw: redis.Redis, name: bytes, reopen: bool
) -> None:
    """A name of the filter holding another type (``WRONGTYPE``) is damage, as damaged parameters are: loads
    and writes go on with every key admitted, and ``rebuild_guard`` repairs it."""
    store = stores(guard=True)
    store.set("k", 1)
    store.guard_keys(["n"])
    raw.delete(PREFIX + name)
    raw.rpush(PREFIX + name, b"junk")
    if reopen:
        store = stores(guard=True)
    assert store.get_or_load("n", lambda: 2) == 2  # never a wrong "absent", never an error
    assert store.set("m", 4) is True
    store.set_many({"p": 5})
    store.guard_keys(["q"])
    assert store.stats()["guard_degraded"] == 1
    store.rebuild_guard(["k", "m", "n", "p"])
    assert store.stats()["guard_degraded"] == 0
    assert store.get_or_load("never", lambda: 6) is None  # the rebuilt filter answers again
    assert store.get_or_load("n", lambda: 7) == 2


@pytest.mark.parametrize(
    "field, garbage", [(b"v", None), (b"s", None), (b"e", None), (b"s", b"junk"), (b"s", b"9" * 20)]
)
def test_add_and_pop_see_an_entry_get_calls_damaged_as_damaged(
    stores: Stores, raw: redis.Redis, field: bytes, garbage: bytes | None
) -> None:
    """A hash ``get`` reads as a corrupt miss is no live entry to ``add`` (which lands over it) or ``pop``
    (which gives the default): their scripts judge the hash as a read does."""
    store = stores()
    for call, expected in ((lambda: store.add("k", 2), True), (lambda: store.pop("k", "none"), "none")):
        store.set("k", 1)
        _damage_field(raw, "k", field, garbage)
        _forget_locally(store)
        assert store.get("k") is None
        assert call() == expected
    assert stores().get("k") is None  # popped
    assert store.add("k", 3) and stores().get("k") == 3


@pytest.mark.parametrize("failure", ["local", "raise"])
def test_an_epoch_name_of_another_type_is_replaced_not_an_outage(
    stores: Stores, raw: redis.Redis, failure: str
) -> None:
    """The epoch id's name holding a hash is damage, not an unreachable Redis: a store opens and works (a new
    id, as when the id is missing), and a store already open writes on."""
    running = stores()
    running.set("k", 1)
    raw.delete(PREFIX + b"epoch")
    raw.hset(PREFIX + b"epoch", "x", "y")
    assert running.set("j", 2) is True
    raw.delete(PREFIX + b"epoch")
    raw.hset(PREFIX + b"epoch", "x", "y")
    store = stores(shared_failure=failure)
    assert store._shared is not None and not store._shared.client.down
    assert store.set("k", 3) is True and store.get("k") == 3
    assert raw.type(PREFIX + b"epoch") == b"string"
