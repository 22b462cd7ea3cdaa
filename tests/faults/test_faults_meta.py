"""Adversarial suite: damaged meta records, damaged keys, damaged LevelDB files.

A populated store (guard, capacity, versions, counters, an index, a checkpoint)
is closed cleanly; then one thing is damaged at a time and the store reopened.
It must open (or refuse with a ``TierStoreError`` naming the record), lose no
entry, keep the version rule, and ``tierstore verify`` must report or pass.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tierstore import TierStore, TierStoreError, cli
from tierstore._plyvel import plyvel
from tierstore.codec import encode_key
from tierstore.keyspace import META_SEQ, NS_ENTRY, NS_META, meta_key

N = 40
SETTINGS: dict[str, Any] = dict(
    guard=True, disk_capacity_bytes=10_000_000, checkpoint_interval=None, sweep_interval=None
)
ONLY_IN_SOURCE = "only-in-source"  # admitted by guard_keys, never set: the filter alone knows it

DAMAGES: dict[str, bytes | None] = {
    "garbage": b"\xc1\xff\x00junk",  # 0xc1 is never valid msgpack
    "wrong_type": msgpack.packb([1, "x", {"k": None}]),
    "empty": b"",
    "deleted": None,
}


def value_of(i: int) -> dict[str, int]:
    return {"i": i}


def version_of(i: int) -> int | None:
    return 10 + i if i % 2 else None  # odd keys are versioned


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A cleanly closed store and its checkpoint directory, to be copied by each case."""
    base = tmp_path_factory.mktemp("populated")
    path, persist = base / "store", base / "persist"
    with TierStore(path, persist_path=persist, **SETTINGS) as store:
        for i in range(N):
            store.set(f"k{i}", value_of(i), version=version_of(i))
        store.incr("hits", 7)
        store.index("board").add_many([("ann", 1.0), ("bob", 2.0)])
        store.guard_keys([ONLY_IN_SOURCE])
        store.checkpoint()
    return path, persist


def meta_names(path: Path) -> list[bytes]:
    db = plyvel.DB(str(path))
    try:
        return [key for key in db.iterator(prefix=NS_META, include_value=False)]
    finally:
        db.close()


def copy_of(populated: tuple[Path, Path], where: Path) -> tuple[Path, Path]:
    path, persist = where / "store", where / "persist"
    shutil.copytree(populated[0], path)
    shutil.copytree(populated[1], persist)
    return path, persist


def put_raw(path: Path, key: bytes, value: bytes | None) -> None:
    db = plyvel.DB(str(path))
    try:
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)
    finally:
        db.close()


