"""The calls on many keys and the read-then-write calls, attacked: versions, tier-1 coherence under
forced interleavings, fill generations, the expiry index and the capacity total, hostile input,
a full disk, kill -9, ``cached`` handles, ``len`` under writes and a thread hammer.

Interleavings are forced with ``sys.setprofile`` (a reader runs at every step of a writer) or by
loaders blocked on events: nothing depends on timing.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WAIT, FakeClock, resize_tmpfs, start
from tests.expiry_checks import assert_indexed, checked_sweep, index_records
from tierstore import ABSENT, StorageFull, TierStore
from tierstore.capacity import entry_size
from tierstore.codec import VERSION, encode_key, is_tombstone, unpack_record
from tierstore.keyspace import NS_ENTRY, NS_WRITE_ORDER

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


def open_store(path: str, **settings: Any) -> TierStore:
    return TierStore(path, **{**OPTS, **settings})


def disk_record(store: TierStore, key: str | bytes) -> Any:
    data = store._disk.get(NS_ENTRY + encode_key(key))
    return None if data is None else unpack_record(data)


def recount(store: TierStore) -> int:
    """The capacity total from scratch: every entry's key and envelope."""
    return sum(entry_size(disk_key, data) for disk_key, data in store._disk.scan(NS_ENTRY))


def order_records(store: TierStore) -> dict[bytes, int]:
    """Entry key -> how many write-order records name it."""
    named: dict[bytes, int] = {}
    for okey, _ in store._disk.scan(NS_WRITE_ORDER):
        named[okey[9:]] = named.get(okey[9:], 0) + 1
    return named


def assert_capacity_exact(store: TierStore) -> None:
    capacity = store._durability.capacity
    assert capacity is not None
    assert capacity.total == recount(store)
    named = order_records(store)
    assert set(named) == {disk_key for disk_key, _ in store._disk.scan(NS_ENTRY)}
    assert set(named.values()) <= {1}, "an entry has more than one write-order record"


def assert_tier1_coherent(store: TierStore) -> None:
    """Every record tier 1 holds is exactly what tier 2 holds for its key."""
    for key, record in list(store._memory._data.items()):
        data = store._disk.get(NS_ENTRY + encode_key(key))
        assert data is not None, f"tier 1 holds {key!r}, tier 2 does not"
        assert unpack_record(data)[1:] == record[1:], f"tier 1 and tier 2 differ on {key!r}"


def snapshot(store: TierStore) -> tuple[Any, ...]:
    """Everything a refused call must leave as it was: both tiers, the index, the stats."""
    stats = {k: v for k, v in store.stats().items() if k not in ("hits_memory", "hits_disk", "misses")}
    return (
        dict(store._disk.scan(NS_ENTRY)),
        dict(store._memory._data),
        index_records(store),
        stats,
    )


