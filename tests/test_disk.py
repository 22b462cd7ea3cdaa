"""Tier 2: schema record, locking, the gate and chunked scans."""

from __future__ import annotations

import gc
import os
import stat
import threading
from pathlib import Path

import msgpack
import pytest

from tierstore._plyvel import plyvel
from tierstore.disk import DiskTier
from tierstore.errors import CorruptRecord, SchemaTooNew, StoreClosed, StoreLocked, TierStoreError
from tierstore.keyspace import (
    META_OPEN,
    META_SCHEMA,
    NAMESPACES,
    NS_ENTRY,
    NS_META,
    SCHEMA_VERSION,
    decode_meta,
    decode_schema,
    meta_key,
    prefix_end,
)


def test_directory_is_created_private(tmp_path: Path) -> None:
    disk = DiskTier(str(tmp_path / "new"))
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    finally:
        disk.close()


def test_second_open_in_process_is_store_locked(tmp_path: Path) -> None:
    disk = DiskTier(str(tmp_path / "d"))
    try:
        with pytest.raises(StoreLocked, match=str(tmp_path / "d")):
            DiskTier(str(tmp_path / "d"))
    finally:
        disk.close()


def test_newer_schema_refuses_to_open(tmp_path: Path) -> None:
    path = str(tmp_path / "d")
    DiskTier(path).close()
    db = plyvel.DB(path)
    db.put(NS_META + b"schema", msgpack.packb(99))
    db.close()
    with pytest.raises(SchemaTooNew, match="newer tierstore"):
        DiskTier(path)


def test_foreign_leveldb_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "d")
    db = plyvel.DB(path, create_if_missing=True)
    db.put(b"someone else's", b"data")
    db.close()
    with pytest.raises(TierStoreError, match="not a tierstore"):
        DiskTier(path)
    db = plyvel.DB(path)
    assert db.get(b"someone else's") == b"data"  # untouched
    db.close()


def test_clean_flag_follows_close(tmp_path: Path) -> None:
    path = str(tmp_path / "d")
    disk = DiskTier(path)
    assert disk.was_clean
    disk.close()
    disk = DiskTier(path)
    assert disk.was_clean
    # Simulate a crash: release the LevelDB handle without the clean close.
    disk._db.close()
    disk = DiskTier(path)
    assert not disk.was_clean
    disk.close()


def test_scan_crosses_chunks_in_both_directions(tmp_path: Path) -> None:
    disk = DiskTier(str(tmp_path / "d"))
    keys = [NS_ENTRY + b"k%05d" % i for i in range(1300)]
    disk.write((k, b"v") for k in keys)
    disk.put(b"f-other", b"v")
    try:
        assert [k for k, _ in disk.scan(NS_ENTRY)] == keys
        assert [k for k, _ in disk.scan(NS_ENTRY, reverse=True)] == keys[::-1]
        assert [k for k, _ in disk.scan(NS_ENTRY, start=keys[600])] == keys[600:]
    finally:
        disk.close()


def test_scan_reads_one_snapshot(tmp_path: Path) -> None:
    disk = DiskTier(str(tmp_path / "d"))
    disk.write((NS_ENTRY + b"k%05d" % i, b"old") for i in range(1200))
    scan = disk.scan(NS_ENTRY)
    first = next(scan)
    disk.write((NS_ENTRY + b"k%05d" % i, b"new") for i in range(1200))
    rest = list(scan)
    assert first[1] == b"old" and all(v == b"old" for _, v in rest) and len(rest) == 1199
    disk.close()


def test_calls_after_close_raise_store_closed(tmp_path: Path) -> None:
    disk = DiskTier(str(tmp_path / "d"))
    disk.close()
    with pytest.raises(StoreClosed):
        disk.get(b"x")
    with pytest.raises(StoreClosed):
        disk.put(b"x", b"y")
    with pytest.raises(StoreClosed):
        list(disk.scan(NS_ENTRY))


def _plyvel_handles() -> list[object]:
    return [obj for obj in gc.get_objects() if type(obj) is plyvel.DB]


def test_close_frees_the_plyvel_handle_at_once(tmp_path: Path) -> None:
    """A closed handle left for the interpreter's last collection fails in plyvel's finalizer at exit."""
    before = len(_plyvel_handles())
    disk = DiskTier(str(tmp_path / "d"))
    read = disk.decoding_getter(lambda data, limit: data, 100)  # a closure binding the handle's get
    disk.put(b"k", b"v")
    assert read(b"k") == b"v" and len(_plyvel_handles()) == before + 1
    cycle: list[object] = [disk, read]
    cycle.append(cycle)  # only the collector could free what this holds
    disk.close()
    assert len(_plyvel_handles()) == before  # freed by the close itself, no collection needed
    with pytest.raises(StoreClosed):
        read(b"k")
    with pytest.raises(StoreClosed):
        disk.put(b"k", b"w")


def test_close_waits_for_a_scan_chunk_then_the_scan_stops(tmp_path: Path) -> None:
    disk = DiskTier(str(tmp_path / "d"))
    disk.write((NS_ENTRY + b"k%05d" % i, b"v") for i in range(2000))
    scan = disk.scan(NS_ENTRY)
    next(scan)
    closer = threading.Thread(target=disk.close)
    closer.start()
    closer.join(5)
    assert not closer.is_alive()  # an abandoned scan does not hold close() up
    with pytest.raises(StoreClosed):
        list(scan)


def test_prefix_end() -> None:
    assert prefix_end(b"e") == b"f"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") is None


def test_meta_names_and_schema_decoder(tmp_path: Path) -> None:
    path = str(tmp_path / "d")
    disk = DiskTier(path)
    assert disk.get(meta_key(META_OPEN)) is not None  # a session is open
    disk.put_meta(b"thing", {1: "int key"})
    disk.close()
    db = plyvel.DB(path)
    try:
        assert decode_schema(db.get(meta_key(META_SCHEMA))) == SCHEMA_VERSION
        assert decode_meta(db.get(meta_key(b"thing"))) == {1: "int key"}
        assert db.get(meta_key(META_OPEN)) is None  # closed cleanly
    finally:
        db.close()
    for damaged in (b"\xc1", msgpack.packb("1"), msgpack.packb(1.0)):
        with pytest.raises(CorruptRecord):
            decode_schema(damaged)
    assert {NAMESPACES[ns] for ns in (NS_ENTRY, NS_META)} == {"entry", "meta"} and len(NAMESPACES) == 8


@pytest.mark.parametrize("raw", [b"\xc1", b"", b"\x93\x01"])  # never msgpack, empty, an array cut short
def test_a_damaged_meta_record_reads_as_the_callers_fallback(
    tmp_path: Path, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "store")
    disk = DiskTier(path)
    try:
        disk.put(meta_key(b"thing"), raw)
        with caplog.at_level("WARNING", logger="tierstore"):
            assert disk.get_meta(b"thing") is None
            assert disk.get_meta(b"thing", damaged="assumed") == "assumed"
        assert disk.get_meta(b"missing", damaged="assumed") is None
        assert "'thing' is damaged" in caplog.text and path in caplog.text
        with pytest.raises(CorruptRecord, match="not msgpack"):
            decode_meta(raw)
    finally:
        disk.close()
