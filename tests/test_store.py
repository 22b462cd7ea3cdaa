"""The store's core contract: reads, writes, versions, TTLs, bad input and lifetime."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.conftest import FakeClock
from tierstore import ABSENT, Entry, StoreClosed, StoreLocked, TierStore
from tierstore._plyvel import plyvel
from tierstore.codec import SEQ, encode_key
from tierstore.keyspace import NS_ENTRY

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


def open_store(path: str, clock: FakeClock | None = None, **settings: Any) -> TierStore:
    if clock is not None:
        settings["clock"] = clock
    return TierStore(path, **{**OPTS, **settings})


def test_set_get_delete_round_trip(store_path: str) -> None:
    with open_store(store_path) as store:
        assert store.get("k") is None
        assert store.get("k", "dflt") == "dflt"
        assert store.set("k", {"a": [1, 2]}) is True
        assert store.get("k") == {"a": [1, 2]}
        assert store.delete("k") is True
        assert store.get("k") is None
        assert store.delete("k") is False


def test_values_read_the_same_hot_and_cold(store_path: str) -> None:
    value = {"t": (1, (2, "x")), "b": b"\x00", "f": 1.5, "n": None}
    with open_store(store_path, memory_items=1) as store:
        store.set("k", value)
        hot = store.get("k")
        store.set("other", 1)  # evicts k from tier 1
        cold = store.get("k")
    assert hot == cold == {"t": [1, [2, "x"]], "b": b"\x00", "f": 1.5, "n": None}


def test_str_and_bytes_keys_are_different(store_path: str) -> None:
    with open_store(store_path) as store:
        store.set("a", 1)
        store.set(b"a", 2)
        assert (store.get("a"), store.get(b"a")) == (1, 2)


def test_mapping_protocol(store_path: str) -> None:
    with open_store(store_path) as store:
        store["x"] = 1
        assert "x" in store and store["x"] == 1
        del store["x"]
        assert "x" not in store
        with pytest.raises(KeyError):
            store["x"]
        with pytest.raises(KeyError):
            del store["x"]
        store.set("n", ABSENT)
        assert "n" not in store
        with pytest.raises(KeyError):
            store["n"]


def test_keys_and_items_list_live_entries_by_prefix(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("user:1", 1)
        store.set("user:2", 2, ttl=5)
        store.set("user:3", ABSENT)
        store.set("item:1", 3)
        store.set(b"user:9", 4)
        store.set("user:4", 5)
        store.delete("user:4")
        assert sorted(store.keys(), key=repr) == sorted(["user:1", "user:2", "item:1", b"user:9"], key=repr)
        assert list(store.items(prefix="user:")) == [("user:1", 1), ("user:2", 2)]
        assert list(store.keys(prefix=b"user")) == [b"user:9"]
        clock.advance(6)
        assert list(store.keys(prefix="user:")) == ["user:1"]


@pytest.mark.parametrize(
    ("prefix", "error", "message"),
    [(5, TypeError, "prefix must be str or bytes"), (bytearray(b"u"), TypeError, "prefix"),
     ("\ud800", ValueError, "Unicode"), ("u" * 4097, ValueError, "4097 bytes")],
)  # fmt: skip
def test_keys_and_items_refuse_a_bad_prefix_at_the_call(
    store_path: str, prefix: Any, error: type[Exception], message: str
) -> None:
    with open_store(store_path) as store:
        store.set("user:1", 1)
        with pytest.raises(error, match=message):
            store.keys(prefix=prefix)  # not deferred to the first next()
        with pytest.raises(error, match=message):
            store.items(prefix)
        listing = store.keys()
    with pytest.raises(StoreClosed):
        store.items()
    with pytest.raises(StoreClosed):
        list(listing)


def test_versions_in_memory_on_disk_and_after_reopen(store_path: str) -> None:
    with open_store(store_path, memory_items=1) as store:
        assert store.set("k", "v5", version=5)
        assert not store.set("k", "v4", version=4)
        assert not store.set("k", "v5b", version=5)
        store.set("filler", 0)  # push k out of tier 1
        assert not store.set("k", "v3", version=3)
        assert store.set("k", "unversioned")  # keeps version 5
        assert store.get_entry("k") == Entry("unversioned", 5, None, False, False)
    with open_store(store_path) as store:
        assert not store.set("k", "v5c", version=5)
        assert store.set("k", "v6", version=6)
        assert store.get("k") == "v6"
        assert store.stats()["sets_rejected"] == 1


def test_tombstones_keep_versions(store_path: str) -> None:
    with open_store(store_path, memory_items=1) as store:
        store.set("k", "v", version=3)
        store.delete("k", version=7)
        assert store.get_entry("k") is None
        assert not store.set("k", "old", version=7)
        store.set("filler", 0)
        assert not store.set("k", "old", version=6)
    with open_store(store_path) as store:
        assert not store.set("k", "old", version=7)
        store.delete("k")  # keeps 7
        assert not store.set("k", "old", version=7)
        assert store.set("k", "new", version=8)
        assert store.get("k") == "new"


def test_delete_of_unknown_key_with_version_blocks_older_writes(store_path: str) -> None:
    with open_store(store_path) as store:
        assert store.delete("never", version=4) is False
        assert not store.set("never", "x", version=4)
        assert store.set("never", "x", version=5)


def test_ttl_expiry_and_stale_window(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, default_ttl=10, stale_ttl=5) as store:
        store.set("k", "v")
        entry = store.get_entry("k")
        assert entry is not None and entry.expires_at == clock.now + 10 and not entry.stale
        clock.advance(10)
        assert store.get("k") is None
        stale = store.get_entry("k")
        assert stale == Entry("v", 0, clock.now, False, True)
        clock.advance(5)
        assert store.get_entry("k") is None
        store.set("forever", 1, ttl=None)
        clock.advance(10**6)
        assert store.get("forever") == 1
        assert store.get_entry("forever") == Entry(1, 0, None, False, False)


def test_expiry_survives_reopen(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("k", "v", ttl=10)
    clock.advance(11)
    with open_store(store_path, clock) as store:
        assert store.get("k") is None


def test_jitter_draws_ttls_within_bounds(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, default_ttl=100, ttl_jitter=0.2) as store:
        ttls = []
        for i in range(200):
            store.set(f"k{i}", i)
            entry = store.get_entry(f"k{i}")
            assert entry is not None and entry.expires_at is not None
            ttls.append(entry.expires_at - clock.now)
    assert all(100 <= t <= 120 for t in ttls)
    assert max(ttls) - min(ttls) > 10


def test_negative_entries(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, negative_ttl=30) as store:
        store.set("n", ABSENT)
        assert store.get("n", "dflt") == "dflt"
        assert "n" not in store
        entry = store.get_entry("n")
        assert entry == Entry(ABSENT, 0, clock.now + 30, True, False)
        assert store.stats()["negative_hits"] == 1
        clock.advance(31)
        assert store.get_entry("n") is None


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda s: s.set(1, "v"), TypeError, "keys must be str or bytes"),
        (lambda s: s.set(["k"], "v"), TypeError, "keys must be str or bytes"),
        (lambda s: s.get(1.5), TypeError, "keys must be str or bytes"),
        (lambda s: s.get(["k"]), TypeError, "keys must be str or bytes"),
        (lambda s: s.set("x" * 4097, "v"), ValueError, "limit is 4096"),
        (lambda s: s.set("k", {1, 2}), TypeError, "set"),
        (lambda s: s.set("k", object()), TypeError, "object"),
        (lambda s: s.set("k", 2**64), OverflowError, "cannot store"),
        (lambda s: s.set("k", "v", ttl=-1), ValueError, "ttl"),
        (lambda s: s.set("k", "v", ttl=0), ValueError, "ttl"),
        (lambda s: s.set("k", "v", ttl=float("nan")), ValueError, "ttl"),
        (lambda s: s.set("k", "v", ttl=float("inf")), ValueError, "ttl"),
        (lambda s: s.set("k", "v", ttl="10"), TypeError, "ttl"),
        (lambda s: s.set("k", "v", version=-1), ValueError, "version"),
        (lambda s: s.set("k", "v", version=1.0), TypeError, "version"),
        (lambda s: s.set("k", "v", version=True), TypeError, "version"),
        (lambda s: s.delete("k", version="2"), TypeError, "version"),
        (lambda s: s.delete(3), TypeError, "keys must be str or bytes"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    store_path: str, call: Any, error: type[Exception], message: str
) -> None:
    with open_store(store_path) as store:
        store.set("k", "original", version=2)
        before = (store.stats()["sets"], store.get_entry("k"))
        with pytest.raises(error, match=message):
            call(store)
        assert (store.stats()["sets"], store.get_entry("k")) == before
    with open_store(store_path) as store:
        assert store.get_entry("k") == Entry("original", 2, None, False, False)


@pytest.mark.parametrize("ttl", [True, False, "10"], ids=["True", "False", "str"])
@pytest.mark.parametrize(
    "call",
    [
        lambda s, ttl: s.set("k", "new", ttl=ttl),
        lambda s, ttl: s.add("fresh", "new", ttl=ttl),
        lambda s, ttl: s.touch("k", ttl),
        lambda s, ttl: s.set_many({"k": "new"}, ttl=ttl),
        lambda s, ttl: s.get_or_load("fresh", lambda: "new", ttl=ttl),
    ],
    ids=["set", "add", "touch", "set_many", "get_or_load"],
)
def test_a_ttl_that_is_not_a_number_is_a_value_error_as_every_refused_ttl(store_path: str, call: Any, ttl: Any) -> None:
    with open_store(store_path) as store:
        store.set("k", "original")
        with pytest.raises(ValueError, match="ttl") as raised:
            call(store, ttl)
        assert isinstance(raised.value, TypeError)  # and a TypeError, by Python's convention for a wrong type
        assert store.get("k") == "original" and "fresh" not in store


def test_values_over_max_value_bytes_are_refused(store_path: str) -> None:
    with open_store(store_path, max_value_bytes=1000) as store:
        store.set("k", "small")
        with pytest.raises(ValueError, match="max_value_bytes"):
            store.set("k", "x" * 2000)
        assert store.get("k") == "small"


@pytest.mark.parametrize("call", ["set", "set_many", "add", "get_or_load", "set(version)"])
def test_max_value_bytes_bounds_the_value_not_its_envelope(store_path: str, call: str) -> None:
    """A value whose own encoding is exactly the limit is stored and read back from either tier; one byte
    more is refused with the value's size named, and the store is left as it was."""
    limit = 1000
    at_limit, over = b"x" * (limit - 3), b"x" * (limit - 2)  # bin16: a 3-byte header
    assert len(msgpack.packb(at_limit)) == limit and len(msgpack.packb(over)) == limit + 1

    def write(store: TierStore, key: str, value: bytes) -> object:
        if call == "set":
            return store.set(key, value, ttl=3600.0)  # an expiry: the widest envelope fields
        if call == "set_many":
            return store.set_many({key: value}, ttl=3600.0)
        if call == "add":
            return store.add(key, value, ttl=3600.0)
        if call == "get_or_load":
            return store.get_or_load(key, lambda: value, ttl=3600.0)
        return store.set(key, value, ttl=3600.0, version=2**62)

    with open_store(store_path, max_value_bytes=limit, memory_items=1) as store:
        write(store, "fits", at_limit)
        store.set("other", 1)  # tier 1 (one item) forgets "fits"
        assert store.get("fits") == at_limit  # from tier 2: the record is longer than the limit
        with pytest.raises(ValueError, match=f"{limit + 1} bytes encoded; max_value_bytes is {limit}"):
            write(store, "over", over)
        assert "over" not in store and store.get("fits") == at_limit
    with open_store(store_path, max_value_bytes=limit) as store:
        assert store.get("fits") == at_limit and store.stats()["corrupt_records"] == 0


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"memory_items": -1}, ValueError),
        ({"memory_items": "10"}, TypeError),
        ({"memory_bytes": 0}, ValueError),
        ({"default_ttl": 0}, ValueError),
        ({"ttl_jitter": -0.1}, ValueError),
        ({"negative_ttl": float("inf")}, ValueError),
        ({"tombstone_ttl": None}, TypeError),
        ({"stale_ttl": -1}, ValueError),
        ({"lock_timeout": 0}, ValueError),
        ({"bloom_error_rate": 1.0}, ValueError),
        ({"bloom_capacity": 0}, ValueError),
        ({"clock": 5}, TypeError),
        ({"no_such_option": 1}, TypeError),
    ],
)
def test_bad_settings_fail_at_construction(store_path: str, settings: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        TierStore(store_path, **settings)
    assert not os.path.exists(store_path)


def test_tombstone_ttl_refuses_none_naming_the_setting(store_path: str) -> None:
    # every delete computes its tombstone's expiry from it: None would fail each delete instead of the open
    with pytest.raises(TypeError, match="tombstone_ttl"):
        TierStore(store_path, tombstone_ttl=None)
    assert not os.path.exists(store_path)


def test_negative_ttl_none_keeps_negative_entries_without_expiry(store_path: str) -> None:
    """As ``default_ttl=None`` does for values: a negative entry stays until written over or deleted."""
    with open_store(store_path, negative_ttl=None) as store:
        store.set("gone", ABSENT)
        entry = store.get_entry("gone")
        assert entry is not None and entry.value is ABSENT and entry.expires_at is None
        assert store.get("gone", "dflt") == "dflt" and store.stats()["negative_hits"] == 1
        store.set("gone", "back")
        assert store.get("gone") == "back"


def test_memory_bytes_bounds_tier_1(store_path: str) -> None:
    with open_store(store_path, memory_items=1000, memory_bytes=2000) as store:
        for i in range(100):
            store.set(f"k{i}", "x" * 100)
        stats = store.stats()
        assert stats["memory_bytes"] <= 2000
        assert stats["memory_items"] < 20
        assert stats["evictions_memory"] > 0
        assert all(store.get(f"k{i}") == "x" * 100 for i in range(100))  # tier 2 still has all


def test_stats_has_every_documented_key_from_the_start(store_path: str) -> None:
    documented = [
        "hits_memory",
        "hits_disk",
        "misses",
        "negative_hits",
        "stale_served",
        "sets",
        "sets_rejected",
        "deletes",
        "loads",
        "load_errors",
        "load_waits",
        "busy_defaults",
        "guard_rejections",
        "fills_rejected",
        "refreshes",
        "evictions_memory",
        "evictions_disk",
        "expired_purged",
        "corrupt_records",
        "checkpoints",
    ]
    with open_store(store_path) as store:
        stats = store.stats()
        assert all(stats[name] == 0 for name in documented)


def test_hit_and_miss_counters(store_path: str) -> None:
    with open_store(store_path, memory_items=1, memory_admission="always") as store:
        store.set("a", 1)
        store.set("b", 2)  # a leaves tier 1
        store.get("b")
        store.get("a")  # from tier 2, promoted
        store.get("a")  # now from tier 1
        store.get("zzz")
        stats = store.stats()
        assert (stats["hits_memory"], stats["hits_disk"], stats["misses"]) == (2, 1, 1)


def test_corrupt_record_reads_as_a_counted_miss_logged_once(store_path: str, caplog: pytest.LogCaptureFixture) -> None:
    with open_store(store_path) as store:
        store.set("good", 1)
    db = plyvel.DB(store_path)
    db.put(NS_ENTRY + encode_key("bad"), b"\xc1garbage")
    db.put(NS_ENTRY + encode_key("bad2"), msgpack.packb([1, "x"]))
    db.close()
    with caplog.at_level(logging.DEBUG, logger="tierstore"), open_store(store_path) as store:
        assert store.get("bad", "dflt") == "dflt"
        assert store.get_entry("bad2") is None
        assert store.get("bad") is None
        assert store.get("good") == 1
        assert store.stats()["corrupt_records"] == 3
        assert sorted(store.keys(), key=repr) == ["good"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "corrupt" in r.getMessage()]
    assert len(warnings) == 1


def test_temp_store_is_removed_on_close() -> None:
    store = TierStore(**OPTS)
    path = store.path
    store.set("k", 1)
    assert os.path.isdir(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    store.close()
    assert not os.path.exists(path)


def test_every_call_after_close_raises_store_closed(store_path: str) -> None:
    store = open_store(store_path)
    store.set("k", 1)
    store.close()
    store.close()  # idempotent
    for call in (
        lambda: store.get("k"),
        lambda: store.set("k", 2),
        lambda: store.delete("k"),
        lambda: store.get_entry("k"),
        lambda: "k" in store,
        lambda: list(store.keys()),
    ):
        with pytest.raises(StoreClosed):
            call()


def test_sequence_keeps_increasing_across_reopen(store_path: str) -> None:
    with open_store(store_path) as store:
        store.set("a", 1)
        first = store._read("a")
    with open_store(store_path) as store:
        store.set("b", 1)
        second = store._read("b")
    assert first is not None and second is not None and second[SEQ] > first[SEQ]


def test_first_versioned_write_makes_unversioned_writes_read_versions(store_path: str) -> None:
    """Until a version exists no write reads tier 2; the first versioned write changes that, durably."""
    with open_store(store_path, memory_items=1) as store:
        for i in range(5):
            store.set(f"plain{i}", i)
        store.set("v", "first", version=4)
        store.set("filler", 0)  # v leaves tier 1: the next write must read its version from tier 2
        assert store.set("v", "unversioned")
        assert store.get_entry("v") == Entry("unversioned", 4, None, False, False)
    with open_store(store_path, memory_items=1) as store:
        assert store.set("v", "after reopen")
        assert not store.set("v", "older", version=4)
        assert store.get_entry("v") == Entry("after reopen", 4, None, False, False)
        store.delete("d", version=9)
    with open_store(store_path) as store:
        assert not store.set("d", "older", version=9)


# -- values tier 2 could not give back; oversized records on disk ---------------------------


def _nested(depth: int, leaf: Any) -> Any:
    """``depth`` lists around ``leaf``."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        ({(1, 2): 1}, TypeError, "dict key"),
        ({"a": [{(): "x"}]}, TypeError, "dict key"),
        (_nested(1023, []), ValueError, "nest"),
        (_nested(1100, 0), ValueError, "nest"),
    ],
    ids=["tuple-key", "nested-tuple-key", "1024-deep-empty", "1100-deep"],
)
def test_set_refuses_a_value_tier_2_could_not_give_back(
    store_path: str, value: Any, error: type[Exception], words: str
) -> None:
    with open_store(store_path) as store:
        store.set("k", "old")
        with pytest.raises(error, match=words):
            store.set("k", value)
        assert store.get("k") == "old"
        assert store.stats()["sets"] == 1
    with open_store(store_path) as store:
        assert store.get("k") == "old"
        assert store.stats()["corrupt_records"] == 0


@pytest.mark.parametrize(
    ("value", "error"),
    [(object(), TypeError), ({(1, 2): 1}, TypeError), (_nested(1100, 0), ValueError), (b"x" * 2000, ValueError)],
    ids=["unencodable", "tuple-key", "too-deep", "over-max_value_bytes"],
)
@pytest.mark.parametrize(
    "refused",
    [
        lambda s, v: s.set("k", v, version=3),
        lambda s, v: s.set("k", v, version=5),
        lambda s, v: s.set("d", v, version=5),
    ],
    ids=["older-version", "same-version", "under-a-tombstone"],
)
def test_a_value_that_cannot_be_stored_raises_even_from_a_set_the_version_rule_refuses(
    store_path: str, value: Any, error: type[Exception], refused: Any
) -> None:
    with open_store(store_path, max_value_bytes=1000) as store:
        store.set("k", "kept", version=5)
        store.delete("d", version=6)
        with pytest.raises(error):
            refused(store, value)
        assert store.get_entry("k") == Entry("kept", 5, None, False, False)
        assert store.set("d", "newer", version=7)  # the tombstone kept its version
        assert store.stats()["sets_rejected"] == 0


def test_second_read_admission_promotes_a_key_on_its_second_read_from_tier_2(store_path: str) -> None:
    with open_store(store_path, memory_items=2) as store:  # memory_admission="second_read" is the default
        for key in ("a", "b", "c", "d"):
            store.set(key, key)  # a and b leave tier 1
        assert [store.get("a"), store.get("a"), store.get("a")] == ["a", "a", "a"]
        stats = store.stats()
        assert (stats["hits_disk"], stats["hits_memory"]) == (2, 1)  # read twice from tier 2, then held
        store.get("b")  # one read of b: it does not push a or d out
        assert store._memory.get("a") is not None and store._memory.get("b") is None


def test_set_keeps_values_at_the_nesting_limit(store_path: str) -> None:
    deepest = _nested(1022, [])  # 1023 containers: the envelope takes the 1024th level
    with open_store(store_path) as store:
        assert store.set("k", deepest) is True
        assert msgpack.packb(store.get("k")) == msgpack.packb(deepest)  # == would hit Python's recursion limit
        assert store.set("m", {1: "int", None: "none", 1.5: "float", b"b": "bytes"}) is True
    with open_store(store_path) as store:
        assert msgpack.packb(store.get("k")) == msgpack.packb(deepest)
        assert store.get("m") == {1: "int", None: "none", 1.5: "float", b"b": "bytes"}


def test_a_record_over_max_value_bytes_on_disk_reads_as_a_counted_miss(store_path: str) -> None:
    with open_store(store_path) as store:
        store.set("big", "x" * 5000)
        store.set("small", "y")
    with open_store(store_path, max_value_bytes=1000) as store:
        assert store.get("big", "dflt") == "dflt"
        assert store.get_entry("big") is None
        assert store.stats()["corrupt_records"] == 2
        assert dict(store.items()) == {"small": "y"}
        assert store.get("small") == "y"


def test_a_record_over_max_value_bytes_keeps_its_version_against_older_writes(store_path: str) -> None:
    """Reopened with a smaller limit, a longer record is a miss to reads, but the version rule still sees it."""
    big = "x" * 5000
    with open_store(store_path) as store:
        for key in ("a", "b", "c", "d"):
            store.set(key, big, version=10)
    with open_store(store_path, max_value_bytes=1000) as store:
        assert store.get("a", "miss") == "miss"
        assert store.set("a", "older", version=5) is False
        assert store.set("a", "same", version=10) is False
        assert store.set_many({"b": "unversioned"}) == 1  # keeps the stored version 10
        assert store.set("b", "older", version=9) is False
        assert store.delete("c") is True  # a tombstone at version 10
        assert store.set("c", "older", version=9) is False
        assert store.add("d", "added") is False  # a live entry, though too long to read here
        assert store.set("d", "newer", version=11) is True
        assert store.get("d") == "newer"
        assert store.stats()["sets_rejected"] == 5
    with open_store(store_path) as store:
        assert store.get("a") == big and store.get_entry("a").version == 10  # type: ignore[union-attr]
        assert store.get("b") == "unversioned" and store.get_entry("b").version == 10  # type: ignore[union-attr]
        assert store.get("c", "gone") == "gone"


def test_calls_needing_a_value_too_long_for_this_open_find_none_and_change_nothing(store_path: str) -> None:
    big = {"blob": "x" * 5000}
    with open_store(store_path) as store:
        store.set("k", big, version=3, ttl=3600)
        expires_at = store.get_entry("k").expires_at  # type: ignore[union-attr]
    seen: list[object] = []

    def update(value: object) -> str:
        seen.append(value)
        return "other"

    with open_store(store_path, max_value_bytes=1000) as store:
        assert store.pop("k", "dflt") == "dflt"
        with pytest.raises(KeyError):
            store.pop("k")
        assert store.touch("k", ttl=60) is False
        assert store.replace_value("k", "other") is False
        assert store.update_value("k", update) is False
    assert seen == []  # the update never saw a value it could not be given
    with open_store(store_path) as store:
        entry = store.get_entry("k")
        assert entry is not None and entry.value == big and entry.version == 3 and entry.expires_at == expires_at


def test_shared_mode_without_redis_py_says_which_extra_to_install(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['redis'] = None  # as if redis-py were not installed\n"
        "from tierstore import TierStore\n"
        "try:\n"
        f"    TierStore({str(tmp_path / 's')!r}, shared='redis://localhost:1/0')\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
        f"with TierStore({str(tmp_path / 's')!r}) as store:  # the failed open released the directory\n"
        "    print('reopened', store.set('k', 1))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ImportError: shared= needs redis-py: pip install 'tierstore[redis]'" in done.stdout
    assert "reopened True" in done.stdout


class PlainPathLike(os.PathLike[str]):
    """An ``os.PathLike`` whose ``str()`` is not its path (unlike ``pathlib.Path``)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def __fspath__(self) -> str:
        return self._path


def test_any_path_like_names_the_directory_it_stands_for(tmp_path: Path) -> None:
    work, persist = tmp_path / "w", tmp_path / "p"
    with TierStore(PlainPathLike(str(work)), persist_path=PlainPathLike(str(persist))) as store:
        assert store.path == str(work)
        store.set("k", 1)
        with pytest.raises(StoreLocked):
            TierStore(PlainPathLike(str(work)))  # the same directory: refused, not a directory of its own
    assert sorted(os.listdir(tmp_path)) == ["p", "w"]
    with TierStore(work) as store:
        assert store.get("k") == 1