class Gate:
    """A loader that signals when it starts and returns only when released (no sleeps)."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> Any:
        self.started.set()
        assert self.release.wait(WAIT)
        return self.value


@contextmanager
def at_every_step(action: Callable[[], None]) -> Iterator[list[int]]:
    """Run ``action`` at every profile event of this thread while the block runs; counts them."""
    steps = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        steps[0] += 1
        action()

    sys.setprofile(profile)
    try:
        yield steps
    finally:
        sys.setprofile(None)


# -- versions -------------------------------------------------------------------------------------


def _kill(store: TierStore, call: str, key: str) -> None:
    if call == "pop":
        assert store.pop(key) == "v5"
    elif call == "delete_many":
        assert store.delete_many([key, "other"]) == 1
    elif call == "delete_prefix":
        assert store.delete_prefix(key[:2]) == 1
    elif call == "clear":
        assert store.clear() >= 1


@pytest.mark.parametrize("where", ["tier1", "evicted", "reopened"])
@pytest.mark.parametrize("call", ["pop", "delete_many", "delete_prefix", "clear"])
def test_every_delete_call_leaves_a_tombstone_no_older_write_passes(store_path: str, call: str, where: str) -> None:
    store = open_store(store_path, memory_items=2, memory_admission="always")
    try:
        store.set("vk", "v5", version=5)
        if where != "tier1":
            for i in range(4):
                store.set(f"pad{i}", i)  # vk leaves tier 1
            assert store._memory.get("vk") is None
        _kill(store, call, "vk")
        if where == "reopened":
            store.close()
            store = open_store(store_path, memory_items=2)
        for version in (0, 3, 5):
            assert store.set("vk", "old", version=version) is False
            assert store.add("vk", "old", version=version) is False
        assert store.set_many({"vk": "unversioned"}) == 1  # keeps the tombstone's version
        assert store.get_entry("vk").version == 5  # type: ignore[union-attr]
        assert store.touch("vk", ttl=10) is True and store.get_entry("vk").version == 5  # type: ignore[union-attr]
        assert store.set("vk", "older", version=4) is False
        assert store.set("vk", "new", version=6) is True
        assert store.pop("vk") == "new"
        store.close()
        store = open_store(store_path)
        assert store.set("vk", "x", version=6) is False and disk_record(store, "vk")[VERSION] == 6
    finally:
        store.close()


def test_add_and_set_many_over_an_expired_versioned_entry_keep_its_version(store_path: str) -> None:
    clock = FakeClock()
    with open_store(store_path, clock=clock, memory_items=1) as store:
        store.set("k", "v", version=7, ttl=5)
        store.set("pad", 1)
        clock.advance(10)
        assert store.touch("k", ttl=100) is False  # expired: not live
        assert store.add("k", "added") is True
        assert store.get_entry("k").version == 7  # type: ignore[union-attr]
        assert store.delete_many(["k"]) == 1
        assert store.set_many({"k": ABSENT}) == 1  # negative, at the tombstone's version
        assert store.add("k", "again", version=7) is False
        assert store.add("k", "again", version=8) is True
        assert store.pop("k", "gone") == "again"
        assert store.set("k", "x", version=8) is False


# -- tier-1 coherence under forced interleavings ---------------------------------------------------


@pytest.mark.parametrize("call", ["set_many", "delete_many", "touch", "pop", "delete_prefix", "add"])
@pytest.mark.parametrize("memory_bytes", [None, 10_000])
def test_a_reader_at_every_step_of_a_call_never_sees_new_then_old(
    store_path: str, call: str, memory_bytes: int | None
) -> None:
    clock = FakeClock()
    with open_store(
        store_path, clock=clock, memory_items=4, memory_bytes=memory_bytes, memory_admission="always"
    ) as store:
        keys = [f"p{i}" for i in range(6)]
        seen: dict[str, list[Any]] = {key: [] for key in keys}

        def read_all() -> None:
            if store._memory._lock.locked():  # held by this thread: a reader thread would wait, then run
                return
            for key in keys:
                entry = store.get_entry(key)
                state = None if entry is None else (entry.value, entry.expires_at, entry.version)
                if not seen[key] or seen[key][-1] != state:
                    seen[key].append(state)

        for round_ in range(1, 6):
            store.set_many({key: (round_, 0) for key in keys}, ttl=100)
            for key in keys:
                seen[key] = [(list((round_, 0)), clock() + 100, 0)]
            clock.advance(1)
            with at_every_step(read_all) as steps:
                if call == "set_many":
                    store.set_many({key: (round_, 1) for key in keys}, ttl=100)
                elif call == "delete_many":
                    assert store.delete_many(keys) == len(keys)
                elif call == "touch":
                    for key in keys:
                        assert store.touch(key, ttl=500)
                elif call == "pop":
                    for key in keys:
                        assert store.pop(key) == [round_, 0]
                elif call == "delete_prefix":
                    assert store.delete_prefix("p") == len(keys)
                else:
                    for key in keys:
                        store.delete(key)
                        assert store.add(key, (round_, 1), ttl=100)
            assert steps[0] > 50
            for key in keys:
                history = seen[key]
                if call == "add":  # delete then add: old, gone, new, never back
                    assert [state if state is None else state[0][1] for state in history] in ([0, None, 1], [0, 1])
                else:
                    assert len(history) <= 2, f"{key}: {history}"  # old, then new, never old again
            assert_tier1_coherent(store)


def test_get_many_promotions_racing_every_step_of_set_many_never_go_back(store_path: str) -> None:
    with open_store(store_path, memory_items=4, memory_admission="always") as store:
        keys = [f"k{i}" for i in range(10)]
        store.set_many(dict.fromkeys(keys, 0))
        last: dict[str, int] = dict.fromkeys(keys, 0)
        bad: list[str] = []

        def read_many() -> None:
            if store._memory._lock.locked():
                return
            for key, value in store.get_many(keys).items():
                if value < last[key]:
                    bad.append(f"{key}: {value} after {last[key]}")
                last[key] = value

        for n in range(1, 8):
            with at_every_step(read_many):
                store.set_many(dict.fromkeys(keys[n % 3 :], n))
            for key in keys[n % 3 :]:
                last[key] = n  # the call returned: nothing older may be read from now on
            assert store.get_many(keys) == {k: (n if k in keys[n % 3 :] else last[k]) for k in keys}
        assert bad == []
        assert_tier1_coherent(store)


# -- fill generations --------------------------------------------------------------------------------


@pytest.mark.parametrize("stored", [False, True])
@pytest.mark.parametrize("call", ["set_many", "delete_many", "pop", "add", "clear", "delete_prefix"])
def test_a_load_in_flight_before_a_call_never_stores_its_result(store_path: str, call: str, stored: bool) -> None:
    clock = FakeClock()
    with open_store(store_path, clock=clock, stale_ttl=1000) as store:
        if stored:
            store.set("fk", "old", ttl=1)
            clock.advance(2)  # stale: get_or_load reloads
        gate = Gate("loaded")
        thread, out = start(lambda: store.get_or_load("fk", gate, on_busy="wait"))
        assert gate.started.wait(WAIT)
        expected: Any = None
        if call == "set_many":
            assert store.set_many({"fk": "written", "other": 1}) == 2
            expected = "written"
        elif call == "delete_many":
            assert store.delete_many(["fk"]) == 0
        elif call == "pop":
            assert store.pop("fk", "none") == "none"
        elif call == "add":
            assert store.add("fk", "added") is True
            expected = "added"
        elif call == "clear":
            store.clear()
        else:
            store.delete_prefix("f")
        gate.release.set()
        thread.join(WAIT)
        assert out == ["loaded"]  # the caller gets its load
        assert store.get("fk") == expected
        assert (disk_record(store, "fk") or (None,) * 5)[4] == expected
        assert store.stats()["fills_rejected"] >= 1


# -- expiry index and capacity --------------------------------------------------------------------------


CALLS = ["set", "setv", "set_many", "delete_many", "prefix", "touch", "pop", "add", "addv", "clear"]


def test_random_calls_keep_the_index_the_capacity_and_tier1_exact_across_reopens(store_path: str) -> None:
    rng = random.Random(7)
    clock = FakeClock()
    settings = dict(
        clock=clock, memory_items=3, disk_capacity_bytes=10**9, tombstone_ttl=50, stale_ttl=5, ttl_jitter=0.1
    )
    keys: list[str | bytes] = [f"k{i}" for i in range(6)] + [b"k1", b"x"]
    store = open_store(store_path, **settings)
    try:
        for step in range(500):
            op = rng.choice(CALLS)
            key = rng.choice(keys)
            ttl = rng.choice([..., None, 1, 10, 100])
            if op == "set":
                store.set(key, step, ttl=ttl)
            elif op == "setv":
                store.set(key, step, version=rng.randint(1, 20), ttl=ttl)
            elif op == "set_many":
                store.set_many({rng.choice(keys): rng.choice([step, ABSENT]) for _ in range(3)}, ttl=ttl)
            elif op == "delete_many":
                store.delete_many(rng.sample(keys, 3))
            elif op == "prefix":
                store.delete_prefix(rng.choice(["k", "k1", b"k", b"", ""]))
            elif op == "touch":
                store.touch(key, ttl=ttl)
            elif op == "pop":
                store.pop(key, None)
            elif op == "add":
                store.add(key, step, ttl=ttl)
            elif op == "addv":
                store.add(key, step, version=rng.randint(1, 20), ttl=ttl)
            elif rng.random() < 0.2:
                store.clear()
            assert_capacity_exact(store)
            assert_indexed(store)
            assert_tier1_coherent(store)
            if step % 25 == 0:
                clock.advance(rng.choice([1, 5, 20, 60]))
                checked_sweep(store, clock(), 5, 50)
                assert_capacity_exact(store)
            if step % 100 == 99:
                store.close()
                store = open_store(store_path, **settings)
                assert_capacity_exact(store)
    finally:
        store.close()


@pytest.mark.parametrize("ttl", [1.0, 50.0, None])
def test_touch_then_sweep_removes_exactly_what_is_due(store_path: str, ttl: float | None) -> None:
    clock = FakeClock()
    with open_store(store_path, clock=clock, disk_capacity_bytes=10**9, memory_items=2) as store:
        store.set_many({f"t{i}": i for i in range(6)}, ttl=10)
        store.set("v", "versioned", ttl=10, version=3)
        for key in ["t0", "t1", "t2", "v"]:
            assert store.touch(key, ttl=ttl) is True
        for now in (2, 11, 60, 200):
            clock.now = 1_000_000.0 + now
            checked_sweep(store, clock(), 0.0, 86_400.0)
            assert_capacity_exact(store)
        survivors = {key for key in [f"t{i}" for i in range(6)] + ["v"] if store.get(key) is not None}
        assert survivors == ({"t0", "t1", "t2", "v"} if ttl is None else set())
        assert is_tombstone(disk_record(store, "v")) == (ttl is not None)


# -- hostile input ----------------------------------------------------------------------------------------


class _Dup(Mapping[Any, Any]):
    """A mapping whose iteration yields one key twice (a broken but accepted ``Mapping``)."""

    def __init__(self, keys: list[Any]) -> None:
        self._keys = keys

    def __getitem__(self, key: Any) -> Any:
        return f"v-{key}"

    def __iter__(self) -> Iterator[Any]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class _BadItems(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("items() failed")


def _half_way() -> Iterator[str]:
    yield "h1"
    raise RuntimeError("the generator failed half way")


_NAN, _INF = math.nan, math.inf
HOSTILE: list[tuple[str, Callable[[TierStore], Any], type[BaseException], str]] = [
    ("get_many str", lambda s: s.get_many("h1"), TypeError, "iterable of str/bytes keys, not str"),
    ("get_many None", lambda s: s.get_many(None), TypeError, "NoneType"),
    ("get_many int key", lambda s: s.get_many(["h1", 3]), TypeError, "not int"),
    ("get_many gen", lambda s: s.get_many(_half_way()), RuntimeError, "half way"),
    ("set_many list", lambda s: s.set_many([("h1", 1)]), TypeError, "mapping"),
    ("set_many float key", lambda s: s.set_many({"h1": 1, 1.5: 2}), TypeError, "not float"),
    ("set_many None key", lambda s: s.set_many({"h1": 1, None: 2}), TypeError, "NoneType"),
    ("set_many huge key", lambda s: s.set_many({"h1": 1, "x" * 5000: 2}), ValueError, "4096"),
    ("set_many items", lambda s: s.set_many(_BadItems(h1=1)), RuntimeError, "items() failed"),
    ("set_many object", lambda s: s.set_many({"h1": 2, "h2": object(), "h3": 3}), TypeError, "object"),
    ("set_many set", lambda s: s.set_many({"h1": 2, "h2": {1, 2}}), TypeError, "set"),
    ("set_many bigint", lambda s: s.set_many({"h1": 2, "h2": 2**70}), OverflowError, ""),
    ("set_many map key", lambda s: s.set_many({"h1": 2, "h2": {(1, 2): 2}}), (TypeError, ValueError), ""),  # type: ignore[list-item]
    ("set_many nan ttl", lambda s: s.set_many({"h1": 2}, ttl=_NAN), ValueError, "nan"),
    ("set_many inf ttl", lambda s: s.set_many({"h1": 2}, ttl=_INF), ValueError, "inf"),
    ("set_many 0 ttl", lambda s: s.set_many({"h1": 2}, ttl=0), ValueError, "> 0"),
    ("set_many neg ttl", lambda s: s.set_many({"h1": 2}, ttl=-1), ValueError, "> 0"),
    ("set_many str ttl", lambda s: s.set_many({"h1": 2}, ttl="5"), TypeError, "str"),
    ("set_many big value", lambda s: s.set_many({"h1": 2, "h2": "x" * 3000}), ValueError, "max_value_bytes"),
    ("delete_many str", lambda s: s.delete_many("h1"), TypeError, "not str"),
    ("delete_many bytes", lambda s: s.delete_many(b"h1"), TypeError, "not bytes"),
    ("delete_many int", lambda s: s.delete_many(5), TypeError, "int"),
    ("delete_many gen", lambda s: s.delete_many(_half_way()), RuntimeError, "half way"),
    ("delete_many mixed", lambda s: s.delete_many(["h1", None]), TypeError, "NoneType"),
    ("delete_many unhashable", lambda s: s.delete_many(["h1", ["h2"]]), TypeError, "list"),
    ("prefix None", lambda s: s.delete_prefix(None), TypeError, "NoneType"),
    ("prefix int", lambda s: s.delete_prefix(1), TypeError, "int"),
    ("prefix bytearray", lambda s: s.delete_prefix(bytearray(b"h")), TypeError, "bytearray"),
    ("prefix list", lambda s: s.delete_prefix(["h"]), TypeError, "list"),
    ("prefix huge", lambda s: s.delete_prefix("x" * 5000), ValueError, "4096"),
    ("prefix surrogate", lambda s: s.delete_prefix("\ud800"), ValueError, "Unicode"),
    ("touch None", lambda s: s.touch(None), TypeError, "NoneType"),
    ("touch nan", lambda s: s.touch("h1", ttl=_NAN), ValueError, "nan"),
    ("touch 0", lambda s: s.touch("h1", ttl=0), ValueError, "> 0"),
    ("touch bool", lambda s: s.touch("h1", ttl=True), TypeError, "bool"),
    ("pop int", lambda s: s.pop(1), TypeError, "int"),
    ("pop huge", lambda s: s.pop(b"x" * 5000), ValueError, "4096"),
    ("add float", lambda s: s.add(1.0, 1), TypeError, "float"),
    ("add value", lambda s: s.add("new", object()), TypeError, "object"),
    ("add -ttl", lambda s: s.add("new", 1, ttl=-5), ValueError, "> 0"),
    ("add version", lambda s: s.add("new", 1, version=-1), ValueError, "version"),
    ("add version str", lambda s: s.add("new", 1, version="2"), TypeError, "version"),
]


@pytest.mark.parametrize("name, call, error, words", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_input_raises_the_right_error_and_changes_nothing(
    store_path: str, name: str, call: Callable[[TierStore], Any], error: Any, words: str
) -> None:
    with open_store(store_path, memory_items=2, max_value_bytes=2000, default_ttl=50) as store:
        store.set_many({"h1": "one", "h2": "two", b"h3": "three"})
        store.set("hv", "versioned", version=4)
        before = snapshot(store)
        with pytest.raises(error) as raised:
            call(store)
        assert words in str(raised.value)
        assert snapshot(store) == before
        assert_tier1_coherent(store)


def test_a_mapping_that_repeats_a_key_keeps_the_capacity_exact(store_path: str) -> None:
    with open_store(store_path, disk_capacity_bytes=10**9, default_ttl=100) as store:
        store.set("a", "before")
        assert store.set_many(_Dup(["a", "b", "a"])) == 2
        assert store.get("a") == "v-a" and store.get("b") == "v-b"
        assert store.stats()["sets"] == 3
        assert_capacity_exact(store)
        assert_indexed(store)
        assert store.delete_many(iter(["a", "b", "a", "b"])) == 2
        assert_capacity_exact(store)


@pytest.mark.parametrize("call", ["pop", "delete", "delete_many", "delete_prefix", "clear"])
def test_a_damaged_record_goes_with_the_delete_calls(store_path: str, call: str) -> None:
    """A record that does not decode reads as a miss; a delete call must remove it, not step over it
    (else ``clear()`` leaves it, and every later listing counts it corrupt again)."""
    with open_store(store_path) as store:
        store.set_many({"bad": 1, "good": 2, b"bad": 3})
        store._disk.put(NS_ENTRY + encode_key("bad"), b"\xc1 not msgpack")
        store._memory.clear()  # as after eviction: reads go to tier 2
        assert store.get("bad") is None and store.stats()["corrupt_records"] == 1
        if call == "pop":
            with pytest.raises(KeyError):
                store.pop("bad")
        elif call == "delete_many":
            assert store.delete_many(["bad", "good"]) == 1
        elif call == "delete":
            assert store.delete("bad") is False
        elif call == "delete_prefix":
            assert store.delete_prefix("b") == 0
        else:
            assert store.clear() == 2
        assert store._disk.get(NS_ENTRY + encode_key("bad")) is None
        counted = store.stats()["corrupt_records"]
        kept = {
            "pop": {b"bad", "good"},
            "delete": {b"bad", "good"},
            "delete_prefix": {b"bad", "good"},
            "delete_many": {b"bad"},
            "clear": set(),
        }
        assert set(store.keys()) == kept[call]
        assert store.stats()["corrupt_records"] == counted  # nothing left to count again
        assert store.set("bad", "fresh", version=1) is True and store.get("bad") == "fresh"


# -- full disk, kill -9 ----------------------------------------------------------------------------------


def test_a_full_disk_during_set_many_and_delete_prefix_keeps_both_tiers_and_the_total(
    tmpfs: Callable[[str], Path],
) -> None:
    mount = tmpfs("3m")
    path = str(mount / "store")
    settings = {"disk_capacity_bytes": 10**9, "memory_items": 50}
    store = open_store(path, **settings)
    try:
        for i in range(200):
            store.set(f"d{i}", f"{i}-" + "x" * 500, version=1)
        refused: dict[str, str] | None = None
        for round_ in range(200):
            batch = {f"big{round_}-{i}": os.urandom(400).hex() for i in range(50)}
            try:
                store.set_many(batch)
            except StorageFull as exc:
                assert str(store.path) in str(exc) or "full" in str(exc).lower()
                refused = batch
                break
        assert refused is not None, "the disk never filled"
        assert_tier1_coherent(store)
        held = [key for key in refused if store.get(key) is not None]
        assert held in ([], list(refused)), "set_many half applied"
        with pytest.raises(StorageFull):
            for _ in range(20):  # deletes leave tombstones: they need space too
                store.delete_prefix("d")
        for i in range(200):  # each key either intact or a tombstone
            record = disk_record(store, f"d{i}")
            assert record is not None and record[VERSION] == 1
            assert is_tombstone(record) or record[4] == f"{i}-" + "x" * 500
        resize_tmpfs(mount, "64m")
    finally:
        try:
            store.close()
        except StorageFull:
            pass
    with open_store(path, **settings) as store:
        assert_capacity_exact(store)
        assert [k for k in refused if store.get(k) is not None] in ([], list(refused))
        store.delete_prefix("d")
        for i in range(200):
            assert store.set(f"d{i}", "old", version=1) is False
        assert_capacity_exact(store)


_KILLER = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from tierstore import TierStore
store = TierStore(sys.argv[1], sweep_interval=None, checkpoint_interval=None, disk_capacity_bytes=10**9)
delete_many = store._batch.delete_many
calls = [0]
def dying(keys):
    calls[0] += 1
    if calls[0] == 3:  # two batches are in; the third dies inside LevelDB's write
        write = store._disk.write
        def half(ops, **kw):
            ops = list(ops)
            def gen():
                for n, op in enumerate(ops):
                    if n == len(ops) // 2:
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield op
            return write(gen(), **kw)
        store._disk.write = half
    return delete_many(keys)
store._batch.delete_many = dying
store.delete_prefix("c")
"""


