"""Damage found by an adversarial audit of the on-disk side: each test names what was broken."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tierstore import TierStore
from tierstore._plyvel import plyvel
from tierstore.errors import CorruptStore, StorageFull
from tierstore.keyspace import NS_META

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


def _flip_table_middles(directory: str) -> None:
    """Flip one bit in the middle of every table (its footer intact: LevelDB's open succeeds)."""
    for name in os.listdir(directory):
        if name.endswith(".ldb"):
            path = os.path.join(directory, name)
            middle = os.path.getsize(path) // 2
            with open(path, "r+b") as table:
                table.seek(middle)
                byte = table.read(1)[0]
                table.seek(middle)
                table.write(bytes([byte ^ 0x40]))


def _store_with_tables(working: str, persist: str | None, **settings: Any) -> None:
    with TierStore(working, persist_path=persist, **OPTS, **settings) as store:
        for i in range(300):
            store.set(f"k{i}", {"i": i, "pad": "x" * 50})
    plyvel.DB(working).close()  # reopening turns the log into a table
    assert any(name.endswith(".ldb") for name in os.listdir(working))


def test_a_corrupt_block_met_by_the_open_restores_from_the_checkpoint(tmp_path: Path) -> None:
    """The capacity count scans tier 2 at an open after an unclean close: a checksum error there is a
    corrupt working directory, which a checkpoint replaces (it was an error, the checkpoint unused)."""
    working, persist = str(tmp_path / "w"), str(tmp_path / "p")
    settings = {"disk_capacity_bytes": 10_000_000}
    _store_with_tables(working, persist, **settings)
    with TierStore(working, persist_path=persist, **OPTS, **settings) as store:
        store.set("unclean", 1)
        store._disk.abandon()  # type: ignore[attr-defined]  # not closed cleanly: the next open scans
        store._closed = True  # type: ignore[attr-defined]
    _flip_table_middles(working)
    with TierStore(working, persist_path=persist, **OPTS, **settings) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k10") == {"i": 10, "pad": "x" * 50}
    assert [name for name in os.listdir(tmp_path) if name.startswith("w.corrupt-")]


def test_a_corrupt_block_met_by_the_open_without_a_checkpoint_is_corrupt_store(tmp_path: Path) -> None:
    working = str(tmp_path / "w")
    _store_with_tables(working, None, disk_capacity_bytes=10_000_000)
    with TierStore(working, **OPTS, disk_capacity_bytes=10_000_000) as store:
        store._disk.abandon()  # type: ignore[attr-defined]
        store._closed = True  # type: ignore[attr-defined]
    _flip_table_middles(working)
    with pytest.raises(CorruptStore, match=working):
        TierStore(working, **OPTS, disk_capacity_bytes=10_000_000)


def test_a_checkpoint_of_a_damaged_working_directory_keeps_the_checkpoint(tmp_path: Path) -> None:
    """A corrupt block read from the working directory is its damage, not the checkpoint's: the
    checkpoint was set aside and a partial one written in its place."""
    working, persist = str(tmp_path / "w"), str(tmp_path / "p")
    _store_with_tables(working, persist)
    TierStore(working, **OPTS).close()  # a session without persist_path: the next checkpoint is full
    _flip_table_middles(working)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        with pytest.raises(CorruptStore, match=working) as raised:
            store.checkpoint()
        assert "kept" in str(raised.value)
        store.set("after", 1)
    assert not [name for name in os.listdir(tmp_path) if name.startswith("p.corrupt-")]
    shutil.rmtree(working)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert [store.get(f"k{i}") for i in range(300)] == [{"i": i, "pad": "x" * 50} for i in range(300)]


def _replace_with_directory(path: str) -> None:
    os.unlink(path)
    os.mkdir(path)


@pytest.mark.parametrize("name", ["CURRENT", "LOCK"])
def test_a_file_replaced_by_a_directory_is_damage_not_a_lock(tmp_path: Path, name: str) -> None:
    """LevelDB's "IO error: <dir>/LOCK: Is a directory" (or any IO error under a path holding the word
    "lock", such as /srv/clock/cache) once read as StoreLocked, which never restores."""
    working, persist = str(tmp_path / "clock" / "w"), str(tmp_path / "p")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        store.set("k", "v")
    _replace_with_directory(os.path.join(working, name))
    shutil.copytree(working, working + "-alone")
    with pytest.raises(CorruptStore, match="Is a directory"):
        TierStore(working + "-alone", **OPTS)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k") == "v"


def _truncate_tables(directory: str) -> None:
    for name in os.listdir(directory):
        if name.endswith(".ldb"):
            os.truncate(os.path.join(directory, name), os.path.getsize(os.path.join(directory, name)) // 2)


@pytest.mark.parametrize("meta_in_log", [False, True])
def test_a_checkpoint_with_a_truncated_table_is_unusable_not_an_os_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, meta_in_log: bool
) -> None:
    """Reading a truncated table raises plyvel's IOError ("Invalid argument"); the restore reported it as
    an OS error (a raw b'...' message) instead of a damaged checkpoint. ``meta_in_log``: the checkpoint's
    own records read fine (they are in its log), the entries' table does not."""
    working, persist = str(tmp_path / "w"), str(tmp_path / "p")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        for i in range(300):
            store.set(f"k{i}", "x" * 50)
    db = plyvel.DB(persist)  # reopening turns the checkpoint's log into a table
    meta = dict(db.iterator(prefix=NS_META))
    db.close()
    _truncate_tables(persist)
    if meta_in_log:
        db = plyvel.DB(persist)
        for key, value in meta.items():
            db.put(key, value)
        db.close()
    shutil.rmtree(working)
    with caplog.at_level(logging.ERROR, logger="tierstore"), TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 0  # a cold start, as the decision says
        assert store.get("k1") is None
    assert "unusable" in caplog.text


def test_a_restore_onto_a_full_disk_leaves_no_half_built_copy(tmpfs: Callable[[str], Path], tmp_path: Path) -> None:
    """The copy being built in ``<path>.restoring`` stayed behind, holding the space the disk lacked."""
    persist = str(tmp_path / "p")
    with TierStore(str(tmp_path / "source"), persist_path=persist, **OPTS) as store:
        for i in range(3000):
            store.set(f"k{i}", os.urandom(300).hex())
    small = tmpfs("1m")
    working = str(small / "w")
    with pytest.raises(StorageFull, match="w"):
        TierStore(working, persist_path=persist, **OPTS)
    assert os.listdir(small) == []
    with TierStore(str(tmp_path / "w2"), persist_path=persist, **OPTS) as store:  # the checkpoint is whole
        assert store.stats()["restored_from_checkpoint"] == 1
        assert len(store) == 3000


@pytest.mark.parametrize("schema", [0, -1])
def test_a_schema_record_no_tierstore_wrote_is_damage(tmp_path: Path, schema: int) -> None:
    """A schema of 0 or -1 passed the "not newer" check and the store opened as if it were sound."""
    working, persist = str(tmp_path / "w"), str(tmp_path / "p")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        store.set("k", "v")
    db = plyvel.DB(working)
    db.put(NS_META + b"schema", msgpack.packb(schema))
    db.close()
    shutil.copytree(working, working + "-alone")
    with pytest.raises(CorruptStore, match="schema record"):
        TierStore(working + "-alone", **OPTS)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k") == "v"
