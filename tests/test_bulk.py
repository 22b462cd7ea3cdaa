"""get_many, set_many, delete_many, delete_prefix, clear and len over real LevelDB directories and threads."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from tests.conftest import WAIT, FakeClock, start
from tests.expiry_checks import assert_indexed
from tierstore import ABSENT, StoreClosed, TierStore
from tierstore.codec import VERSION, encode_key, is_tombstone, unpack_record
from tierstore.keyspace import NS_ENTRY

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


def open_store(path: str, clock: FakeClock | None = None, **settings: Any) -> TierStore:
    if clock is not None:
        settings["clock"] = clock
    return TierStore(path, **{**OPTS, **settings})


def disk_record(store: TierStore, key: str | bytes) -> Any:
    data = store._disk.get(NS_ENTRY + encode_key(key))
    return None if data is None else unpack_record(data)


def entry_bytes(store: TierStore) -> int:
    return sum(len(k) + len(v) for k, v in store._disk.scan(NS_ENTRY))


def held_in_memory(store: TierStore, key: str | bytes) -> Any:
    record = store._memory.get(key)
    return None if record is None else record[4]


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


# -- get_many -------------------------------------------------------------------------------------


def test_get_many_returns_live_values_from_both_tiers(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, memory_items=2, memory_admission="always") as store:
        for i in range(5):
            store.set(f"k{i}", i)
        store.set("neg", ABSENT)
        store.set("short", 1, ttl=1)
        store.set(b"k0", "bytes")
        clock.advance(2)
        before = store.stats()
        got = store.get_many(["k0", "k1", "k4", "neg", "short", "missing", b"k0", "k0"])
        assert got == {"k0": 0, "k1": 1, "k4": 4, b"k0": "bytes"}
        after = store.stats()
        hits = (after["hits_memory"] - before["hits_memory"]) + (after["hits_disk"] - before["hits_disk"])
        assert hits == 4  # the duplicate "k0" is read once
        assert after["negative_hits"] - before["negative_hits"] == 1
        assert after["misses"] - before["misses"] == 2
        assert after["hits_disk"] > before["hits_disk"]
        assert held_in_memory(store, "k4") == 4  # promoted as get does (the last reads stay in tier 1)
        assert store.get_many([]) == {}


@pytest.mark.parametrize("keys", ["abc", b"abc", 5, None, ["a", 1], [("a",)]])
def test_get_many_refuses_bad_keys(store_path: str, keys: Any) -> None:
    with open_store(store_path) as store, pytest.raises(TypeError):
        store.get_many(keys)


# -- set_many -------------------------------------------------------------------------------------


def test_set_many_writes_everything_in_one_batch_and_keeps_versions(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, default_ttl=100, disk_capacity_bytes=10**7) as store:
        store.set("v", "old", version=5)
        store.set("t", "old", version=9)
        store.delete("t")
        writes: list[int] = []
        real_write = store._disk.write
        store._disk.write = lambda ops, **kw: (writes.append(len(list(ops))), real_write(ops, **kw))[1]  # type: ignore[method-assign]
        n = store.set_many({"v": "new", "t": "back", "a": (1, 2), b"b": ABSENT, "c": 3}, ttl=50)
        store._disk.write = real_write  # type: ignore[method-assign]
        assert n == 5 and len(writes) == 1  # one LevelDB batch
        assert store.get_many(["v", "t", "a", b"b", "c"]) == {"v": "new", "t": "back", "a": [1, 2], "c": 3}
        assert store.get_entry("v").version == 5  # type: ignore[union-attr]
        assert store.get_entry("t").version == 9  # type: ignore[union-attr]
        negative = store.get_entry(b"b")
        assert negative is not None and negative.negative
        assert store.get_entry("c").expires_at == clock.now + 50  # type: ignore[union-attr]
        assert store.set("v", "older", version=5) is False
        assert store.stats()["sets"] == 2 + 5
        assert_indexed(store)
        assert store._durability.capacity is not None and store._durability.capacity.total == entry_bytes(store)
    with open_store(store_path, clock) as store:
        assert store.get("a") == [1, 2] and store.set("t", "x", version=9) is False


@pytest.mark.parametrize("bad", [object(), {(1, 2): 3}, 2**64, "x" * 70_000])
def test_set_many_is_all_or_nothing(store_path: str, bad: Any) -> None:
    with open_store(store_path, memory_items=100, max_value_bytes=65_536) as store:
        store.set("a", "before")
        store.get("a")
        stats = store.stats()
        mapping = {"a": "after", "b": 2, "bad": bad, "c": 3}
        with pytest.raises((TypeError, ValueError, OverflowError)):
            store.set_many(mapping)
        assert store.get("a") == "before" and held_in_memory(store, "a") == "before"
        assert disk_record(store, "a")[4] == "before"
        assert disk_record(store, "b") is None and disk_record(store, "c") is None
        assert held_in_memory(store, "b") is None
        assert store.stats()["sets"] == stats["sets"]


@pytest.mark.parametrize("mapping", [[("a", 1)], "ab", None, {"a": 1, 2: 3}, {"a": 1, "x" * 5000: 2}])
def test_set_many_refuses_bad_input_before_writing(store_path: str, mapping: Any) -> None:
    with open_store(store_path) as store:
        with pytest.raises((TypeError, ValueError)):
            store.set_many(mapping)
        with pytest.raises(ValueError):
            store.set_many({"a": 1}, ttl=-1)
        assert list(store.keys()) == []


def test_set_many_detaches_loads_in_flight(store_path: str) -> None:
    with open_store(store_path) as store:
        gate = Gate("loaded")
        thread, out = start(lambda: store.get_or_load("k", gate))
        assert gate.started.wait(WAIT)
        store.set_many({"k": "written", "j": 1})
        gate.release.set()
        thread.join(WAIT)
        assert out == ["loaded"] and store.get("k") == "written"


def test_readers_never_see_new_then_old_under_set_many(store_path: str) -> None:
    with open_store(store_path, memory_items=8, memory_admission="always") as store:
        keys = [f"k{i}" for i in range(32)]
        store.set_many(dict.fromkeys(keys, 0))
        stop = threading.Event()
        violations: list[str] = []

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            seen = dict.fromkeys(keys, 0)
            while not stop.is_set():
                key = rng.choice(keys)
                value = store.get(key)
                if value is None or value < seen[key]:
                    violations.append(f"{key}: {value} after {seen[key]}")
                    return
                seen[key] = value

        readers = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
        for thread in readers:
            thread.start()
        rng = random.Random(1)
        for n in range(1, 600):
            store.set_many(dict.fromkeys(rng.sample(keys, 8), n))
        stop.set()
        for thread in readers:
            thread.join(WAIT)
        assert violations == []


def test_overlapping_multi_key_writes_never_deadlock(store_path: str) -> None:
    with open_store(store_path) as store:
        keys = [f"k{i}" for i in range(200)]
        errors: list[BaseException] = []

        def writer(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(150):
                    sample = rng.sample(keys, 30)
                    choice = rng.random()
                    if choice < 0.4:
                        store.set_many({k: seed for k in sample})
                    elif choice < 0.7:
                        store.delete_many(sample)
                    elif choice < 0.8:
                        store.delete_prefix("k1")
                    else:
                        store.set(sample[0], seed)
                        store.pop(sample[1], None)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(s,), daemon=True) for s in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "deadlock"
        assert errors == []
        for key, value in store.items():
            assert value in range(6) and key in keys


# -- delete_many ------------------------------------------------------------------------------------


def test_delete_many_counts_live_entries_and_leaves_tombstones(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, disk_capacity_bytes=10**7) as store:
        store.set("plain", 1)
        store.set("versioned", 2, version=4)
        store.set("neg", ABSENT)
        store.set("short", 1, ttl=1)
        clock.advance(2)
        gone = store.delete_many(["plain", "versioned", "neg", "short", "missing", "plain"])
        assert gone == 2  # negative, expired and missing keys do not count
        assert store.get_many(["plain", "versioned", "neg", "short"]) == {}
        assert disk_record(store, "plain") is None and disk_record(store, "neg") is None
        assert is_tombstone(disk_record(store, "versioned")) and disk_record(store, "versioned")[VERSION] == 4
        assert store.stats()["deletes"] == 5  # once per distinct key
        assert store._durability.capacity is not None and store._durability.capacity.total == entry_bytes(store)
        assert store.delete_many([]) == 0
    with open_store(store_path, clock) as store:
        assert store.set("versioned", "old", version=4) is False
        assert store.set("versioned", "new", version=5) is True


def test_delete_many_refuses_a_bad_key_before_deleting_any(store_path: str) -> None:
    with open_store(store_path) as store:
        store.set_many({"a": 1, "b": 2})
        for keys in (["a", 3, "b"], "ab", ["a", "x" * 5000]):
            with pytest.raises((TypeError, ValueError)):
                store.delete_many(keys)
        assert store.get_many(["a", "b"]) == {"a": 1, "b": 2}


# -- delete_prefix and clear ----------------------------------------------------------------------------


def test_delete_prefix_matches_by_kind_and_prefix_in_batches(store_path: str) -> None:
    with open_store(store_path, memory_items=100) as store:
        store.set_many({f"user:{i:04d}": i for i in range(2500)})
        store.set_many({b"user:1": 1, "users": 2, "user": 3, "post:1": 4})
        store.set("user:v", "x", version=3)
        store.set("user:neg", ABSENT)
        assert store.delete_prefix("user:") == 2501  # the negative entry is deleted, not counted
        assert store.get_many([b"user:1", "users", "user", "post:1"]) == {
            b"user:1": 1,
            "users": 2,
            "user": 3,
            "post:1": 4,
        }
        assert list(store.keys(prefix="user:")) == []
        assert store.get("user:0042") is None
        assert store.set("user:v", "old", version=3) is False  # a tombstone keeps the version
        assert store.delete_prefix(b"user") == 1
        assert store.delete_prefix("nothing-here") == 0
        assert len(store) == 3
    with open_store(store_path) as store:
        assert store.get("user:0042") is None and store.get(b"user:1") is None and len(store) == 3
        assert store.set("user:v", "old", version=3) is False
        assert store.set("user:v", "new", version=4) is True


def test_set_many_past_the_capacity_evicts_in_the_background(store_path: str) -> None:
    with open_store(store_path, disk_capacity_bytes=50_000) as store:
        for round_ in range(4):
            store.set_many({f"k{round_}-{i}": "x" * 500 for i in range(60)})
        assert store.drain(WAIT)
        capacity = store._durability.capacity
        assert capacity is not None and capacity.total == entry_bytes(store) <= 50_000
        assert store.stats()["evictions_disk"] > 0
        assert store.get("k3-59") == "x" * 500  # the newest writes stay


@pytest.mark.parametrize("prefix", [1, None, bytearray(b"a"), memoryview(b"a"), ["a"]])
def test_delete_prefix_refuses_what_is_not_str_or_bytes(store_path: str, prefix: Any) -> None:
    with open_store(store_path) as store:
        store.set("a", 1)
        with pytest.raises(TypeError):
            store.delete_prefix(prefix)
        with pytest.raises(ValueError):
            store.delete_prefix("a" * 5000)
        with pytest.raises(ValueError):
            store.delete_prefix("\ud800")
        assert store.get("a") == 1


@pytest.mark.parametrize("stored", [True, False])
def test_a_load_under_the_prefix_that_began_before_delete_prefix_never_lands(store_path: str, stored: bool) -> None:
    with open_store(store_path) as store:
        if stored:
            store.set("user:1", "old", version=2)
            store.delete("user:1")  # a tombstone: the load below misses and loads
        inside, outside = Gate("inside"), Gate("outside")
        t_in, out_in = start(lambda: store.get_or_load("user:1", inside))
        t_out, out_out = start(lambda: store.get_or_load("post:1", outside))
        assert inside.started.wait(WAIT) and outside.started.wait(WAIT)
        assert store.delete_prefix("user:") == 0
        inside.release.set()
        outside.release.set()
        t_in.join(WAIT)
        t_out.join(WAIT)
        assert out_in == ["inside"] and out_out == ["outside"]  # both callers get their value
        assert store.get("user:1") is None  # the one under the prefix was never stored
        assert store.get("post:1") == "outside"
        assert store.stats()["fills_rejected"] == 1
        assert store.get_or_load("user:1", lambda: "again") == "again"  # a later load stores
        assert store.get("user:1") == "again"


def test_a_load_of_a_bytes_key_is_not_detached_by_a_str_prefix(store_path: str) -> None:
    with open_store(store_path) as store:
        gate = Gate("v")
        thread, out = start(lambda: store.get_or_load(b"user:1", gate))
        assert gate.started.wait(WAIT)
        store.delete_prefix("user:")
        gate.release.set()
        thread.join(WAIT)
        assert out == ["v"] and store.get(b"user:1") == "v"


def test_clear_deletes_entries_only(store_path: str) -> None:
    with open_store(store_path, guard=True) as store:
        store.set_many({"a": 1, b"b": 2, "c": ABSENT})
        store.set("v", 1, version=6)
        store.incr("count", 5)
        store.index("board").add("m", 1.0)
        store.guard_keys(["never"])
        sets = store.stats()["sets"]
        gate = Gate("late")
        thread, out = start(lambda: store.get_or_load("never", gate))
        assert gate.started.wait(WAIT)
        assert store.clear() == 3
        gate.release.set()
        thread.join(WAIT)
        assert out == ["late"] and "never" not in store
        assert len(store) == 0 and list(store.keys()) == [] and bool(store) is True
        assert store.counter("count") == 5 and store.index("board").page() == [("m", 1.0)]
        assert store.stats()["sets"] == sets  # counters of stats stay
        assert store.set("v", 2, version=6) is False
    with open_store(store_path, guard=True) as store:
        assert len(store) == 0 and store.counter("count") == 5 and store.set("v", 2, version=6) is False
        assert len(store.index("board")) == 1


def test_len_counts_live_entries(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        assert len(store) == 0 and bool(store)
        store.set_many({"a": 1, b"a": 2, "neg": ABSENT})
        store.set("short", 1, ttl=1)
        store.set("v", 1, version=2)
        store.delete("v")
        assert len(store) == 3
        clock.advance(2)
        assert len(store) == 2


def test_bulk_calls_on_a_closed_store_raise_store_closed(store_path: str) -> None:
    store = open_store(store_path)
    store.close()
    calls = [
        lambda: len(store),
        lambda: store.get_many(["a"]),
        lambda: store.set_many({"a": 1}),
        lambda: store.delete_many(["a"]),
        lambda: store.delete_prefix("a"),
        store.clear,
    ]
    for call in calls:
        with pytest.raises(StoreClosed):
            call()
