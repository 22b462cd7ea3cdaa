"""The existence guard in the store: admission, get_or_load rejections, batched saves, reopen and crashes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tierstore import ABSENT, BloomFilter, StorageFull, StoreClosed, TierStore, TierStoreError
from tierstore._plyvel import plyvel
from tierstore.codec import encode_key
from tierstore.disk import DiskTier
from tierstore.guard import META_FILTER
from tierstore.keyspace import NS_ENTRY, NS_META

ROOT = Path(__file__).resolve().parent.parent
OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}
MISSING = object()


def guarded(path: str, **settings: Any) -> TierStore:
    return TierStore(path, guard=True, **{**OPTS, "bloom_capacity": 10_000, **settings})


def admits(store: TierStore, key: str | bytes) -> bool:
    assert store._guard is not None
    return store._guard.might_contain(key)


def saved_filter(path: str) -> BloomFilter | None:
    """The filter saved in a closed (or killed) store's directory, read without opening the store."""
    db = plyvel.DB(path)
    try:
        raw = db.get(NS_META + META_FILTER)
    finally:
        db.close()
    if raw is None:
        return None
    return BloomFilter.from_bytes(msgpack.unpackb(raw))


class Loader:
    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.value


# -- without the guard ----------------------------------------------------------------------


def test_without_guard_there_is_no_filter_and_loads_always_run(store_path: str) -> None:
    with TierStore(store_path, **OPTS) as store:
        assert store._guard is None
        store.set("a", 1)
        loader = Loader("v")
        assert store.get_or_load("never-seen", loader) == "v" and loader.calls == 1
        stats = store.stats()
        assert stats["guard_rejections"] == 0
        assert (stats["guard_keys"], stats["guard_over_capacity"], stats["guard_degraded"]) == (0, 0, 0)
        with pytest.raises(TierStoreError, match="guard=True"):
            store.guard_keys(["a"])
        with pytest.raises(TierStoreError, match="guard=True"):
            store.rebuild_guard(["a"])
    assert saved_filter(store_path) is None


# -- admission -------------------------------------------------------------------------------


def test_set_and_guard_keys_admit_and_other_keys_are_ruled_out(store_path: str) -> None:
    with guarded(store_path) as store:
        assert not admits(store, "a")
        store.set("a", 1)
        store["b"] = 2
        store.guard_keys(["src", b"src-bytes"])
        assert all(admits(store, key) for key in ["a", "b", "src", b"src-bytes"])
        assert not any(admits(store, key) for key in ["c", b"a", "src-bytes", b"src"])
        assert store.stats()["guard_keys"] == 4


def test_negative_sets_do_not_admit_and_deleted_keys_stay_admitted(store_path: str) -> None:
    with guarded(store_path) as store:
        store.set("absent-in-source", ABSENT)
        assert not admits(store, "absent-in-source")
        store.set("gone", 1)
        store.delete("gone")
        assert admits(store, "gone")  # a Bloom filter never forgets


def test_guard_keys_validates_every_key_before_admitting_any(store_path: str) -> None:
    with guarded(store_path) as store:
        with pytest.raises(TypeError, match="int"):
            store.guard_keys(["fine", 7])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="4096"):
            store.guard_keys(["fine", "x" * 5000])
        assert not admits(store, "fine")
        assert store.stats()["guard_keys"] == 0


def test_guard_keys_saves_the_filter_before_returning(store_path: str) -> None:
    with guarded(store_path) as store:
        store.guard_keys(["src:1", "src:2"])
        raw = store._disk.get_meta(META_FILTER)
        assert isinstance(raw, bytes)
        saved = BloomFilter.from_bytes(raw)
        assert "src:1" in saved and "src:2" in saved
        assert store._guard is not None and store._guard.pending == 0


def test_guard_keys_on_a_closed_store_is_store_closed(store_path: str) -> None:
    store = guarded(store_path)
    store.close()
    with pytest.raises(StoreClosed):
        store.guard_keys(["a"])


# -- get_or_load -------------------------------------------------------------------------------------


def test_get_or_load_of_a_ruled_out_key_returns_default_without_loading(store_path: str) -> None:
    with guarded(store_path) as store:
        store.guard_keys(["exists"])
        loader = Loader("from source")
        assert store.get_or_load("missing", loader, default=MISSING) is MISSING
        assert store.get_or_load(b"exists", loader) is None  # bytes key: a different key
        assert loader.calls == 0
        assert store.stats()["guard_rejections"] == 2
        assert store.get_or_load("exists", loader) == "from source"
        assert loader.calls == 1
        assert store.get("exists") == "from source"
        assert store.stats()["guard_rejections"] == 2


