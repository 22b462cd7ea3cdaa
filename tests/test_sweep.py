"""Sweeping expired records and old tombstones, and the disk capacity (tierstore/sweep.py)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FakeClock
from tierstore import ABSENT, TierStore
from tierstore._plyvel import plyvel
from tierstore.capacity import OrderRecord, decode_order_record, header_seq, order_key, parse_order_key
from tierstore.codec import EXPIRES_AT, SEQ, Key, encode_key, is_tombstone, unpack_record
from tierstore.disk import DiskTier
from tierstore.errors import CorruptRecord
from tierstore.expiry import index_op
from tierstore.keyspace import NS_ENTRY, NS_EXPIRY, NS_WRITE_ORDER
from tierstore.sweep import Sweeper

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


def open_store(path: str, clock: FakeClock | None = None, **settings: Any) -> TierStore:
    if clock is not None:
        settings["clock"] = clock
    return TierStore(path, **{**OPTS, **settings})


def raw(store: TierStore, key: Key) -> bytes | None:
    return store._disk.get(NS_ENTRY + encode_key(key))


def entry_bytes(store: TierStore) -> int:
    return sum(len(k) + len(v) for k, v in store._disk.scan(NS_ENTRY))


def test_sweep_purges_what_expired_past_its_stale_window(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, stale_ttl=5, negative_ttl=3, tombstone_ttl=100) as store:
        store.set("forever", 1, ttl=None)
        store.set("expired", 2, ttl=10)
        store.set("stale", 3, ttl=14)
        store.set("negative", ABSENT)
        store.delete("young-tombstone", version=1)
        clock.advance(16)  # "expired" is past 10 + 5, "stale" within 14 + 5
        counts = store.sweep()
        assert counts["expired_purged"] == 2  # "expired" and "negative"
        assert raw(store, "expired") is None and raw(store, "negative") is None
        assert store.get("forever") == 1
        entry = store.get_entry("stale")
        assert entry is not None and entry.stale and entry.value == 3
        assert raw(store, "young-tombstone") is not None
        clock.advance(100)
        counts = store.sweep()
        assert counts["swept_tombstones"] == 1
        assert raw(store, "young-tombstone") is None
        stats = store.stats()
        assert stats["expired_purged"] == 3 and stats["swept_tombstones"] == 1


def test_expired_versioned_entry_becomes_a_tombstone(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, tombstone_ttl=50) as store:
        store.set("k", "v7", ttl=10, version=7)
        store.get("k")  # in tier 1 too
        clock.advance(11)
        assert store.sweep()["expired_purged"] == 1
        data = raw(store, "k")
        assert data is not None and is_tombstone(unpack_record(data))
        assert store.set("k", "old", version=6) is False
        assert store.set("k", "new", version=8) is True
    with open_store(store_path, clock, tombstone_ttl=50) as store:
        assert store.get("k") == "new"


def test_sweep_never_loses_a_concurrent_write(tmp_path: Path, clock: FakeClock) -> None:
    disk = DiskTier(str(tmp_path / "d"))
    try:
        with open_store(str(tmp_path / "s"), clock) as store:
            store.set("k", "old", ttl=1)
            old = raw(store, "k")
            store.set("k", "newer", ttl=None)
            newer = raw(store, "k")
        assert old is not None and newer is not None
        disk_key = NS_ENTRY + encode_key("k")
        disk.write([index_op(disk_key, unpack_record(old)[EXPIRES_AT] or 0.0), (disk_key, old)])
        clock.advance(5)

        @contextmanager
        def racing_lock(key: Key) -> Any:
            # A writer got in between the index scan and the lock.
            disk.put(NS_ENTRY + encode_key(key), newer)
            yield

        sweeper = Sweeper(
            disk,
            clock=clock,
            stale_ttl=0,
            tombstone_ttl=10,
            lock_for=racing_lock,
            begin=lambda k: None,
            forget=lambda k: None,
        )
        counts = sweeper.sweep()
        assert (counts["scanned"], counts["expired_purged"]) == (1, 0)
        assert disk.get(disk_key) == newer
        assert list(disk.scan(NS_EXPIRY)) == []  # the index record of the old entry is gone
    finally:
        disk.close()


def test_capacity_evicts_least_recently_written_first(store_path: str) -> None:
    limit = 60_000
    with open_store(store_path, disk_capacity_bytes=limit) as store:
        store.incr("counter", 7)
        for i in range(1000):
            store.set(f"k{i:04}", "x" * 100)
        store.sweep()
        store.drain(10)  # writes past the limit also started an eviction in the background
        assert store.stats()["evictions_disk"] > 0
        assert entry_bytes(store) <= limit
        assert store._durability.capacity is not None and store._durability.capacity.total == entry_bytes(store)
        assert store.get("k0000") is None  # oldest gone, from tier 1 as well
        assert store.get("k0999") == "x" * 100  # the newest survive
        survivors = [i for i in range(1000) if store.get(f"k{i:04}") is not None]
        assert survivors == list(range(survivors[0], 1000))  # a suffix of the write order
        assert store.counter("counter") == 7


def test_rewritten_entry_counts_as_recent(store_path: str) -> None:
    with open_store(store_path, disk_capacity_bytes=30_000) as store:
        for i in range(400):
            store.set(f"k{i}", "x" * 100)
        store.set("k0", "rewritten")
        store.sweep()
        assert store.get("k0") == "rewritten"
        assert store.get("k1") is None
        order = [key for key, _ in store._disk.scan(NS_WRITE_ORDER)]
        assert len(order) == len(list(store._disk.scan(NS_ENTRY)))  # one order record per entry


def test_capacity_keeps_versions_as_tombstones(store_path: str) -> None:
    with open_store(store_path, disk_capacity_bytes=20_000) as store:
        store.set("versioned", "v" * 500, version=4)
        for i in range(300):
            store.set(f"k{i}", "x" * 100)
        store.sweep()
        assert store.get("versioned") is None
        assert store.set("versioned", "older", version=3) is False


def test_capacity_total_survives_reopen_and_is_rebuilt_after_a_session_without_it(store_path: str) -> None:
    with open_store(store_path, disk_capacity_bytes=10**9) as store:
        for i in range(100):
            store.set(f"k{i}", i)
        total = store._durability.capacity.total if store._durability.capacity else -1
    with open_store(store_path, disk_capacity_bytes=10**9) as store:
        assert store._durability.capacity is not None and store._durability.capacity.total == total
    with open_store(store_path) as store:  # no order records kept here
        for i in range(100, 200):
            store.set(f"k{i}", i)
        store.delete("k0")
    with open_store(store_path, disk_capacity_bytes=2_000) as store:
        assert store._durability.capacity is not None and store._durability.capacity.total == entry_bytes(store)
        store.sweep()
        assert entry_bytes(store) <= 2_000
        assert store.get("k199") == 199


def test_writes_past_capacity_evict_in_the_background(store_path: str) -> None:
    with open_store(store_path, disk_capacity_bytes=20_000) as store:
        for i in range(500):
            store.set(f"k{i}", "x" * 100)
        deadline = time.monotonic() + 10
        while entry_bytes(store) > 20_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert entry_bytes(store) <= 20_000
        assert store.get("k499") == "x" * 100


def test_background_sweeper(store_path: str, clock: FakeClock) -> None:
    with TierStore(store_path, clock=clock, sweep_interval=0.05, checkpoint_interval=None) as store:
        store.set("k", 1, ttl=1)
        clock.advance(2)
        deadline = time.monotonic() + 10
        while raw(store, "k") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert raw(store, "k") is None
        # the sweep's counts are added when its pass returns, just after the record is gone
        store.drain(10)
        assert store.stats()["expired_purged"] == 1


def test_sweep_with_concurrent_writers_keeps_every_write(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, disk_capacity_bytes=10**9) as store:
        for i in range(2000):
            store.set(f"k{i}", "old", ttl=1)
        clock.advance(2)
        done = threading.Event()

        def writer() -> None:
            for i in range(0, 2000, 3):
                store.set(f"k{i}", "new", ttl=None)
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        store.sweep()
        thread.join()
        store.sweep()
        for i in range(2000):
            assert store.get(f"k{i}") == ("new" if i % 3 == 0 else None)
        assert store._durability.capacity is not None and store._durability.capacity.total == entry_bytes(store)


def test_header_seq_reads_the_sequence_without_the_value(store_path: str) -> None:
    with open_store(store_path) as store:
        store.set("k", {"big": "y" * 1000})
        data = raw(store, "k")
        assert data is not None and header_seq(data) == unpack_record(data)[SEQ]
    assert header_seq(b"\x93\x01\x02\x03") is None
    assert header_seq(b"garbage") is None


def test_decode_order_record_reads_what_capacity_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    with open_store(path, disk_capacity_bytes=10**6) as store:
        store.set("a", "x" * 10)
    db = plyvel.DB(path)
    try:
        entry = db.get(NS_ENTRY + encode_key("a"))
        [(okey, data)] = list(db.iterator(prefix=NS_WRITE_ORDER))
    finally:
        db.close()
    assert entry is not None
    record = decode_order_record(okey, data)
    seq = header_seq(entry)
    assert seq is not None
    assert record == OrderRecord(seq, NS_ENTRY + encode_key("a"), len(record.disk_key) + len(entry))
    assert parse_order_key(okey) == (record.seq, record.disk_key)
    assert order_key(record.seq, record.disk_key) == okey


@pytest.mark.parametrize(
    ("okey", "data", "reason"),
    [
        (NS_WRITE_ORDER + bytes(3), bytes(8), "does not name an entry"),
        (NS_WRITE_ORDER + bytes(8) + b"cfoo", bytes(8), "does not name an entry"),
        (NS_WRITE_ORDER + bytes(8) + b"eqq", bytes(8), "unknown key tag"),
        (NS_WRITE_ORDER + bytes(8) + b"esfoo", bytes(7), "size is not 8 bytes"),
    ],
)
def test_decode_order_record_refuses_damage(okey: bytes, data: bytes, reason: str) -> None:
    with pytest.raises(CorruptRecord, match=reason):
        decode_order_record(okey, data)
