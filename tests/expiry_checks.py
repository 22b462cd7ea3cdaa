"""Checks of the expiry index shared by its tests: every indexed entry, and a sweep against the full-scan rule."""

from __future__ import annotations

from typing import Any

from tierstore import TierStore
from tierstore._plyvel import plyvel
from tierstore.codec import EXPIRES_AT, FLAGS, VERSION, is_tombstone, unpack_record
from tierstore.expiry import decode_index_record, encode_time
from tierstore.keyspace import META_EXPIRY_INDEX, NS_ENTRY, NS_EXPIRY, meta_key

INDEX_META = meta_key(META_EXPIRY_INDEX)


def entries(store: TierStore) -> dict[bytes, bytes]:
    return dict(store._disk.scan(NS_ENTRY))


def index_records(store: TierStore) -> list[tuple[bytes, bytes]]:
    return list(store._disk.scan(NS_EXPIRY))


def assert_indexed(store: TierStore) -> None:
    """Every entry with an expiry has an index record naming it with its ``expires_at``."""
    index = {(disk_key, expires) for ikey, expires in index_records(store) for disk_key in [ikey[9:]]}
    for disk_key, data in entries(store).items():
        expires_at = unpack_record(data)[EXPIRES_AT]
        if expires_at is not None:
            assert (disk_key, encode_time(expires_at)) in index, f"{disk_key!r} has no index record"


def assert_nothing_due(store: TierStore, now: float) -> None:
    """After a sweep at ``now``, no index record is due: each was settled, moved or replaced."""
    for ikey, expires in index_records(store):
        assert decode_index_record(ikey, expires).due > now, ikey


def purge_at(data: bytes, stale_ttl: float) -> float | None:
    """When the full-scan sweep (before the index) purged a record."""
    record = unpack_record(data)
    if record[EXPIRES_AT] is None:
        return None
    return record[EXPIRES_AT] if record[FLAGS] else record[EXPIRES_AT] + stale_ttl


def checked_sweep(store: TierStore, now: float, stale_ttl: float, tombstone_ttl: float) -> dict[str, int]:
    """Sweep, and check the result against the rule the full scan applied to every entry."""
    before = entries(store)
    counts = store.sweep()
    after = entries(store)
    assert set(after) <= set(before)
    expected = {"expired_purged": 0, "swept_tombstones": 0}
    for disk_key, data in before.items():
        due = purge_at(data, stale_ttl)
        if due is None or due > now:
            assert after.get(disk_key) == data, f"{disk_key!r} changed though not due"
            continue
        record = unpack_record(data)
        expected["swept_tombstones" if is_tombstone(record) else "expired_purged"] += 1
        if is_tombstone(record) or record[VERSION] == 0:
            assert disk_key not in after, f"{disk_key!r} is due and still there"
        else:
            assert_tombstone(after.get(disk_key), record[VERSION], now + tombstone_ttl)
    assert {name: counts[name] for name in expected} == expected
    assert counts["corrupt_purged"] == 0
    assert_indexed(store)
    assert_nothing_due(store, now)
    return counts


def assert_tombstone(data: Any, version: int, expires_at: float) -> None:
    assert data is not None, "a versioned entry vanished instead of becoming a tombstone"
    tombstone = unpack_record(data)
    assert is_tombstone(tombstone) and tombstone[VERSION] == version and tombstone[EXPIRES_AT] == expires_at


def drop_index(path: str) -> None:
    """Make a closed store look written before the index existed: no index records, no meta record."""
    db = plyvel.DB(path)
    try:
        for key in db.iterator(prefix=NS_EXPIRY, include_value=False):
            db.delete(key)
        db.delete(INDEX_META)
    finally:
        db.close()
