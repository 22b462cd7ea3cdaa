"""The expiry index (tierstore/expiry.py) and the sweep that reads it (tierstore/sweep.py).

Real LevelDB directories throughout; the clock is a ``FakeClock``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import FakeClock
from tests.expiry_checks import (
    INDEX_META,
    assert_indexed,
    assert_tombstone,
    checked_sweep,
    drop_index,
    entries,
    index_records,
)
from tierstore import ABSENT, TierStore
from tierstore._plyvel import plyvel
from tierstore.codec import encode_key
from tierstore.errors import CorruptRecord
from tierstore.expiry import (
    IndexRecord,
    decode_index_record,
    decode_time,
    encode_time,
    envelope_expiry,
    index_op,
)
from tierstore.keyspace import NS_ENTRY, NS_EXPIRY

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}
TIMES = st.floats(allow_nan=False)


def open_store(path: str, clock: FakeClock, **settings: Any) -> TierStore:
    return TierStore(path, clock=clock, **{**OPTS, **settings})


def disk_key(key: Any) -> bytes:
    return NS_ENTRY + encode_key(key)


# -- the record layout ---------------------------------------------------------------------


@given(TIMES, TIMES)
def test_encoded_times_sort_as_the_times(a: float, b: float) -> None:
    if a < b:
        assert encode_time(a) < encode_time(b)
    elif a == b:  # 0.0 == -0.0 too
        assert encode_time(a) == encode_time(b)
    assert len(encode_time(a)) == 8
    assert decode_time(encode_time(a)) == a


def test_infinities_and_negative_zero() -> None:
    assert encode_time(-0.0) == encode_time(0.0)
    assert math.copysign(1.0, decode_time(encode_time(-0.0))) == 1.0
    assert encode_time(-math.inf) < encode_time(-1e308) < encode_time(1e308) < encode_time(math.inf)


def test_index_op_and_decode_invert_each_other() -> None:
    key, value = index_op(disk_key("k"), 10.0, due=15.0)
    assert decode_index_record(key, value) == IndexRecord(15.0, disk_key("k"), 10.0)
    key, value = index_op(disk_key(b"k"), -3.5)
    assert decode_index_record(key, value) == IndexRecord(-3.5, disk_key(b"k"), -3.5)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (NS_EXPIRY + bytes(3), encode_time(1.0), "does not name an entry"),
        (NS_EXPIRY + encode_time(1.0) + b"cfoo", encode_time(1.0), "does not name an entry"),
        (NS_EXPIRY + encode_time(1.0) + b"eqq", encode_time(1.0), "unknown key tag"),
        (NS_EXPIRY + encode_time(1.0) + b"esfoo", b"\x00" * 7, "not 8 bytes"),
        (NS_EXPIRY + encode_time(1.0) + b"esfoo", encode_time(2.0), "due before its entry expires"),
        (NS_EXPIRY + b"\xff" * 8 + b"esfoo", encode_time(1.0), "NaN"),
    ],
)
def test_decode_index_record_refuses_damage(key: bytes, value: bytes, reason: str) -> None:
    with pytest.raises(CorruptRecord, match=reason):
        decode_index_record(key, value)


def test_envelope_expiry_reads_the_header_only() -> None:
    assert envelope_expiry(msgpack.packb([1, 0, 12.5, 0, {"big": "x" * 100}, 1.0, None, 7, 0.0])) == 12.5
    assert envelope_expiry(msgpack.packb([1, 0, 12, 0, None, 1.0, None, 7, 0.0])) == 12.0
    assert envelope_expiry(msgpack.packb([1, 0, None, 0, None, 1.0, None, 7, 0.0])) is None
    assert envelope_expiry(msgpack.packb([1, 0, "12", 0, None, 1.0, None, 7, 0.0])) is None
    assert envelope_expiry(msgpack.packb([1, 0, 12.5])) is None  # not an envelope
    assert envelope_expiry(b"\xc1garbage") is None


# -- writes -------------------------------------------------------------------------------


def test_only_records_with_an_expiry_are_indexed(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, negative_ttl=7, tombstone_ttl=100) as store:
        store.set("plain", 1)
        store.set("ttl", 2, ttl=10)
        store.set("absent", ABSENT)
        store.set("v", 3, version=2)
        store.delete("v")  # a tombstone at version 2
        store.delete("plain")  # version 0: removed outright
        now = clock.now
        indexed = {decode_index_record(key, value) for key, value in index_records(store)}
        assert indexed == {
            IndexRecord(now + 10, disk_key("ttl"), now + 10),
            IndexRecord(now + 7, disk_key("absent"), now + 7),
            IndexRecord(now + 100, disk_key("v"), now + 100),
        }
        assert_indexed(store)


def test_capacity_writes_carry_the_index_record_too(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, disk_capacity_bytes=10**9) as store:
        store.set("k", 1, ttl=10)
        assert [decode_index_record(*item).disk_key for item in index_records(store)] == [disk_key("k")]


# -- sweeping -----------------------------------------------------------------------------


def test_a_rewritten_keys_old_index_record_never_deletes_the_new_entry(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("k", "old", ttl=10)
        store.set("k", "new", ttl=100)
        assert len(index_records(store)) == 2  # the old record stays until a sweep reaches it
        clock.advance(20)
        counts = checked_sweep(store, clock.now, 0.0, 86_400.0)
        assert (counts["scanned"], counts["expired_purged"]) == (1, 0)
        assert store.get("k") == "new"
        assert [decode_index_record(*item).expires_at for item in index_records(store)] == [clock.now - 20 + 100]


def test_a_rewrite_from_ttl_to_none_and_back(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("k", 1, ttl=5)
        store.set("k", 2, ttl=None)
        clock.advance(10)
        assert checked_sweep(store, clock.now, 0.0, 86_400.0)["expired_purged"] == 0
        assert store.get("k") == 2 and index_records(store) == []
        store.set("k", 3, ttl=5)
        clock.advance(4)
        assert checked_sweep(store, clock.now, 0.0, 86_400.0)["scanned"] == 0
        assert store.get("k") == 3
        clock.advance(2)
        assert checked_sweep(store, clock.now, 0.0, 86_400.0)["expired_purged"] == 1
        assert entries(store) == {} and index_records(store) == []


def test_an_entry_in_its_stale_window_is_read_once_more_not_by_every_sweep(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, stale_ttl=5) as store:
        store.set("k", 1, ttl=10)
        clock.advance(12)
        counts = checked_sweep(store, clock.now, 5.0, 86_400.0)
        assert (counts["scanned"], counts["expired_purged"]) == (1, 0)
        entry = store.get_entry("k")
        assert entry is not None and entry.stale
        [(key, value)] = index_records(store)
        assert decode_index_record(key, value).due == clock.now - 12 + 15  # moved to when it may go
        clock.advance(2)
        assert checked_sweep(store, clock.now, 5.0, 86_400.0)["scanned"] == 0
        clock.advance(1)
        assert checked_sweep(store, clock.now, 5.0, 86_400.0)["expired_purged"] == 1


def test_a_larger_stale_ttl_after_reopening_moves_the_record_again(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, stale_ttl=5) as store:
        store.set("k", 1, ttl=10)
        clock.advance(12)
        store.sweep()  # moved to 15
    with open_store(store_path, clock, stale_ttl=50) as store:
        clock.advance(10)
        assert checked_sweep(store, clock.now, 50.0, 86_400.0)["expired_purged"] == 0
        clock.advance(40)
        assert checked_sweep(store, clock.now, 50.0, 86_400.0)["expired_purged"] == 1


def test_tombstone_conversion_keeps_the_version_rule(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, tombstone_ttl=50) as store:
        store.set("k", "v7", ttl=10, version=7)
        clock.advance(11)
        assert checked_sweep(store, clock.now, 0.0, 50.0)["expired_purged"] == 1
        assert_tombstone(store._disk.get(disk_key("k")), 7, clock.now + 50)
        assert store.set("k", "older", version=6) is False
        clock.advance(49)
        assert checked_sweep(store, clock.now, 0.0, 50.0)["scanned"] == 0
        clock.advance(1)
        assert checked_sweep(store, clock.now, 0.0, 50.0)["swept_tombstones"] == 1
        assert entries(store) == {} and index_records(store) == []


def test_a_delete_leaves_the_index_record_to_the_sweep(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("k", 1, ttl=10)
        store.delete("k")
        assert len(index_records(store)) == 1
        clock.advance(10)
        counts = checked_sweep(store, clock.now, 0.0, 86_400.0)
        assert (counts["scanned"], counts["expired_purged"]) == (1, 0)
        assert index_records(store) == []


def test_a_corrupt_due_entry_is_purged_and_an_unindexed_one_reads_as_a_miss(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("due", 1, ttl=10)
        store.set("plain", 2)
        store._disk.put(disk_key("due"), b"\xc1 damaged")
        store._disk.put(disk_key("plain"), b"\xc1 damaged")
        store._memory.clear()
        clock.advance(10)
        counts = store.sweep()
        assert (counts["scanned"], counts["corrupt_purged"]) == (1, 1)
        assert store._disk.get(disk_key("due")) is None
        assert store.get("plain") is None and store.stats()["corrupt_records"] == 1
        assert store._disk.get(disk_key("plain")) is not None  # left for `tierstore verify` to report


def test_eviction_removes_the_index_record_of_what_it_evicts(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, disk_capacity_bytes=8_000, tombstone_ttl=50) as store:
        store.set("versioned", "v" * 100, ttl=1000, version=3)
        for i in range(200):
            store.set(f"k{i:03}", "x" * 40, ttl=1000)
        store.sweep()
        store.drain(10)
        assert store.stats()["evictions_disk"] > 0
        assert_indexed(store)
        assert len(index_records(store)) == len(entries(store))  # nothing left behind
        assert_tombstone(store._disk.get(disk_key("versioned")), 3, clock.now + 50)


def test_a_sweep_that_removes_nothing_reads_no_entry_at_scale(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, memory_items=0) as store:
        for i in range(200_000):
            store.set(f"live:{i:06}", i)
        for i in range(100):
            store.set(f"due:{i:03}", i, ttl=1)
            store.set(f"later:{i:03}", i, ttl=10**6)
        clock.advance(2)
        first = store.sweep()
        assert (first["scanned"], first["expired_purged"]) == (100, 100)
        assert store.sweep()["scanned"] == 0
        assert store.get("live:199999") == 199_999


# -- stores without the index, checkpoints and restores ---------------------------------------


def test_a_store_from_before_the_index_is_migrated_at_open(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, tombstone_ttl=50) as store:
        store.set("plain", 1)
        store.set("ttl", 2, ttl=10)
        store.set("versioned", 3, ttl=20, version=4)
        store.set("absent", ABSENT, ttl=5)
        store.delete("gone", version=2)
    drop_index(store_path)
    with open_store(store_path, clock, tombstone_ttl=50) as store:
        assert len(index_records(store)) == 4
        assert_indexed(store)
        assert store._disk.get_meta(b"expiry_index") is True
        clock.advance(30)
        counts = checked_sweep(store, clock.now, 0.0, 50.0)
        assert counts["expired_purged"] == 3 and store.get("plain") == 1


def test_a_damaged_index_meta_record_rebuilds_the_index(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("ttl", 2, ttl=10)
    db = plyvel.DB(store_path)
    try:
        for key in db.iterator(prefix=NS_EXPIRY, include_value=False):
            db.delete(key)
        db.put(INDEX_META, b"\xc1")
    finally:
        db.close()
    with open_store(store_path, clock) as store:
        assert_indexed(store)
        clock.advance(10)
        assert checked_sweep(store, clock.now, 0.0, 86_400.0)["expired_purged"] == 1


def test_a_restore_rebuilds_the_index_and_sweeps_correctly(tmp_path: Path, clock: FakeClock) -> None:
    working, persist = str(tmp_path / "work"), str(tmp_path / "persist")
    with open_store(working, clock, persist_path=persist) as store:
        for i in range(50):
            store.set(f"k{i}", i, ttl=10 + i, version=i % 2 or None)
            store.set(f"plain{i}", i)
        store.checkpoint()
        store.set("late", 1, ttl=5)  # copied by the final checkpoint at close
    db = plyvel.DB(persist)
    try:
        assert db.get(INDEX_META) is None  # checkpoints never vouch for the index
        assert any(True for _ in db.iterator(prefix=NS_EXPIRY))
    finally:
        db.close()
    shutil.rmtree(working)
    with open_store(working, clock, persist_path=persist) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert_indexed(store)
        clock.advance(35)
        counts = checked_sweep(store, clock.now, 0.0, 86_400.0)
        assert counts["expired_purged"] == 27  # k0..k25 (the odd ones now tombstones) and "late"
        assert store.get("k30") == 30 and store.get("plain0") == 0


def test_a_checkpoint_holding_entries_without_index_records_restores_swept(tmp_path: Path, clock: FakeClock) -> None:
    """As a checkpoint killed half way could: the restore's rebuild indexes every entry."""
    working, persist = str(tmp_path / "work"), str(tmp_path / "persist")
    with open_store(working, clock, persist_path=persist) as store:
        for i in range(20):
            store.set(f"k{i}", i, ttl=10)
    drop_index(persist)
    shutil.rmtree(working)
    with open_store(working, clock, persist_path=persist) as store:
        clock.advance(10)
        assert checked_sweep(store, clock.now, 0.0, 86_400.0)["expired_purged"] == 20