def test_get_or_load_still_loads_a_key_that_was_set_then_deleted(store_path: str) -> None:
    with guarded(store_path) as store:
        store.set("k", "old")
        store.delete("k")
        loader = Loader("reloaded")
        assert store.get_or_load("k", loader) == "reloaded"
        assert loader.calls == 1 and store.stats()["guard_rejections"] == 0


def test_a_load_that_finds_nothing_leaves_a_negative_entry_and_admits_nothing_new(store_path: str) -> None:
    with guarded(store_path) as store:
        store.guard_keys(["maybe"])
        loader = Loader(None)
        assert store.get_or_load("maybe", loader, default="dflt") == "dflt"
        assert store.get_or_load("maybe", loader, default="dflt") == "dflt"
        assert loader.calls == 1  # the negative entry answered the second call
        assert store.stats()["guard_keys"] == 1


# -- saving in batches and reopening --------------------------------------------------------------------


def test_sets_are_saved_in_batches_not_one_write_each(store_path: str) -> None:
    with guarded(store_path, bloom_capacity=1000) as store:  # a batch is 1000 newly admitted keys
        for i in range(20):
            store.set(f"k{i}", i)
        assert store._disk.get_meta(META_FILTER) is None
        for i in range(20, 1200):
            store.set(f"k{i}", i)
        assert store.drain(10.0)  # a batch is saved in the background, not by the set that crossed the line
        raw = store._disk.get_meta(META_FILTER)
        assert raw is not None
        saved = BloomFilter.from_bytes(raw)
        assert all(f"k{i}" in saved for i in range(900))
        assert store._guard is not None and store._guard.pending < 1000


def test_repeated_sets_of_one_key_cost_no_saves(store_path: str) -> None:
    with guarded(store_path, bloom_capacity=1000) as store:
        for i in range(3000):
            store.set("hot", i)
        assert store._disk.get_meta(META_FILTER) is None
        assert store.stats()["guard_keys"] == 1


def test_a_clean_reopen_loads_the_saved_filter(store_path: str) -> None:
    with guarded(store_path) as store:
        store.set("a", 1)
        store.guard_keys(["src"])
        store.set("b", 2)
        assert store._guard is not None
        seed = store._guard.filter.seed
    saved = saved_filter(store_path)
    assert saved is not None and all(key in saved for key in ["a", "b", "src"])
    with guarded(store_path) as store:
        assert store._guard is not None
        assert store._guard.filter.seed == seed and store._guard.pending == 0
        assert all(admits(store, key) for key in ["a", "b", "src"])
        assert not admits(store, "c")
        assert store.stats()["guard_keys"] == 3


def test_a_clean_reopen_trusts_the_saved_filter_without_scanning_tier_2(store_path: str) -> None:
    with guarded(store_path) as store:
        store.set("a", 1)
    disk = DiskTier(store_path)  # a bare writer that knows nothing of the filter
    try:
        disk.put(NS_ENTRY + encode_key("written-behind"), b"\x00")
    finally:
        disk.close()
    with guarded(store_path) as store:
        assert admits(store, "a") and not admits(store, "written-behind")


def test_a_session_without_the_guard_makes_the_next_guarded_open_rebuild(store_path: str) -> None:
    with guarded(store_path) as store:
        store.set("before", 1)
        store.guard_keys(["src"])
    with TierStore(store_path, **OPTS) as store:
        store.set("unguarded", 2)
    with guarded(store_path) as store:
        assert all(admits(store, key) for key in ["before", "src", "unguarded"])
    with guarded(store_path) as store:  # the rebuilt filter was saved at close
        assert store._guard is not None and store._guard.pending == 0
        assert admits(store, "unguarded")


def test_a_first_guarded_open_admits_every_key_already_in_tier_2(store_path: str) -> None:
    with TierStore(store_path, **OPTS) as store:
        for i in range(100):
            store.set(f"old{i}", i)
        store.set("tomb", 1)
        store.delete("tomb", version=5)
    with guarded(store_path) as store:
        assert all(admits(store, f"old{i}") for i in range(100))
        assert admits(store, "tomb")
        assert not admits(store, "new")


