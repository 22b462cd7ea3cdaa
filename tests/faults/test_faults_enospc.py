"""A full disk under the checkpoint directory, and under the working directory.

Each directory in turn lives on a small tmpfs mounted for the test (skipped,
with the reason, where mounting is refused). Filling it must raise
``StorageFull`` (never a raw plyvel or OS error), lose nothing acknowledged,
and once the filesystem grows again the store works and the next checkpoint is
complete and restorable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import resize_tmpfs
from tierstore import StorageFull, TierStore

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


@pytest.fixture
def small_fs(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("2m")


def _grow(mount_point: Path) -> None:
    """Space returns: the tmpfs grows to 64 MiB."""
    resize_tmpfs(mount_point, "64m")


def _value(i: int) -> str:
    return f"{i}:" + os.urandom(200).hex()


def _restored_equals(persist: Path, tmp_path: Path, expected: dict[str, str]) -> None:
    """The checkpoint alone (a copy, as if the working directory were lost) holds ``expected``."""
    copy = tmp_path / f"copy-{len(os.listdir(tmp_path))}"
    shutil.copytree(persist, copy)
    with TierStore(str(tmp_path / f"fresh-{copy.name}"), persist_path=str(copy), **OPTS) as restored:
        assert restored.stats()["restored_from_checkpoint"] == 1
        for key, value in expected.items():
            assert restored.get(key) == value, key


def test_full_checkpoint_disk_raises_storage_full_and_recovers(small_fs: Path, tmp_path: Path) -> None:
    persist = small_fs / "persist"
    values = {f"k{i}": _value(i) for i in range(300)}
    store = TierStore(str(tmp_path / "work"), persist_path=str(persist), **OPTS)
    try:
        for key, value in values.items():
            store.set(key, value, version=2)
        store.checkpoint()  # small: fits
        big = {f"big{i}": _value(i) * 4 for i in range(3000)}  # about 5 MiB: does not fit
        for key, value in big.items():
            store.set(key, value)
        values.update(big)
        with pytest.raises(StorageFull, match=str(persist)):
            store.checkpoint()
        with pytest.raises(StorageFull, match=str(persist)):
            store.checkpoint()  # and again, still full
        for key, value in values.items():  # the working directory lost nothing
            assert store.get(key) == value
        _grow(small_fs)
        values["after"] = "space returned"
        store.set("after", values["after"])
        result = store.checkpoint()
        assert result["full"] is True  # the failed ones left the changed set unknown
        _restored_equals(persist, tmp_path, values)
        assert store.set("k1", "older", version=1) is False
    finally:
        store.close()
    with TierStore(str(tmp_path / "work"), persist_path=str(persist), **OPTS) as reopened:
        assert reopened.get("after") == "space returned"


def test_full_working_disk_raises_storage_full_and_recovers(small_fs: Path, tmp_path: Path) -> None:
    working, persist = small_fs / "work", tmp_path / "persist"
    acked: dict[str, str] = {}
    store = TierStore(str(working), persist_path=str(persist), **OPTS)
    try:
        with pytest.raises(StorageFull):
            for i in range(100_000):
                value = _value(i)
                store.set(f"k{i}", value, version=3)
                acked[f"k{i}"] = value
        assert len(acked) > 100
        for key, value in acked.items():
            assert store.get(key) == value
        store.checkpoint()  # the checkpoint's own disk has room: every acknowledged write is in it
        _restored_equals(persist, tmp_path, acked)
        _grow(small_fs)
        # A write after a failed one would be lost at the next open (LevelDB's log is
        # misaligned by the failure): refused until the store is reopened.
        with pytest.raises(StorageFull, match="reopen"):
            store.set("after", "space returned")
        with pytest.raises(StorageFull):
            store.close()  # cannot record the session closed; releases the directory anyway
        store = TierStore(str(working), persist_path=str(persist), **OPTS)
        assert store.set("after", "space returned") is True
        acked["after"] = "space returned"
        for key, value in acked.items():
            assert store.get(key) == value
        store.checkpoint()
        _restored_equals(persist, tmp_path, acked)
    finally:
        store.close()
    with TierStore(str(working), persist_path=str(persist), **OPTS) as reopened:
        for key, value in acked.items():
            assert reopened.get(key) == value


def test_close_on_a_full_working_disk_still_takes_the_final_checkpoint(small_fs: Path, tmp_path: Path) -> None:
    """The checkpoint lives on its own disk: a working disk that refuses the close's own records
    must not cost the final checkpoint, which then holds every acknowledged write."""
    working, persist = small_fs / "work", tmp_path / "persist"
    acked: dict[str, str] = {}
    store = TierStore(str(working), persist_path=str(persist), **OPTS)
    with pytest.raises(StorageFull):
        for i in range(100_000):
            store.set(f"k{i}", _value(i))
            acked[f"k{i}"] = store.get(f"k{i}")
    assert len(acked) > 100
    with pytest.raises(StorageFull):
        store.close()
    assert store.closed
    _restored_equals(persist, tmp_path, acked)


@pytest.mark.parametrize("capacity", [None, 1 << 30])
def test_a_full_disk_under_ttl_sets_loses_nothing_and_leaves_every_entry_indexed(
    small_fs: Path, capacity: int | None
) -> None:
    """A set with a TTL is two puts (its expiry index record, then the entry), with a capacity more:
    whichever one the full disk refuses, nothing acknowledged is lost and the sweep still finds
    every expired entry after the reopen."""
    now = [1_000.0]
    working = small_fs / "work"
    settings: dict[str, Any] = {**OPTS, "clock": lambda: now[0], "disk_capacity_bytes": capacity}
    acked: dict[str, str] = {}
    store = TierStore(str(working), **settings)
    try:
        with pytest.raises(StorageFull):
            for i in range(100_000):
                value = _value(i)
                store.set(f"k{i}", value, ttl=60)
                acked[f"k{i}"] = value
    finally:
        with pytest.raises(StorageFull):
            store.close()
    _grow(small_fs)
    with TierStore(str(working), **settings) as store:
        for key, value in acked.items():
            assert store.get(key) == value
        now[0] += 120  # past every TTL
        assert store.sweep()["expired_purged"] >= len(acked)
        assert list(store.keys()) == []