def verify(path: Path) -> int:
    """``tierstore verify`` on ``path``; a traceback fails the test."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["verify", str(path)])
    assert code in (0, 1), out.getvalue()
    return code


def check_store(store: TierStore) -> None:
    """Nothing lost, the version rule and the filter still hold, writes work."""
    for i in range(N):
        assert store.get(f"k{i}") == value_of(i), i
    assert store.set("k1", "older", version=11) is False  # k1 holds version 11
    assert store.set("k3", value_of(3)) is True  # unversioned
    entry = store.get_entry("k3")
    assert entry is not None and entry.version == 13  # an unversioned write keeps the version
    assert store.set("k3", "older", version=12) is False
    assert store.counter("hits") == 7
    assert store.index("board").page() == [("ann", 1.0), ("bob", 2.0)]
    calls: list[int] = []
    assert store.get_or_load(ONLY_IN_SOURCE, lambda: calls.append(1) or "loaded") == "loaded"
    assert calls == [1]
    store.delete(ONLY_IN_SOURCE)  # so the next check asks the filter again
    assert store.set("fresh", 1) is True
    listed = [key for key in store if isinstance(key, str) and key.startswith("k")]
    assert sorted(listed) == sorted(f"k{i}" for i in range(N))


@pytest.mark.parametrize("damage", DAMAGES)
def test_every_meta_record_damaged_one_at_a_time(populated: tuple[Path, Path], tmp_path: Path, damage: str) -> None:
    names = meta_names(populated[0])
    assert {b"mseq", b"mversioned", b"mcapacity", b"mbloom", b"mbloom_clean", b"mschema"} <= set(names)
    for number, name in enumerate(names):
        path, persist = copy_of(populated, tmp_path / f"{number}")
        put_raw(path, name, DAMAGES[damage])
        assert verify(path) in (0, 1)
        try:
            store = TierStore(path, persist_path=persist, **SETTINGS)
        except TierStoreError as exc:
            assert name[1:].decode() in str(exc), exc  # a refusal names the record
            continue
        with store:
            check_store(store)
        with TierStore(path, persist_path=persist, **SETTINGS) as store:  # and again, after a clean close
            check_store(store)


@pytest.mark.parametrize("saved", [2**64 - 1, 2**63, -5])
def test_an_impossible_saved_sequence_restarts_from_the_clock(
    tmp_path: Path, saved: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store"
    with TierStore(path) as store:
        store.set("a", 1)
    put_raw(path, meta_key(META_SEQ), msgpack.packb(saved))
    with caplog.at_level(logging.WARNING, logger="tierstore"), TierStore(path) as store:
        assert store.set("b", 2) is True
        assert store.get("a") == 1 and store.get("b") == 2
    assert "sequence" in caplog.text


@pytest.fixture
def bad_key_store(tmp_path: Path) -> Iterator[Path]:
    """A store holding a str-tagged entry key that is not UTF-8, beside good ones."""
    path = tmp_path / "store"
    with TierStore(path) as store:
        store.set("good", 1)
        store.set(b"bytes", 2)
        envelope = store._disk.get(NS_ENTRY + encode_key("good"))
    assert envelope is not None
    put_raw(path, NS_ENTRY + b"s\xff\xfe-not-utf8", envelope)
    yield path


def test_an_entry_key_that_is_not_utf8_is_a_counted_corrupt_record(bad_key_store: Path) -> None:
    with TierStore(bad_key_store) as store:
        assert sorted(store.keys(), key=repr) == ["good", b"bytes"]
        assert dict(store.items()) == {"good": 1, b"bytes": 2}
        assert store.stats()["corrupt_records"] == 2
    assert verify(bad_key_store) == 1


def test_a_guarded_rebuild_skips_an_entry_key_that_is_not_utf8(bad_key_store: Path) -> None:
    with TierStore(bad_key_store, guard=True) as store:  # no saved filter: rebuilt from the keys
        assert store.get_or_load("good", lambda: "loader") == 1
        assert store.get_or_load("never", lambda: "loaded") is None  # ruled out by the rebuilt filter


def test_compaction_meeting_a_damaged_block_makes_writes_a_corrupt_store(tmp_path: Path) -> None:
    path = tmp_path / "store"
    for session in range(3):
        with TierStore(path, sweep_interval=None) as store:
            for i in range(300):
                store.set(f"k{i:04d}", f"v{session}-{i}" * 10)
    for table in path.glob("*.ldb"):
        data = bytearray(table.read_bytes())
        data[200:600] = bytes(b ^ 0xFF for b in data[200:600])
        table.write_bytes(bytes(data))
    store = TierStore(path, sweep_interval=None)
    failure: BaseException | None = None
    for i in range(200_000):  # writes fill the memtable until a compaction reads a damaged block
        try:
            store.set(f"k{i % 300:04d}-{i}", "x" * 1000)
        except BaseException as exc:
            failure = exc
            break
    assert isinstance(failure, TierStoreError) and type(failure).__name__ == "CorruptStore", repr(failure)
    assert str(path) in str(failure) and "damaged" in str(failure) and "verify" in str(failure)
    with pytest.raises(TierStoreError, match="damaged"):
        store.set("again", 1)
    with pytest.raises(TierStoreError, match="damaged") as closing:
        store.close()
    assert type(closing.value).__name__ == "CorruptStore"  # not StorageFull: the disk is not full
    assert store.closed


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cleanly closed store with a table file and a log file."""
    path = tmp_path_factory.mktemp("plain") / "store"
    with TierStore(path) as store:
        for i in range(2000):
            store.set(f"k{i}", value_of(i))
    with TierStore(path) as store:  # the first session's log becomes a table
        for i in range(2000, 2100):
            store.set(f"k{i}", value_of(i))
    return path


def damaged_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.suffix in (".ldb", ".log") or p.name.startswith("MANIFEST"))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_table_and_log_files_give_typed_errors_or_misses(plain: Path, tmp_path: Path, how: str) -> None:
    names = damaged_files(plain)
    assert any(name.endswith(".ldb") for name in names)
    for name in names:
        path = tmp_path / f"{name}-{how}"
        shutil.copytree(plain, path)
        target = path / name
        size = target.stat().st_size
        if how == "truncate":
            os.truncate(target, size // 2)
        else:
            data = bytearray(target.read_bytes())
            middle = slice(size // 3, size // 3 + 64)
            data[middle] = bytes(b ^ 0x5A for b in data[middle])
            target.write_bytes(bytes(data))
        verify(path)
        try:
            store = TierStore(path)
        except TierStoreError:
            continue
        with contextlib.suppress(TierStoreError), store:
            for i in range(0, 2100, 7):
                try:
                    got = store.get(f"k{i}")
                except TierStoreError:
                    continue
                assert got in (None, value_of(i)), (name, i, got)  # a miss, never a wrong value