def test_changed_options_keep_the_saved_filter(store_path: str, caplog: pytest.LogCaptureFixture) -> None:
    with guarded(store_path, bloom_capacity=500) as store:
        store.guard_keys(["src"])
    with caplog.at_level(logging.INFO, logger="tierstore"):
        store = guarded(store_path, bloom_capacity=5000, bloom_error_rate=0.001)
    with store:
        assert store._guard is not None and store._guard.filter.capacity == 500
        assert admits(store, "src")
    assert "keeping the saved existence filter" in caplog.text


# -- crashes --------------------------------------------------------------------------------------------

CHILD = """
import sys
from tierstore import TierStore

path, first, later = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = TierStore(path, guard=True, bloom_capacity=10_000, sweep_interval=None, checkpoint_interval=None)
for i in range(first):
    store.set(f"set:{i}", i)
if len(sys.argv) > 4:
    store.guard_keys([f"src:{i}" for i in range(50)])
for i in range(first, first + later):
    store.set(f"set:{i}", i)
print("ready", flush=True)
sys.stdin.read()
"""


def run_and_kill(path: str, *args: object) -> None:
    """Run CHILD on ``path`` until it has written, then SIGKILL it: no close, no final save."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, path, *map(str, args)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL


def test_after_a_kill_the_reopened_guard_admits_every_key_that_was_set(store_path: str) -> None:
    run_and_kill(store_path, 1500, 400, "guard_keys")
    saved = saved_filter(store_path)
    assert saved is not None  # a batch and guard_keys saved it...
    assert "src:0" in saved
    unsaved = [f"set:{i}" for i in range(1500, 1900) if f"set:{i}" not in saved]
    assert unsaved  # ...but not the last sets: only the rebuild can bring them back
    with guarded(store_path) as store:
        assert all(admits(store, f"set:{i}") for i in range(1900))
        assert all(admits(store, f"src:{i}") for i in range(50))
        assert store.get_or_load(unsaved[0], Loader("never called")) == int(unsaved[0][4:])
        assert store.stats()["guard_rejections"] == 0
    with guarded(store_path) as store:  # closed cleanly this time: loaded as saved
        assert store._guard is not None and store._guard.pending == 0
        assert all(admits(store, f"set:{i}") for i in range(1900))


def test_after_a_kill_before_any_save_the_filter_is_built_from_tier_2(store_path: str) -> None:
    run_and_kill(store_path, 300, 0)
    assert saved_filter(store_path) is None
    with guarded(store_path) as store:
        assert all(admits(store, f"set:{i}") for i in range(300))
        assert not admits(store, "set:300")


# -- damage, capacity and rebuilds ----------------------------------------------------------------------


def test_a_damaged_saved_filter_admits_everything_until_rebuilt(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with guarded(store_path) as store:
        store.guard_keys(["src"])
    disk = DiskTier(store_path)
    try:
        raw = disk.get_meta(META_FILTER)
        damaged = bytearray(raw)
        damaged[len(damaged) // 2] ^= 0xFF
        disk.put_meta(META_FILTER, bytes(damaged))
    finally:
        disk.close()
    with caplog.at_level(logging.WARNING, logger="tierstore"):
        store = guarded(store_path)
    assert "damaged" in caplog.text
    with store:
        assert admits(store, "src") and admits(store, "anything at all")
        assert store.stats()["guard_degraded"] == 1
        loader = Loader("v")
        assert store.get_or_load("anything", loader) == "v" and loader.calls == 1
    with guarded(store_path) as store:  # the damage is not papered over by a save at close
        assert store.stats()["guard_degraded"] == 1
        store.rebuild_guard(["src", "other"])
        assert store.stats()["guard_degraded"] == 0
        assert admits(store, "src") and not admits(store, "anything at all")
    with guarded(store_path) as store:
        assert store.stats()["guard_degraded"] == 0 and admits(store, "other")


def test_over_capacity_warns_once_and_shows_in_stats(store_path: str, caplog: pytest.LogCaptureFixture) -> None:
    with guarded(store_path, bloom_capacity=100) as store, caplog.at_level(logging.WARNING, logger="tierstore"):
        for i in range(100):
            store.set(f"k{i}", i)
        assert store.stats()["guard_over_capacity"] == 0
        for i in range(100, 400):
            store.set(f"k{i}", i)
        stats = store.stats()
        assert stats["guard_over_capacity"] == 1
        assert stats["guard_error_ppm"] > 2 * 10_000
        assert caplog.text.count("over capacity") == 1
        store.rebuild_guard(f"k{i}" for i in range(400))
        assert store.stats()["guard_over_capacity"] == 0
        assert store._guard is not None and store._guard.filter.capacity == 800
        assert all(admits(store, f"k{i}") for i in range(400))


def test_rebuild_guard_replaces_the_filter_and_saves_it(store_path: str) -> None:
    with guarded(store_path) as store:
        store.guard_keys(["old1", "old2"])
        store.rebuild_guard(["new1", b"new2"])
        assert admits(store, "new1") and admits(store, b"new2")
        assert not admits(store, "old1") and not admits(store, "old2")
        saved = BloomFilter.from_bytes(store._disk.get_meta(META_FILTER))
        assert "new1" in saved and "old1" not in saved
        with pytest.raises(TypeError):
            store.rebuild_guard(["fine", 3.5])  # type: ignore[list-item]
        assert admits(store, "new1") and not admits(store, "fine")
    with guarded(store_path) as store:
        assert admits(store, "new1") and not admits(store, "old1")


def test_keys_set_while_a_rebuild_runs_are_carried_into_the_new_filter(store_path: str) -> None:
    with guarded(store_path, bloom_capacity=50_000) as store:
        written: list[str] = []
        stop = threading.Event()
        marks: list[int] = []

        def writer() -> None:
            i = 0
            while not stop.is_set():
                store.set(f"live:{i}", i)
                written.append(f"live:{i}")
                i += 1

        def source_keys() -> Iterator[str]:
            marks.append(len(written))  # the rebuild has begun: later sets must be carried over
            for i in range(50_000):
                yield f"src:{i}"

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            while len(written) < 10:
                time.sleep(0.001)
            store.rebuild_guard(source_keys())
        finally:
            stop.set()
            thread.join()
        during = written[marks[0] + 1 :]  # +1: the set in flight at the mark may predate the rebuild
        assert len(during) > 10
        assert [key for key in during if not admits(store, key)] == []
        assert all(admits(store, f"src:{i}") for i in range(0, 50_000, 97))


def test_a_save_that_fails_at_close_makes_the_next_open_rebuild(
    store_path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with guarded(store_path) as store:
        store.set("first", 1)
    store = guarded(store_path)
    store.set("second", 2)
    assert store._guard is not None

    def full(*args: Any, **kwargs: Any) -> None:
        raise StorageFull("disk full")

    monkeypatch.setattr(store._guard, "save", full)
    with caplog.at_level(logging.ERROR, logger="tierstore"):
        store.close()  # the filter cannot be saved, yet the store closes cleanly
    assert "could not save the existence filter" in caplog.text
    saved = saved_filter(store_path)
    assert saved is not None and "second" not in saved
    with guarded(store_path) as store:
        assert admits(store, "first") and admits(store, "second")


def test_a_guard_that_fails_to_open_releases_the_directory(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with guarded(store_path) as store:
        store.set("a", 1)

    def broken(self: Any) -> None:
        raise RuntimeError("scan failed")

    monkeypatch.setattr("tierstore.guard.Guard._open", broken)
    with pytest.raises(RuntimeError, match="scan failed"):
        guarded(store_path)
    monkeypatch.undo()
    with guarded(store_path) as store:  # not StoreLocked: the failed open let go
        assert admits(store, "a")


@pytest.mark.parametrize("single", ["user:42", b"user:42", bytearray(b"user:42"), memoryview(b"user:42")])
def test_guard_keys_and_rebuild_refuse_a_single_key_for_a_list(store_path: str, single: Any) -> None:
    with guarded(store_path) as store:
        store.guard_keys(["kept"])
        for call in (store.guard_keys, store.rebuild_guard):
            with pytest.raises(TypeError, match=r"\[key\]"):
                call(single)
        assert not admits(store, "u") and not admits(store, "user:42")
        assert admits(store, "kept")
        assert store.stats()["guard_keys"] == 1


@pytest.mark.parametrize("keys", [42, None, 1.5], ids=["int", "none", "float"])
def test_guard_keys_and_rebuild_refuse_a_non_iterable(store_path: str, keys: Any) -> None:
    with guarded(store_path) as store:
        store.guard_keys(["kept"])
        for call in (store.guard_keys, store.rebuild_guard):
            with pytest.raises(TypeError, match="iterable of keys"):
                call(keys)
        assert admits(store, "kept") and store.stats()["guard_keys"] == 1
