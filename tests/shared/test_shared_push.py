"""A write's message carries its record (envelopes up to ``PUSH_BYTES``): copies are replaced, not dropped.

Each test runs against a real redis-server with two stores (two listeners): A
writes, B holds (or does not hold) a copy of the key. A copy B holds becomes
the record Redis holds after the write, stamped at its ``seq``, in the tiers
that held it; a key B does not hold stays so; a longer envelope, a delete or a
damaged message drops the copy as before; a read in flight from before the
write never lands an older copy over the pushed one.
"""

from __future__ import annotations

import logging

import pytest
import redis

from tests.shared.support import entry_hash, wait_for
from tests.shared.test_shared_mirror_adversarial import (
    Stores,
    disk_key_of,
    drive,
    heard,
    messages_held_back,
    once,
    read_steps,
    stamp_held,
)
from tierstore import ABSENT, TierStore, codec
from tierstore.shared.client import Names
from tierstore.shared.scripts import PUSH_BYTES


def two_stores(stores: Stores, **options: object) -> tuple[TierStore, TierStore]:
    """A writer and B, whose listener has heard A's first write of ``k`` ("v1") and which read it."""
    a, b = stores(**options), stores(**options)
    a.set("k", "v1")
    wait_for(heard(b, 1))
    assert b.get("k") == "v1" and b.stats()["hits_shared"] == 1  # B's copy, from Redis
    return a, b


def redis_stamp(raw: redis.Redis, key: str) -> tuple[int, bytes]:
    found = entry_hash(raw, key)
    return int(found[b"s"]), found[b"e"]


def test_a_copy_in_tier_1_is_replaced_without_a_round_trip(stores: Stores, raw: redis.Redis) -> None:
    a, b = two_stores(stores)
    assert b.get("k") == "v1"  # a second read: promoted into tier 1 (second-read admission)
    assert b._memory.lookup("k") is not None
    a.set("k", {"v": 2})
    wait_for(heard(b, 2))
    assert b._memory.lookup("k") is not None  # replaced in tier 1, where it was
    assert b.get("k") == {"v": 2}
    assert b.stats()["hits_shared"] == 1  # no read of Redis since the first
    assert stamp_held(b, "k") == redis_stamp(raw, "k")


def test_a_copy_only_in_tier_2_is_replaced_there(stores: Stores, raw: redis.Redis) -> None:
    a, b = two_stores(stores)
    b._memory.discard("k", hash("k") % b._shared.mirror.stripe_count)  # type: ignore[union-attr]
    a.set("k", "v2")
    wait_for(heard(b, 2))
    assert b._memory.lookup("k") is None  # not promoted by the message
    assert stamp_held(b, "k") == redis_stamp(raw, "k")
    assert b.get("k") == "v2" and b.stats()["hits_shared"] == 1


def test_a_key_held_nowhere_stays_so(stores: Stores) -> None:
    a, b = stores(), stores()
    a.set("k", "v1")
    wait_for(heard(b, 1))
    assert b._disk.get(disk_key_of("k")) is None and b._memory.lookup("k") is None
    assert b.get("k") == "v1" and b.stats()["hits_shared"] == 1


def test_the_pushed_copy_carries_the_version_redis_decided(stores: Stores) -> None:
    a, b = two_stores(stores)
    assert a.set("k", "v7", version=7)
    assert a.set("k", "v8")  # unversioned: keeps version 7 (the envelope's slot is not the truth)
    wait_for(heard(b, 3))
    entry = b.get_entry("k")
    assert entry is not None and (entry.value, entry.version) == ("v8", 7)
    assert not b.set("k", "old", version=6) and b.set("k", "v9", version=8)
    assert b.stats()["hits_shared"] == 1


def test_an_envelope_longer_than_the_push_limit_drops_the_copy(stores: Stores) -> None:
    a, b = two_stores(stores)
    big = "x" * PUSH_BYTES
    a.set("k", big)
    wait_for(heard(b, 2))
    assert b._disk.get(disk_key_of("k")) is None and b._memory.lookup("k") is None
    assert b.get("k") == big and b.stats()["hits_shared"] == 2  # read from Redis again


def test_a_delete_elsewhere_still_drops_the_copy(stores: Stores) -> None:
    a, b = two_stores(stores)
    a.delete("k")
    wait_for(heard(b, 2))
    assert b._disk.get(disk_key_of("k")) is None and b._memory.lookup("k") is None
    assert b.get("k") is None


def test_an_add_over_a_negative_entry_elsewhere_is_pushed(stores: Stores) -> None:
    a, b = two_stores(stores)
    assert b.set("k", ABSENT)  # B's own copy: a negative entry, which add treats as absent
    wait_for(heard(a, 1))
    assert a.add("k", "added")
    wait_for(heard(b, 2))
    assert b.get("k") == "added" and b.stats()["hits_shared"] == 1