def test_kill_9_during_delete_prefix_leaves_each_key_deleted_or_intact(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    keys = [f"c{i:05d}" for i in range(4500)]
    with open_store(path, disk_capacity_bytes=10**9) as store:
        store.set_many({key: f"value-{key}" for key in keys[::2]})
        for key in keys[1::2]:
            store.set(key, f"value-{key}", version=9)
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", _KILLER, path, root], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    with open_store(path, disk_capacity_bytes=10**9) as store:
        deleted = 0
        for i, key in enumerate(keys):
            record = disk_record(store, key)
            if record is None:
                assert i % 2 == 0  # an unversioned key goes outright
                deleted += 1
            elif is_tombstone(record):
                assert i % 2 == 1 and record[VERSION] == 9
                deleted += 1
                assert store.set(key, "old", version=9) is False
            else:
                assert record[4] == f"value-{key}" and record[VERSION] == (9 if i % 2 else 0)
        assert deleted == 2000  # the two whole batches, nothing of the third
        assert_capacity_exact(store)


# -- cached -------------------------------------------------------------------------------------------------


def kind(x: Any) -> str:
    return type(x).__name__


def other_kind(x: Any) -> str:
    return "other:" + type(x).__name__


def test_cached_arguments_that_differ_never_share_an_entry(store_path: str) -> None:
    with open_store(store_path) as store:
        cached = store.cached(kind)
        assert cached((1, 2)) == "tuple"
        assert cached([1, 2]) == "list"  # (1, 2) != [1, 2]: not the tuple's entry
        assert cached(((1,), [2])) == "tuple" and cached([[1], (2,)]) == "list"
        assert cached(x=(1,)) == "tuple" and cached(x=[1]) == "list"
        assert cached.key((1, 2)) != cached.key([1, 2])
        assert cached(1) == "int" and cached(1.0) == "float" and cached(True) == "bool"
        assert cached("a") == "str" and cached(b"a") == "bytes"
        other = store.cached(other_kind)
        assert other((1, 2)) == "other:tuple"  # two functions never share keys
        assert cached.cache_clear() == 11 and other.cache_clear() == 1


def test_cached_methods_invalidate_and_key_their_own_bound_call(store_path: str) -> None:
    with open_store(store_path) as store:
        loads: list[Any] = []

        class Repo:
            def __init__(self, name: str) -> None:
                self.name = name

            @store.cached(key=lambda self, x: f"repo:{self.name}:{x}")
            def get(self, x: int) -> str:
                loads.append((self.name, x))
                return f"{self.name}-{x}"

        a, b = Repo("a"), Repo("b")
        assert a.get(1) == "a-1" and b.get(1) == "b-1" and a.get(1) == "a-1"
        assert a.get.key(1) == "repo:a:1" and Repo.get.key(b, 1) == "repo:b:1"
        a.get.invalidate(1)  # the bound handle knows its instance
        assert store.get("repo:a:1") is None and store.get("repo:b:1") == "b-1"
        assert a.get(1) == "a-1" and loads == [("a", 1), ("b", 1), ("a", 1)]
        assert a.get(2) == "a-2" and b.get(2) == "b-2"
        assert a.get.cache_clear() == 4  # every key its calls built shares "repo:", whatever the instance
        assert store.get("repo:a:1") is None and store.get("repo:b:2") is None
        assert a.get == a.get and a.get != b.get and len({a.get, a.get, b.get}) == 2  # as bound methods
        assert list(inspect.signature(a.get).parameters) == ["x"]  # as a bound method's
        assert list(inspect.signature(Repo.get).parameters) == ["self", "x"]


class Pickled:
    """A module-level class whose cached method is set by the test (methods pickle by reference)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return Pickled, (self.name,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pickled) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def rebuilt(obj: Any) -> Any:
    """``obj`` sent and received as a pickler would, without one (no pickle in the tests): its reduction
    (``__reduce_ex__``), then a global looked up by module and qualified name, or a call on the arguments,
    themselves rebuilt the same way."""
    if isinstance(obj, (str, int, float, bytes, type(None))):
        return obj
    reduced = obj.__reduce_ex__(2)
    if isinstance(reduced, str):
        found: Any = sys.modules[obj.__module__]
        for part in reduced.split("."):
            found = getattr(found, part)
        return found
    make, args = reduced[0], reduced[1]
    return make(*(rebuilt(arg) for arg in args))


def test_cached_functions_and_bound_methods_pickle_by_reference(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decorated function replaces the plain one in its module: multiprocessing sends it as it sends a
    function, by its module and qualified name (its own reduction, as a pool does)."""
    with open_store(store_path) as store:
        handle = store.cached(kind)
        monkeypatch.setitem(globals(), "kind", handle)
        assert rebuilt(handle) is handle
        method = store.cached(key=lambda self, x: f"p:{self.name}:{x}")(lambda self, x: f"{self.name}{x}")
        method.__qualname__, method.__name__ = "Pickled.method", "method"
        monkeypatch.setattr(Pickled, "method", method, raising=False)
        bound = Pickled("a").method  # type: ignore[attr-defined]
        again = rebuilt(bound)
        assert again.__func__ is method and again.__self__ == Pickled("a")
        assert again(1) == "a1" and store.get("p:a:1") == "a1"


def test_cached_refuses_what_it_cannot_key_clearly(store_path: str) -> None:
    with open_store(store_path) as store:
        cached = store.cached(kind)
        with pytest.raises(TypeError, match="cannot build a cache key"):
            cached({1, 2})
        with pytest.raises(TypeError, match="cannot build a cache key"):
            cached.invalidate(object())
        with pytest.raises(TypeError, match="name="):
            store.cached(lambda x: x)

        class Thing:
            @store.cached(name="thing")
            def method(self, x: int) -> int:
                return x

        with pytest.raises(TypeError, match="cannot build a cache key"):
            Thing().method(1)
        assert len(store) == 0


def test_cached_refuses_at_decoration_a_function_whose_name_leaves_no_room_for_a_key(store_path: str) -> None:
    def long_named(x: int) -> int:
        return x

    long_named.__qualname__ = "f" * 4090
    with open_store(store_path) as store:
        with pytest.raises(ValueError, match="name="):
            store.cached(long_named)
        renamed = store.cached(name="short")(long_named)
        assert renamed("x" * 5000) == "x" * 5000  # a long argument: its hash keys it
        assert len(renamed.key("x" * 5000)) < 4096


def test_a_cached_function_over_another_keeps_its_own_handle(store_path: str) -> None:
    """``update_wrapper`` copies the wrapped function's ``__dict__``: the inner handle's ``key`` and
    call must not replace the outer one's."""
    with open_store(store_path) as store:
        loads: list[int] = []

        def square(x: int) -> int:
            loads.append(x)
            return x * x

        inner = store.cached(name="inner")(square)
        outer = store.cached(name="outer", ttl=100)(inner)
        assert outer.key(3).startswith(b"outer:") and inner.key(3).startswith(b"inner:")
        assert outer(3) == 9 and loads == [3]
        assert store.get(outer.key(3)) == 9 and store.get(inner.key(3)) == 9
        outer.invalidate(3)
        assert store.get(outer.key(3)) is None and store.get(inner.key(3)) == 9
        assert outer(3) == 9 and loads == [3]  # the inner entry answers
        assert outer.cache_clear() == 1 and inner.cache_clear() == 1
        assert outer.__wrapped__ is inner and outer.__name__ == "square"  # type: ignore[attr-defined]


def test_cached_invalidate_with_the_call_s_arguments_and_kwargs_in_any_order(store_path: str) -> None:
    with open_store(store_path) as store:
        loads: list[Any] = []

        @store.cached(name="pair")
        def pair(a: int, b: int = 0, c: int = 0) -> int:
            loads.append((a, b, c))
            return a + 10 * b + 100 * c

        assert pair(1, b=2, c=3) == 321 and pair(1, c=3, b=2) == 321 and len(loads) == 1
        pair.invalidate(1, c=3, b=2)
        assert pair(1, b=2, c=3) == 321 and len(loads) == 2

        @store.cached(name="pai")
        def shorter(a: int) -> int:
            return -a

        @store.cached(name="pair:x")
        def longer(a: int) -> int:
            return a * 1000

        assert shorter(1) == -1 and longer(1) == 1000
        assert pair.cache_clear() == 1
        assert shorter(1) == -1 and store.get(longer.key(1)) == 1000 and store.get(shorter.key(1)) == -1


def test_cached_handles_in_a_forked_child_raise_and_the_parent_keeps_its_entries(store_path: str) -> None:
    from tests.faults.test_faults_process import in_child

    with open_store(store_path) as store:

        class Repo:
            @store.cached(key=lambda self, x: f"repo:{x}")
            def get(self, x: int) -> int:
                return x * 2

        named = store.cached(name="named")(kind)
        repo = Repo()
        assert repo.get(1) == 2 and named(1) == "int"
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("call", lambda: named(2)),
            ("hit", lambda: named(1)),
            ("invalidate", lambda: named.invalidate(1)),
            ("cache_clear", named.cache_clear),
            ("bound call", lambda: repo.get(1)),
            ("bound invalidate", lambda: repo.get.invalidate(1)),
            ("len", lambda: len(store)),
            ("get_many", lambda: store.get_many([named.key(1)])),
        ]
        assert in_child(calls) == {name: "StoreForked" for name, _ in calls}
        assert store.get(named.key(1)) == "int" and store.get("repo:1") == 2
        assert named.key(2) == named.key(2)  # building a key touches no store
        assert named.cache_clear() == 1 and len(store) == 1


