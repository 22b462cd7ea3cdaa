"""Checkpoints into persist_path and restore on open (tierstore/checkpoint.py, tierstore/restore.py)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.conftest import FakeClock
from tierstore import StoreLocked, TierStore, TierStoreError, restore
from tierstore._plyvel import plyvel
from tierstore.checkpoint_record import (
    CHECKPOINT_RECORD,
    META_CHECKPOINT_GENERATION,
    checkpoint_info,
    decode_checkpoint_info,
)
from tierstore.codec import encode_key
from tierstore.disk import DiskTier
from tierstore.errors import CorruptRecord, CorruptStore
from tierstore.keyspace import NS_ENTRY, NS_META

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


def paths(tmp_path: Path) -> tuple[str, str]:
    return str(tmp_path / "work"), str(tmp_path / "persist")


def open_store(working: str, persist: str | None, **settings: Any) -> TierStore:
    return TierStore(working, persist_path=persist, **{**OPTS, **settings})


def restored_from(persist: str, tmp_path: Path, **settings: Any) -> TierStore:
    """A store whose working directory is new: everything comes from the checkpoint."""
    fresh = tmp_path / f"fresh-{time.monotonic_ns()}"
    return open_store(str(fresh), persist, **settings)


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same", "inside", "around", "same via symlink"])
def test_persist_path_must_be_apart_from_path(tmp_path: Path, where: str) -> None:
    working = tmp_path / "work"
    persist = {
        "same": working,
        "inside": working / "ckpt",
        "around": tmp_path,
        "same via symlink": tmp_path / "link",
    }[where]
    working.mkdir()
    (tmp_path / "link").symlink_to(working)
    with pytest.raises(ValueError, match="persist_path"):
        TierStore(str(working), persist_path=str(persist), **OPTS)
    assert os.listdir(working) == []  # nothing created


def test_persist_path_must_not_contain_the_temporary_directory_of_path_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))  # where path=None makes its directory
    with pytest.raises(ValueError, match=r"persist_path .* temporary directory"):
        TierStore(None, persist_path=str(tmp_path), **OPTS)
    assert os.listdir(temp_root) == []  # the temporary directory is gone again
    with TierStore(None, persist_path=str(tmp_path / "persist"), **OPTS) as store:  # beside it: fine
        store.set("k", 1)
        assert store.checkpoint()["records"] > 0


def test_checkpoint_without_persist_path_raises(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "work"), None) as store, pytest.raises(TierStoreError, match="persist_path"):
        store.checkpoint()


# -- incremental checkpoints ----------------------------------------------------------------


def test_incremental_checkpoint_copies_only_what_changed(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        for i in range(20_000):
            store.set(f"k{i}", i)
        first = store.checkpoint()
        assert first["full"] is True
        assert first["records"] >= 20_000
        store.set("k1", "changed")
        store.delete("k2")
        second = store.checkpoint()
        assert second["full"] is False
        assert second["records"] + second["deleted"] == 2
        assert second["records"] * 100 < first["records"]
        assert store.checkpoint()["records"] == 0
        assert store.stats()["checkpoints"] == 3
    with restored_from(persist, tmp_path) as restored:
        assert restored.get("k1") == "changed"
        assert restored.get("k2") is None
        assert restored.get("k19999") == 19_999


def test_checkpoint_copies_every_namespace(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        store.set("a", 1)
        store.incr("hits", 5)
        store.index("top").add("m", 2.0)
        store.checkpoint()
    with restored_from(persist, tmp_path) as restored:
        assert restored.get("a") == 1
        assert restored.counter("hits") == 5
        assert restored.index("top").score("m") == 2.0


def test_next_session_after_a_clean_close_is_incremental(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        for i in range(1000):
            store.set(f"k{i}", i)
    with open_store(working, persist) as store:
        store.set("k5", "new")
        result = store.checkpoint()
        assert result["full"] is False and result["records"] == 1


def test_session_without_persist_path_forces_a_full_resync(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        store.set("a", 1)
        store.set("gone", 1)
    with open_store(working, None) as store:
        store.set("b", 2)
        store.delete("gone")
    with open_store(working, persist) as store:
        result = store.checkpoint()
        assert result["full"] is True
    with restored_from(persist, tmp_path) as restored:
        assert restored.get("a") == 1 and restored.get("b") == 2
        assert restored.get("gone") is None


def test_another_store_writing_the_checkpoint_forces_a_full_resync(tmp_path: Path) -> None:
    persist = str(tmp_path / "persist")
    one = open_store(str(tmp_path / "one"), persist)
    two = open_store(str(tmp_path / "two"), persist)
    try:
        one.set("from-one", 1)
        one.checkpoint()
        two.set("from-two", 2)
        assert two.checkpoint()["full"] is True  # replaces one's records
        again = one.checkpoint()
        assert again["full"] is True
        assert again["deleted"] >= 1  # two's record is gone again
    finally:
        one.close()
        two.close()
    shutil.rmtree(str(tmp_path / "two"))
    # one's close took the last checkpoint


def test_close_takes_a_final_checkpoint(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        store.set("k", "v", version=3)
    shutil.rmtree(working)
    with open_store(working, persist) as store:
        assert store.get("k") == "v"


def test_checkpoint_is_consistent_under_concurrent_writers(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    stop = threading.Event()
    final: dict[str, int] = {}

    def writer(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"w{worker}-{n % 50}"
            store.set(key, n)
            final[key] = n

    with open_store(working, persist) as store:
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        for _ in range(15):
            store.checkpoint()
        stop.set()
        for thread in threads:
            thread.join()
        store.checkpoint()
        # The checkpoint holds exactly what the store holds, without the close.
        db = plyvel.DB(persist)
        try:
            for key in final:
                assert db.get(NS_ENTRY + encode_key(key)) == store._disk.get(NS_ENTRY + encode_key(key)), key
        finally:
            db.close()
        assert all(store.get(key) == value for key, value in final.items())


def test_persist_rate_throttles(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist, persist_rate=400_000) as store:
        for i in range(1000):
            store.set(f"k{i}", "x" * 200)
        result = store.checkpoint()
        assert result["bytes"] > 200_000
        assert result["seconds"] >= result["bytes"] / 400_000 * 0.9


def test_background_checkpoints(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with TierStore(working, persist_path=persist, checkpoint_interval=0.05, sweep_interval=None) as store:
        store.set("k", 1)
        deadline = time.monotonic() + 10
        while store.stats()["checkpoints"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.stats()["checkpoints"] >= 2


def checkpoint_record(persist: str) -> bytes | None:
    """The raw completion record of the checkpoint at ``persist``."""
    db = plyvel.DB(persist)
    try:
        record: bytes | None = db.get(CHECKPOINT_RECORD)
        return record
    finally:
        db.close()


def test_checkpoint_record_says_what_was_done(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        store.set("k", 1)
        store.checkpoint()
        info = msgpack.unpackb(checkpoint_record(persist))
        assert info["complete"] is True and info["full"] is True and info["records"] >= 1


# -- restore on open ------------------------------------------------------------------------


def test_missing_working_directory_is_restored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    working, persist = paths(tmp_path)
    clock = FakeClock()
    with open_store(working, persist, clock=clock) as store:
        store.set("versioned", "v5", version=5)
        store.set("short", "s", ttl=10)
        store.set("long", "l", ttl=1000)
        store.delete("deleted", version=9)
        store.checkpoint()
    shutil.rmtree(working)
    with caplog.at_level(logging.WARNING, logger="tierstore"), open_store(working, persist, clock=clock) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("versioned") == "v5"
        assert store.set("versioned", "v4", version=4) is False
        assert store.set("deleted", "x", version=8) is False
        assert store.set("deleted", "x", version=10) is True
        clock.advance(20)
        assert store.get("short") is None
        assert store.get("long") == "l"
    assert "restored" in caplog.text and persist in caplog.text


def test_empty_working_directory_is_restored(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        store.set("k", 1)
    shutil.rmtree(working)
    os.mkdir(working)
    with open_store(working, persist) as store:
        assert store.get("k") == 1
        assert store.stats()["restored_from_checkpoint"] == 1


def test_temporary_store_is_warmed_from_the_checkpoint(tmp_path: Path) -> None:
    persist = str(tmp_path / "persist")
    with TierStore(persist_path=persist, **OPTS) as store:
        store.set("k", 1)
    with TierStore(persist_path=persist, **OPTS) as store:
        assert store.get("k") == 1


def test_working_directory_wins_over_the_checkpoint(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        store.set("k", "old")
    with open_store(working, None) as store:
        store.set("k", "new")
    with open_store(working, persist) as store:
        assert store.get("k") == "new"
        assert store.stats()["restored_from_checkpoint"] == 0


def test_locked_working_directory_is_not_restored(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        store.set("k", 1)
        with pytest.raises(StoreLocked):
            open_store(working, persist)
        assert store.get("k") == 1
    assert not [name for name in os.listdir(tmp_path) if "corrupt" in name or "restoring" in name]


def test_no_checkpoint_and_no_working_directory_starts_empty(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        assert store.stats()["restored_from_checkpoint"] == 0
        assert store.get("k") is None


def test_checkpoint_record_decoders(tmp_path: Path) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        store.set("a", 1)
        store.checkpoint()
    raw = checkpoint_record(persist)
    assert raw is not None
    info = decode_checkpoint_info(raw)
    assert info["complete"] is True and checkpoint_info(raw) == info
    db = plyvel.DB(working)
    try:
        assert msgpack.unpackb(db.get(NS_META + META_CHECKPOINT_GENERATION)) == info["generation"]
    finally:
        db.close()
    assert checkpoint_info(None) == {} and checkpoint_info(b"\xc1") == {}
    with pytest.raises(CorruptRecord, match="not a map"):
        decode_checkpoint_info(msgpack.packb([1]))
    with pytest.raises(CorruptRecord):
        decode_checkpoint_info(b"\xc1")


# -- paths, symlinks, private directories, damaged checkpoints ------------------------


def test_pathlib_paths_checkpoint_and_restore(tmp_path: Path) -> None:
    working, persist = tmp_path / "work", tmp_path / "persist"
    with TierStore(working, persist_path=persist, **OPTS) as store:
        store.set("k", "v", version=3)
    shutil.rmtree(working)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k") == "v"
        assert store.set("k", "old", version=2) is False


def _damage_empty(target: Path) -> None:
    for child in target.iterdir():
        child.unlink()


def _damage_corrupt(target: Path) -> None:
    (target / "CURRENT").unlink()


def _damage_missing(target: Path) -> None:
    shutil.rmtree(target)


LINK_DAMAGE = {"emptied": _damage_empty, "corrupt": _damage_corrupt, "missing": _damage_missing}


@pytest.mark.parametrize("damage", sorted(LINK_DAMAGE))
def test_symlinked_working_directory_is_restored_into_its_target(tmp_path: Path, damage: str) -> None:
    target, link, persist = tmp_path / "disk" / "work", tmp_path / "work-link", str(tmp_path / "persist")
    target.mkdir(parents=True)
    link.symlink_to(target)
    with open_store(str(link), persist) as store:
        store.set("k", "v", version=2)
    LINK_DAMAGE[damage](target)
    with open_store(str(link), persist) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k") == "v"
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert (target / "CURRENT").is_file()
    assert not [name for name in os.listdir(tmp_path) if "restoring" in name]


def test_directories_made_for_checkpoints_and_restores_are_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        persist = tmp_path / "p1" / "p2" / "persist"
        working = tmp_path / "w1" / "w2" / "work"
        with open_store(str(tmp_path / "work"), str(persist)) as store:
            store.set("k", 1)
        with open_store(str(working), str(persist)) as store:  # restored into new parents
            assert store.get("k") == 1
    finally:
        os.umask(old)
    for made in (tmp_path / "p1", tmp_path / "p1" / "p2", persist, tmp_path / "w1", tmp_path / "w1" / "w2", working):
        assert made.stat().st_mode & 0o777 == 0o700, made


def _garble_tables(directory: str) -> None:
    """Overwrite the middle of every table file (the footer stays, so LevelDB opens it)."""
    for name in os.listdir(directory):
        if name.endswith(".ldb"):
            path = os.path.join(directory, name)
            size = os.path.getsize(path)
            with open(path, "r+b") as table:
                table.seek(size // 3)
                table.write(os.urandom(max(64, size // 3)))


def test_damaged_checkpoint_with_working_directory_lost_starts_cold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    working, persist = paths(tmp_path)
    with open_store(working, persist) as store:
        for i in range(3000):
            store.set(f"k{i}", os.urandom(40).hex())
    plyvel.DB(persist).close()  # reopening turns the checkpoint's log into a table
    assert any(name.endswith(".ldb") for name in os.listdir(persist))
    _garble_tables(persist)
    shutil.rmtree(working)
    with caplog.at_level(logging.ERROR, logger="tierstore"), open_store(working, persist) as store:
        assert store.stats()["restored_from_checkpoint"] == 0
        store.set("after", "cold start")
        result = store.checkpoint()  # the damaged checkpoint is set aside and written anew
        assert result["full"] is True
    assert persist in caplog.text
    assert [name for name in os.listdir(tmp_path) if name.startswith("persist.corrupt-")]
    shutil.rmtree(working)
    with open_store(working, persist) as store:
        assert store.get("after") == "cold start"


def test_a_table_number_reused_while_the_open_runs_is_no_damage(tmp_path: Path) -> None:
    """LevelDB deletes orphan tables at open and may reuse a number for a table it is still writing.

    The interleaving is forced: an orphan with no footer is in the directory before the open;
    right after LevelDB opened (and deleted it), a half-written file of the same number appears,
    as when a compaction reuses the number. Only LevelDB's live tables are checked, so the open
    succeeds and nothing is restored over the working directory.
    """
    path = str(tmp_path / "store")
    with TierStore(path) as store:
        for i in range(2_000):
            store.set(f"k{i}", i)
    orphan = os.path.join(path, "000900.ldb")
    with open(orphan, "wb") as half_written:
        half_written.write(b"\0" * 100)

    def open_then_reuse(p: str) -> DiskTier:
        disk = DiskTier(p)
        assert not os.path.exists(orphan)  # LevelDB removed the orphan at open
        with open(orphan, "wb") as reused:
            reused.write(b"\0" * 100)  # a table LevelDB would be writing now
        return disk

    disk = restore._open_checked(path, open_then_reuse)
    try:
        assert disk.live_tables()
        assert 900 not in (disk.live_tables() or {})
    finally:
        disk.close()
    os.remove(orphan)
    with TierStore(path) as store:
        assert [store.get(f"k{i}") for i in (0, 1_999)] == [0, 1_999]
        assert store.stats()["restored_from_checkpoint"] == 0


def test_a_live_table_shorter_than_leveldb_recorded_is_damage(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with TierStore(path) as store:
        for i in range(2_000):
            store.set(f"k{i}", "v" * 100)
    db = plyvel.DB(path)
    db.compact_range()  # every entry into tables
    db.close()
    table = max(name for name in os.listdir(path) if name.endswith(".ldb"))
    full = os.path.getsize(os.path.join(path, table))
    with open(os.path.join(path, table), "r+b") as damaged:
        data = damaged.read()
        damaged.seek(0)
        damaged.truncate()
        damaged.write(data[: full // 2] + data[-48:])  # the footer is intact, the middle is gone
    with pytest.raises(CorruptStore, match="is corrupt"):  # by LevelDB's own read or by the size check
        TierStore(path)