def test_a_clock_returning_nan_sweeps_nothing(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("k", 1, ttl=10)
        clock.now = math.nan
        with pytest.raises(ValueError, match="NaN"):
            store.sweep()
        clock.now = 0.0
        assert store.sweep()["scanned"] == 0 and len(entries(store)) == 1


def test_a_migration_cut_short_runs_again_without_duplicates(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        for i in range(30):
            store.set(f"k{i}", i, ttl=10 + i)
    db = plyvel.DB(store_path)
    try:
        db.delete(INDEX_META)  # as if the open building the index died before its last write
        for key in list(db.iterator(prefix=NS_EXPIRY, include_value=False))[::2]:
            db.delete(key)
    finally:
        db.close()
    with open_store(store_path, clock) as store:
        assert len(index_records(store)) == 30
        clock.advance(25)
        assert checked_sweep(store, clock.now, 0.0, 86_400.0)["expired_purged"] == 16


def test_an_index_record_left_by_a_crash_between_the_two_puts_is_dropped(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("rewritten", 1, ttl=100)
        store._disk.put(*index_op(disk_key("rewritten"), clock.now + 5))  # its rewrite never landed
        store._disk.put(*index_op(disk_key("never"), clock.now + 5))  # nor did this first write
        clock.advance(5)
        counts = checked_sweep(store, clock.now, 0.0, 86_400.0)
        assert (counts["scanned"], counts["expired_purged"]) == (2, 0)
        assert store.get("rewritten") == 1 and len(index_records(store)) == 1