# -- len ---------------------------------------------------------------------------------------------------------


def test_len_counts_only_live_non_negative_entries_and_never_raises_under_writes(store_path: str) -> None:
    clock = FakeClock()
    with open_store(store_path, clock=clock, memory_items=8) as store:
        store.set_many({f"l{i}": i for i in range(10)})
        store.set("neg", ABSENT)
        store.set("exp", 1, ttl=1)
        store.set("tomb", 1, version=3)
        store.delete("tomb")
        clock.advance(2)
        assert len(store) == 10 and bool(store) is True
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer(seed: int) -> None:
            rng = random.Random(seed)
            try:
                while not stop.is_set():
                    key, op = f"w{rng.randrange(50)}", rng.randrange(4)
                    if op == 0:
                        store.set_many({key: 1, f"{key}x": 2})
                    elif op == 1:
                        store.delete_many([key, f"{key}x"])
                    elif op == 2:
                        store.pop(key, None)
                    else:
                        store.delete_prefix("w1")
            except BaseException as exc:  # pragma: no cover - the failure is reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(200):
                assert 10 <= len(store) <= 110
        finally:
            stop.set()
            for thread in threads:
                thread.join(WAIT)
        assert errors == []
        store.delete_prefix("w")
        assert len(store) == 10
        store.clear()
        assert len(store) == 0 and bool(store) is True