def test_a_fill_elsewhere_over_an_expired_copy_is_pushed(stores: Stores) -> None:
    a, b = two_stores(stores)
    b.set("k", "short", ttl=0.05)
    wait_for(heard(a, 1))
    wait_for(lambda: b.get("k") is None)  # expired (B's copy is still held)
    assert a.get_or_load("k", lambda: "loaded") == "loaded"
    wait_for(heard(b, 2))
    assert b._disk.get(disk_key_of("k")) is not None
    assert b.get("k") == "loaded" and b.stats()["hits_shared"] == 1


def test_a_read_in_flight_from_before_the_write_keeps_the_pushed_copy(stores: Stores, raw: redis.Redis) -> None:
    """B's read fetched v1 from Redis; another read of B lands a trusted copy of v1, A writes v2 and B's
    listener replaces that copy with v2 before the first read lands: the read answers what it read, and
    v2 stays (no later read goes back to v1)."""
    a, b = two_stores(stores)
    b._memory.discard("k", hash("k") % b._shared.mirror.stripe_count)  # type: ignore[union-attr]
    b._shared.mirror.resync(listening=True)  # type: ignore[union-attr]  # the copy is distrusted: a read asks Redis
    count = b.stats()["invalidations_received"]

    def write_elsewhere() -> None:
        assert b.get("k") == "v1"  # a second read asks Redis too: its trusted copy lands first
        a.set("k", "v2")
        wait_for(heard(b, count + 1))

    answered = drive(b, read_steps(b, "k"), once(write_elsewhere))
    assert answered[codec.VALUE] == "v1"
    assert stamp_held(b, "k") == redis_stamp(raw, "k")
    assert b.get("k") == "v2"


def test_a_newer_copy_held_is_kept_when_an_older_message_arrives(stores: Stores, raw: redis.Redis) -> None:
    """B has not heard A's write yet when B writes itself: the late message must not replace B's newer copy."""
    a, b = two_stores(stores)
    with messages_held_back(b):
        a.set("k", "from-a")
        b.set("k", "from-b")  # a later seq: B's own copy
    wait_for(heard(b, 2))
    assert b.get("k") == "from-b" and stamp_held(b, "k") == redis_stamp(raw, "k")


def test_a_damaged_pushed_envelope_drops_the_copy_and_is_logged(
    stores: Stores, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    _, b = two_stores(stores)
    names = Names("tierstore")
    seq = int(raw.get(names.seq) or 0) + 1
    raw.set(names.seq, seq)  # the message's seq follows the last one: no gap
    tagged = codec.encode_key("k")
    junk = b"\xc1not msgpack"
    epoch = raw.get(names.epoch)
    assert epoch
    with caplog.at_level(logging.WARNING, logger="tierstore"):
        message = b"%d:0+%d+%d:elsewhere:%s%s%s" % (seq, len(junk), len(epoch), tagged, junk, epoch)
        raw.publish(names.channel, message)
        wait_for(heard(b, 2))
    assert b._disk.get(disk_key_of("k")) is None and b._memory.lookup("k") is None
    assert "malformed envelope" in caplog.text and b.stats()["resyncs"] == 0
    assert b.get("k") == "v1"  # from Redis again


def test_a_pushed_record_of_another_data_set_drops_the_copy(stores: Stores, raw: redis.Redis) -> None:
    """A pushed record whose epoch id is not the data set B last read (one emptied since, or a newer
    one B has not heard of) is not copied: the key is dropped and read from Redis again."""
    _, b = two_stores(stores)
    names = Names("tierstore")
    seq = int(raw.get(names.seq) or 0) + 1
    raw.set(names.seq, seq)  # the message's seq follows the last one: no gap
    tagged = codec.encode_key("k")
    envelope = entry_hash(raw, "k")[b"d"]  # a well-formed record ("v1" at version 0)
    foreign = b"0123456789abcdef"
    assert raw.get(names.epoch) != foreign
    raw.publish(names.channel, b"%d:0+%d+%d:elsewhere:%s%s%s" % (seq, len(envelope), 16, tagged, envelope, foreign))
    wait_for(heard(b, 2))
    assert b._disk.get(disk_key_of("k")) is None and b._memory.lookup("k") is None
    assert b.stats()["resyncs"] == 0
    assert b.get("k") == "v1" and b.stats()["hits_shared"] == 2  # from Redis again


@pytest.mark.parametrize(
    "size", [b"0", b"-3", b"x", b"999999", b"3", b"3+0", b"3+x", b"3+-1", b"0+3", b"3+999999", b"+3+3", b"3+3+3"]
)
def test_a_pushed_length_that_does_not_fit_is_a_malformed_message(
    stores: Stores, raw: redis.Redis, size: bytes
) -> None:
    _, b = two_stores(stores)
    resyncs = b.stats()["resyncs"]
    names = Names("tierstore")
    seq = int(raw.get(names.seq) or 0) + 1
    raw.publish(names.channel, b"%d:0+%s:elsewhere:%s" % (seq, size, codec.encode_key("k")))
    wait_for(lambda: b.stats()["resyncs"] > resyncs)
    assert b.get("k") == "v1"
