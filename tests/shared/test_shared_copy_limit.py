"""A value at ``max_value_bytes``: its local copy (the writer's envelope plus a write stamp) reads back."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest
import redis

from tests.shared.support import wait_for
from tierstore import TierStore, codec
from tierstore.keyspace import NS_ENTRY
from tierstore.shared.client import Names

LIMIT = 4096


def largest_value(store: TierStore) -> str:
    """A str whose own encoding is exactly ``LIMIT`` bytes: the largest value ``set`` takes."""
    value = "x" * (LIMIT - 3)  # str16: a 3-byte header
    assert len(msgpack.packb(value)) == LIMIT
    return value


def test_a_copy_at_the_limit_reads_back_from_tier_2(stores: Callable[..., TierStore]) -> None:
    writer = stores(memory_items=1, max_value_bytes=LIMIT)
    reader = stores(memory_items=1, max_value_bytes=LIMIT)
    value = largest_value(writer)
    with pytest.raises(ValueError, match=f"{LIMIT + 1} bytes encoded"):
        writer.set("big", value + "x")  # one byte over, in Redis as locally: refused, nothing written
    assert writer.set("big", value, ttl=3600.0)  # an expiry: the widest envelope fields
    for store in (writer, reader):
        assert store.get("big") == value  # the reader copies it from Redis
        store.set("other", 1)  # tier 1 (one item) forgets "big"
        assert store.get("big") == value  # from the local copy in tier 2
        assert store.stats()["corrupt_records"] == 0


def test_under_an_overlong_epoch_id_copies_are_not_kept_and_reads_stay_right(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    raw.set(Names("tierstore").epoch, b"e" * 5000)  # hostile: a stamp longer than any copy may be
    writer = stores(memory_items=1, max_value_bytes=LIMIT)
    reader = stores(memory_items=1, max_value_bytes=LIMIT)
    assert writer.set("k", "v")
    for store in (writer, reader):
        for _ in range(2):
            assert store.get("k") == "v"
            store.set("other", 1)  # tier 1 (one item) forgets "k"
        assert store._disk.get(NS_ENTRY + codec.encode_key("k")) is None  # no copy kept in tier 2
        assert store.stats()["corrupt_records"] == 0
    assert writer.set("k", "w")
    wait_for(lambda: reader.get("k") == "w")


def test_pop_of_an_entry_too_long_for_this_open_leaves_it_in_redis(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    """As the local ``pop``: no value to give back, so nothing changes (it used to be deleted, its value lost)."""
    writer = stores(max_value_bytes=LIMIT * 4)
    small = stores(max_value_bytes=LIMIT)
    big = "x" * (LIMIT * 2)
    writer.set("big", big, version=5)
    writer.set("fits", "v", version=5)
    assert small.pop("big", "none") == "none"
    assert small.pop("fits", "none") == "v"  # the limit spares only what it cannot read
    assert Names("tierstore").entry(codec.encode_key("big")) in raw.keys("*")
    entry = writer.get_entry("big")
    assert entry is not None and (entry.value, entry.version) == (big, 5)
    assert not small.set("big", "older", version=4)  # its version still holds
    raw.hset(Names("tierstore").entry(codec.encode_key("bad")), mapping={"d": b"\xc1" * (LIMIT * 2), "v": b"1"})
    assert small.pop("bad", "none") == "none"  # a damaged one is removed, as before
    assert Names("tierstore").entry(codec.encode_key("bad")) not in raw.keys("*")


def test_delete_of_an_entry_too_long_for_this_open_says_it_was_live(stores: Callable[..., TierStore]) -> None:
    """As the local delete (and delete_many) says: its header is read, its value not; it answered False."""
    writer = stores(max_value_bytes=LIMIT * 4)
    small = stores(max_value_bytes=LIMIT)
    big = "x" * (LIMIT * 2)
    writer.set_many({"big": big, "also": big})
    writer.set("gone", big, ttl=0.001)
    wait_for(lambda: writer.get("gone") is None)
    assert small.delete("big") is True
    assert small.delete_many(["also"]) == 1
    assert small.delete("gone") is False  # expired: not live, whatever its length
    wait_for(lambda: writer.get("big") is None and writer.get("also") is None)  # the writer hears of both