# -- the thread hammer ----------------------------------------------------------------------------------------


def test_threads_mixing_every_call_keep_both_tiers_versions_and_stats_consistent(store_path: str) -> None:
    keys: list[str | bytes] = [f"h{i}" for i in range(12)] + [b"h1", b"h2"]
    with open_store(store_path, memory_items=6, memory_admission="always", disk_capacity_bytes=10**9) as store:
        stop = threading.Event()
        errors: list[BaseException] = []
        top = {key: 0 for key in keys}  # the highest version ever accepted per key
        top_lock = threading.Lock()
        barrier = threading.Barrier(6)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            barrier.wait(WAIT)
            try:
                for n in range(400):
                    key = rng.choice(keys)
                    op = rng.randrange(12)
                    if op == 0:
                        version = rng.randint(1, 40)
                        if store.set(key, n, version=version):
                            with top_lock:
                                top[key] = max(top[key], version)
                    elif op == 1:
                        store.set_many({rng.choice(keys): n for _ in range(4)}, ttl=rng.choice([None, 100]))
                    elif op == 2:
                        store.delete_many(rng.sample(keys, 3))
                    elif op == 3:
                        store.pop(key, None)
                    elif op == 4:
                        version = rng.randint(1, 40)
                        if store.add(key, n, version=version):
                            with top_lock:
                                top[key] = max(top[key], version)
                    elif op == 5:
                        store.touch(key, ttl=rng.choice([None, 50]))
                    elif op == 6:
                        store.get_many(keys)
                    elif op == 7:
                        store.delete_prefix(rng.choice(["h1", b"h", "h"]))
                    elif op == 8:
                        store.get_or_load(key, functools.partial(int, n))
                    elif op == 9:
                        len(store)
                    elif op == 10:
                        store.get(key)
                    elif rng.random() < 0.1:
                        store.clear()
            except BaseException as exc:
                errors.append(exc)

        went_back: list[str] = []

        def watcher() -> None:  # versions read anywhere (tier 1 or 2) never go back
            highest = dict.fromkeys(keys, 0)
            while not stop.is_set():
                for key in keys:
                    record = store._read(key)
                    version = 0 if record is None else record[VERSION]
                    if version < highest[key]:
                        went_back.append(f"{key!r}: {version} after {highest[key]}")
                    highest[key] = max(highest[key], version)

        watching = threading.Thread(target=watcher)
        watching.start()
        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive(), "a call deadlocked"
        stop.set()
        watching.join(WAIT)
        assert errors == [] and went_back == []
        assert_tier1_coherent(store)
        assert_capacity_exact(store)
        assert_indexed(store)
        for key in keys:  # a version accepted is never lost (tombstones live a day)
            record = disk_record(store, key)
            assert record is not None or top[key] == 0, key
            if record is not None:
                assert record[VERSION] >= top[key], key
        stats = store.stats()
        assert stats["memory_items"] <= 6 and min(v for v in stats.values() if isinstance(v, int)) >= 0


def test_a_set_that_fails_on_a_full_disk_still_detaches_the_load_in_flight(
    tmpfs: Callable[[str], Path],
) -> None:
    """The set was attempted (the caller may have updated the source first): a load that read the
    source before it must not land afterwards, even though the set itself raised ``StorageFull``."""
    mount = tmpfs("2m")
    store = open_store(str(mount / "store"), memory_items=10)
    try:
        gate, started = threading.Event(), threading.Event()

        def load() -> str:
            started.set()
            assert gate.wait(WAIT)
            return "read before the set"

        reader, out = start(lambda: store.get_or_load("k", load))
        assert started.wait(WAIT)
        with pytest.raises(StorageFull):
            for i in range(10_000):
                store.set(f"other{i}", f"{i}-" + os.urandom(2000).hex())
        with pytest.raises(StorageFull):
            store.set("k", "new")
        resize_tmpfs(mount, "64m")
        gate.set()
        reader.join(WAIT)
        assert out == ["read before the set"]  # its own caller gets it
        assert store.stats()["fills_rejected"] == 1
        assert store.get("k") != "read before the set"
    finally:
        try:
            store.close()
        except StorageFull:
            pass
