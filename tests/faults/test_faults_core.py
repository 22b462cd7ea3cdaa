"""Attacks on this session's core changes: plain values held as given, tier-1 admission and
policies, exact stats, the composed entry writes under kill -9, and the checked open.

Real stores, threads and processes; interleavings are forced with ``sys.setprofile``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.expiry_checks import assert_indexed, entries
from tests.test_crash import OPTS, _filled
from tierstore import TierStore
from tierstore.capacity import entry_size
from tierstore.codec import EXPIRES_AT, SIZE, is_tombstone, unpack_record
from tierstore.disk import DiskTier
from tierstore.errors import CorruptStore

T0 = 1_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- 4. kill -9 between the puts of a TTL'd set ------------------------------------------------

_WRITES = (DiskTier.put.__code__, DiskTier.delete.__code__, DiskTier.write.__code__)


def _targets(store: TierStore) -> None:
    store.set("new", "N1", ttl=50)  # a new key with a TTL
    store.set("plain", "P2", ttl=60)  # a key without a TTL gets one
    store.set("ttl", "T2", ttl=70)  # a TTL'd key gets a new TTL
    store.set("ttl2", "U2")  # a TTL'd key loses its TTL
    store.set("ver", "V2", ttl=80, version=7)  # versioned


def _setup(store: TierStore) -> None:
    store.set("plain", "P1")
    store.set("ttl", "T1", ttl=40)
    store.set("ttl2", "U1", ttl=45)
    store.set("ver", "V1", ttl=30, version=3)
    for i in range(5):
        store.set(f"pad{i}", "x" * 50, ttl=20 + i)


OLD = {"new": None, "plain": "P1", "ttl": "T1", "ttl2": "U1", "ver": "V1"}
NEW = {"new": "N1", "plain": "P2", "ttl": "T2", "ttl2": "U2", "ver": "V2"}


def _run_child(path: str, capacity: int | None, kill_at: int | None) -> int:
    """Fork a child that sets up a store, then runs the targets, SIGKILLed at its ``kill_at``-th disk write
    (``None``: after all of them, without a close). Returns how many disk writes the targets made."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(read)
            store = TierStore(
                path, clock=Clock(T0), disk_capacity_bytes=capacity, sweep_interval=None, checkpoint_interval=None
            )
            _setup(store)
            count = [0]

            def profile(frame: Any, event: str, arg: Any) -> None:
                if event == "call" and frame.f_code in _WRITES:
                    count[0] += 1
                    if count[0] == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)

            sys.setprofile(profile)
            _targets(store)
            sys.setprofile(None)
            os.write(write, str(count[0]).encode())
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(3)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    return int(report) if report else -1


@pytest.mark.parametrize("capacity", [None, 1_000_000])
def test_kill_9_at_every_disk_write_of_ttl_sets_keeps_entries_indexed_and_the_capacity_exact(
    tmp_path: Path, capacity: int | None
) -> None:
    total = _run_child(str(tmp_path / "count"), capacity, None)
    assert total >= len(NEW)
    for kill_at in range(1, total + 2):
        path = str(tmp_path / f"s{kill_at}")
        _run_child(path, capacity, kill_at)
        clock = Clock(T0)
        with TierStore(
            path, clock=clock, disk_capacity_bytes=capacity, sweep_interval=None, checkpoint_interval=None
        ) as store:
            for key, old in OLD.items():
                assert store.get(key) in (old, NEW[key]), (kill_at, key)
            assert_indexed(store)
            if capacity is not None:
                capacity_total = store._durability.capacity.total  # type: ignore[union-attr]
                assert capacity_total == sum(entry_size(k, d) for k, d in entries(store).items()), kill_at
            clock.now = T0 + 1000  # past every TTL
            store.sweep()
            for disk_key, data in entries(store).items():
                record = unpack_record(data)
                assert is_tombstone(record) or record[EXPIRES_AT] is None, (kill_at, disk_key, record)
            assert store.get("ttl2") in ("U2", None)
            if capacity is not None:
                capacity_total = store._durability.capacity.total  # type: ignore[union-attr]
                assert capacity_total == sum(entry_size(k, d) for k, d in entries(store).items()), kill_at


# -- 1. values that are not what they seem ---------------------------------------------------


def _shape(value: Any) -> list[Any]:
    """Types and contents, NaN made comparable, ``-0.0`` told from ``0.0``: a flat list, in
    pre-order, with each container's length. Flat, so comparing two shapes never recurses: Python
    3.12 bounds the C recursion of ``==`` on its own, whatever ``sys.setrecursionlimit`` says, and
    a nested shape of a 1,023-deep value was twice that deep."""
    shape: list[Any] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            shape.append((type(item), len(item)))
            for k, v in reversed(list(item.items())):
                pending += (v, k)
        elif isinstance(item, list | tuple):
            shape.append((type(item), len(item)))
            pending.extend(reversed(item))
        elif isinstance(item, float):
            shape.append((type(item), repr(item)))
        else:
            shape.append((type(item), item))
    return shape


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


class _Dict(dict):  # type: ignore[type-arg]
    pass


class _List(list):  # type: ignore[type-arg]
    pass


class _Str(str):
    pass


class _Int(int):
    pass


class _Float(float):
    pass


class _Bytes(bytes):
    pass


def _values() -> dict[str, Any]:
    import enum

    class Color(enum.IntEnum):
        RED = 1

    class Name(str, enum.Enum):  # noqa: UP042  (a str that is also an Enum, on purpose)
        A = "a"

    return {
        "subclasses": [_Dict(a=_List([_Str("s"), _Int(2), _Float(1.5), _Bytes(b"b")]))],
        "subclass_top": _Dict(k=1),
        "str_subclass_top": _Str("x"),
        "enums": {"c": Color.RED, "n": Name.A, Color.RED: Name.A},
        "bool_vs_int": [True, 1, False, 0, {True: 1, 0: False}],
        "floats": [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 5e-324],
        "int_edges": [2**64 - 1, -(2**63), 2**63, -1, 0],
        "mixed_keys": {1: "i", "s": 2, b"b": 3, None: 4, 1.5: 5, False: 6, -0.0 + 7: 7},
        "tuples": (1, (2, [3, (4,)]), {"t": ()}),
        "deep_1023": _deep(1023),
        "deep_dicts": {"a": {"b": {"c": [{"d": (1, 2)}]}}},
    }


def _sized(target: int) -> list[Any]:
    """A list of exact plain types whose envelope is about ``target`` bytes."""
    return ["x" * max(target - 60, 0), [1, [2, {"k": 3}]]]


@pytest.mark.parametrize("name", sorted(_values()))
@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_a_value_reads_back_hot_and_cold_with_the_same_types(tmp_path: Path, name: str, policy: str) -> None:
    _check_round_trip(tmp_path, _values()[name], policy)


def _check_round_trip(tmp_path: Path, value: Any, policy: str) -> None:
    path = str(tmp_path / "s")
    with TierStore(path, memory_policy=policy, memory_admission="always") as store:  # type: ignore[arg-type]
        assert store.set("k", value) is True
        hot = store.get("k")
        store._memory.clear()  # tier 1 forgets: the next read decodes tier 2
        cold = store.get("k")
        assert _shape(hot) == _shape(cold)
    with TierStore(path) as store:
        assert _shape(store.get("k")) == _shape(cold)


@pytest.mark.parametrize("size", [1000, 1018, 1020, 1023, 1024, 1026, 1030, 1100])
def test_values_around_the_read_back_threshold_read_back_the_same(tmp_path: Path, size: int) -> None:
    with TierStore(str(tmp_path / "s"), memory_admission="always") as store:
        for shape in (_sized(size), [_sized(size), (1, 2)], {"t": (_Int(1),), "pad": "y" * (size - 40)}):
            store.set("k", shape)
            hot = store.get("k")
            store._memory.clear()
            assert _shape(store.get("k")) == _shape(hot)


def _cyclic() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def _refused() -> dict[str, Any]:
    return {
        "int_over": [2**64],
        "int_under": {"k": -(2**63) - 1},
        "int_subclass_over": [_Int(2**64)],
        "tuple_key": {"a": [{(1, 2): 3}]},
        "deep_tuple_key": [[{"x": {((1,),): 1}}]],
        "cycle": _cyclic(),
        "deep_1024": _deep(1024),
        "deep_tuples_1024": [(_deep(1023),)],
        "set": [{1}],
        "surrogate": ["\ud800"],
        "surrogate_key": {"\udfff": 1},
        "strided_memoryview": [memoryview(b"abcdef")[::2]],
        "strided_memoryview_top": memoryview(b"abcdef")[::2],
        "strided_memoryview_in_tuple": (memoryview(b"abcdef")[::2],),
    }


@pytest.mark.parametrize("name", sorted(_refused()))
def test_a_value_tier_2_cannot_give_back_is_refused_and_nothing_stored(tmp_path: Path, name: str) -> None:
    value = _refused()[name]
    with TierStore(str(tmp_path / "s")) as store:
        store.set("k", "before")
        with pytest.raises((TypeError, ValueError, OverflowError)) as info:
            store.set("k", value)
        assert type(info.value).__module__ == "builtins", info.value  # never msgpack's own error
        assert store.get("k") == "before"
        store._memory.clear()
        assert store.get("k") == "before"
        with pytest.raises((TypeError, ValueError, OverflowError)):
            store.get_or_load("other", lambda: value)
        assert store.get("other") is None
        assert store.stats()["corrupt_records"] == 0


def test_bytearray_and_memoryview_are_held_as_given_and_read_back_as_bytes(tmp_path: Path) -> None:
    """Documented: tier 1 holds them as given; tier 2 gives bytes."""
    with TierStore(str(tmp_path / "s"), memory_admission="always") as store:
        store.set("k", [bytearray(b"ab"), memoryview(b"cd")])
        hot = store.get("k")
        assert type(hot[0]) is bytearray and type(hot[1]) is memoryview
        store._memory.clear()
        assert store.get("k") == [b"ab", b"cd"]


# -- 2. tier-1 admission and policies: the write epoch rule ------------------------------------

_TIER1 = [
    pytest.param({"memory_policy": "lfu"}, id="lfu"),
    pytest.param({"memory_policy": "fifo"}, id="fifo"),
    pytest.param({"memory_policy": "lfu", "memory_bytes": 300}, id="lfu-bytes"),
    pytest.param({"memory_policy": "fifo", "memory_bytes": 300}, id="fifo-bytes"),
    pytest.param({"memory_policy": "lru", "memory_admission": "always"}, id="lru-always"),
    pytest.param({"memory_policy": "lru", "memory_items": 1}, id="lru-1"),
    pytest.param({"memory_policy": "lfu", "memory_items": 1}, id="lfu-1"),
    pytest.param({"memory_policy": "fifo", "memory_items": 1, "memory_admission": "always"}, id="fifo-1"),
    pytest.param({"memory_policy": "lfu", "memory_items": 0}, id="lfu-0"),
    pytest.param({"memory_policy": "lru", "memory_items": 0, "memory_bytes": 100}, id="lru-0-bytes"),
]


def _at_every_step(action: Callable[[], None], lock: Any) -> Callable[[Callable[[], Any]], Any]:
    """Run ``action`` at every profile event of ``call``, except while this thread holds tier 1's lock
    (another thread's write would wait for it: it runs at the first step after the release)."""

    def run(call: Callable[[], Any]) -> Any:
        def profile(frame: Any, event: str, arg: Any) -> None:
            if not lock.locked():
                action()

        sys.setprofile(profile)
        try:
            return call()
        finally:
            sys.setprofile(None)

    return run


@pytest.mark.parametrize("settings", _TIER1)
def test_a_writer_at_every_step_of_a_read_never_lets_an_older_value_back(
    tmp_path: Path, settings: dict[str, Any]
) -> None:
    settings = {"memory_items": 4, **settings}
    with TierStore(str(tmp_path / "s"), **settings) as store:
        store.set("k", 0)
        for i in range(6):
            store.set(f"pad{i}", i)
        counter = [0]
        seen: list[int] = []

        def write_next() -> None:
            counter[0] += 1
            if counter[0] % 7 == 0:
                store.delete("k")
            else:
                store.set("k", counter[0])
                seen.append(store.get("k"))  # a read after the write returned sees it, or newer

        for _ in range(6):
            store._memory.discard("k", store._stripes.of("k"))  # the next read goes through tier 2
            store.get("k")  # a first read (the doorkeeper), unhooked
            store._memory.discard("k", store._stripes.of("k"))
            _at_every_step(write_next, store._memory._lock)(lambda: store.get("k"))
            final = store.get("k")
            expected = None if counter[0] % 7 == 0 else counter[0]
            assert final == expected, f"tier 1 serves {final} after {counter[0]} was written"
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        stats = store.stats()
        assert stats["memory_items"] <= settings["memory_items"]
        if settings.get("memory_bytes") is not None:
            assert stats["memory_bytes"] <= settings["memory_bytes"]


@pytest.mark.parametrize("settings", _TIER1)
def test_threads_hammering_get_set_delete_never_see_a_value_go_back(tmp_path: Path, settings: dict[str, Any]) -> None:
    settings = {"memory_items": 8, **settings}
    keys = [f"k{i}" for i in range(12)]
    stop = threading.Event()
    errors: list[BaseException] = []
    with TierStore(str(tmp_path / "s"), **settings) as store:

        def writer(mine: list[str]) -> None:
            try:
                n = 0
                while not stop.is_set():
                    n += 1
                    for key in mine:
                        if n % 5 == 0:
                            store.delete(key)
                        else:
                            store.set(key, n)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def reader() -> None:
            try:
                last = dict.fromkeys(keys, 0)
                while not stop.is_set():
                    for key in keys:
                        value = store.get(key)
                        if value is not None:
                            assert value >= last[key], (key, value, last[key])
                            last[key] = value
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(keys[i::3],)) for i in range(3)]
        threads += [threading.Thread(target=reader) for _ in range(4)]
        for thread in threads:
            thread.start()
        stop.wait(0.25)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert not errors, errors[0]
        stats = store.stats()
        assert stats["memory_items"] <= settings["memory_items"]
        if settings.get("memory_bytes") is not None:
            assert 0 <= stats["memory_bytes"] <= settings["memory_bytes"]
            held = store._memory
            assert held.bytes == sum(record[SIZE] for record in held._data.values())
        for key in keys:  # what tier 1 holds is what tier 2 holds
            hot = store.get(key)
            store._memory.clear()
            assert store.get(key) == hot


def _pause_at(code: Any, arrived: threading.Event, go: threading.Event) -> Callable[[Any, str, Any], None]:
    """A profile function pausing this thread once, when it calls ``code``."""

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is code and not arrived.is_set():
            arrived.set()
            assert go.wait(10)

    return profile


@pytest.mark.parametrize("policy", ["lru", "lfu", "fifo"])
def test_a_reader_that_saw_the_new_value_in_tier_2_never_finds_the_previous_write_in_tier_1(
    tmp_path: Path, policy: str
) -> None:
    """A reader missed tier 1 and paused before its tier-2 fetch; meanwhile "v2" was written (tier 1
    holds it) and a writer of "v3" paused between its tiers. The reader fetches "v3" from tier 2;
    a read after it returned must not find "v2" in tier 1."""
    with TierStore(str(tmp_path / "s"), memory_policy=policy, memory_admission="always") as store:  # type: ignore[arg-type]
        store.set("k", "v1")
        store._memory.discard("k", store._stripes.of("k"))  # evicted: the next read goes to tier 2
        fetching, fetch_go = threading.Event(), threading.Event()
        writing, write_go = threading.Event(), threading.Event()
        got: list[Any] = []

        def read() -> None:
            sys.setprofile(_pause_at(store._get_record.__code__, fetching, fetch_go))  # the tier-2 read
            try:
                got.append(store.get("k"))
            finally:
                sys.setprofile(None)

        def write() -> None:
            sys.setprofile(_pause_at(type(store._memory).put.__code__, writing, write_go))
            try:
                store.set("k", "v3")
            finally:
                sys.setprofile(None)

        reader = threading.Thread(target=read)
        reader.start()
        assert fetching.wait(10)  # the reader missed tier 1 and is about to read tier 2
        store.set("k", "v2")  # a whole write: tier 1 holds "v2"
        writer = threading.Thread(target=write)
        writer.start()
        assert writing.wait(10)  # "v3" is in tier 2; tier 1 is not updated yet
        fetch_go.set()
        reader.join(10)
        assert got == ["v3"]
        after = store.get("k")  # read after a read that returned "v3"
        write_go.set()
        writer.join(10)
        assert after == "v3", f"a read after one that returned 'v3' returned {after!r}"
        assert store.get("k") == "v3"


# -- 5. the checked open looks at live tables only -----------------------------------------------


def _live_tables(working: str) -> list[str]:
    with TierStore(working, **OPTS) as store:
        live = store._disk.live_tables()
    assert live
    return [os.path.join(working, f"{number:06d}.ldb") for number in sorted(live)]


def _zero_footer(table: str) -> None:
    with open(table, "r+b") as handle:
        handle.seek(-48, os.SEEK_END)
        handle.write(b"\0" * 48)


def _remove(table: str) -> None:
    os.remove(table)


def _truncate(table: str) -> None:
    os.truncate(table, os.path.getsize(table) - 1)


LIVE_DAMAGE = {"zeroed footer": _zero_footer, "removed": _remove, "one byte short": _truncate}


@pytest.mark.parametrize("damage", sorted(LIVE_DAMAGE))
@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_damaged_live_table_is_refused_or_restored(tmp_path: Path, damage: str, checkpoint: bool) -> None:
    working, persist = str(tmp_path / "work"), str(tmp_path / "persist")
    values = _filled(working, persist if checkpoint else None)
    LIVE_DAMAGE[damage](_live_tables(working)[0])
    if not checkpoint:
        with pytest.raises(CorruptStore, match="corrupt"):
            TierStore(working, **OPTS)
        return
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        for key, value in values.items():
            assert store.get(key) == value


def _orphan_garbage(working: str) -> None:
    with open(os.path.join(working, "009999.ldb"), "wb") as handle:
        handle.write(b"\xde\xad" * 10)


def _orphan_half_copy(working: str) -> None:
    live = _live_tables(working)[0]
    with open(live, "rb") as source, open(os.path.join(working, "009998.ldb"), "wb") as target:
        target.write(source.read()[: os.path.getsize(live) // 2])


def _orphan_empty(working: str) -> None:
    open(os.path.join(working, "009997.ldb"), "wb").close()


ORPHANS = {"garbage": _orphan_garbage, "half a copy": _orphan_half_copy, "empty": _orphan_empty}


@pytest.mark.parametrize("orphan", sorted(ORPHANS))
def test_an_orphan_table_does_not_make_a_healthy_store_corrupt(tmp_path: Path, orphan: str) -> None:
    working, persist = str(tmp_path / "work"), str(tmp_path / "persist")
    values = _filled(working, persist)
    ORPHANS[orphan](working)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 0
        for key, value in values.items():
            assert store.get(key) == value
    assert sorted(os.listdir(tmp_path)) == ["persist", "work"]  # nothing moved aside


# -- 3. exact stats ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_n_threads_m_gets_count_exactly(tmp_path: Path, policy: str) -> None:
    threads_n, gets_m = 8, 3000
    errors: list[BaseException] = []
    with (
        TierStore(str(tmp_path / "s"), memory_policy=policy) as store,  # type: ignore[arg-type]
        TierStore(str(tmp_path / "d"), memory_items=0) as disk_only,
    ):
        store.set("hot", 1)
        disk_only.set("cold", 2)
        before, disk_before = store.stats(), disk_only.stats()
        barrier = threading.Barrier(threads_n)

        def work() -> None:
            try:
                barrier.wait()
                for i in range(gets_m):
                    assert store.get("hot") == 1
                    assert store.get("none") is None
                    assert disk_only.get("cold") == 2
                    store.set(f"w{i % 4}", i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors[0]
        after, disk_after = store.stats(), disk_only.stats()
        total = threads_n * gets_m
        assert after["hits_memory"] - before["hits_memory"] == total
        assert after["misses"] - before["misses"] == total
        assert after["sets"] - before["sets"] == total
        assert disk_after["hits_disk"] - disk_before["hits_disk"] == total
        assert after["hits_disk"] == before["hits_disk"]


def test_stats_read_while_threads_count_never_go_back(tmp_path: Path) -> None:
    with TierStore(str(tmp_path / "s")) as store:
        store.set("hot", 1)
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                store.get("hot")

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        last = 0
        for _ in range(300):
            hits = store.stats()["hits_memory"]
            assert hits >= last
            last = hits
        stop.set()
        for thread in threads:
            thread.join(10)


# -- 6. settings: keyword-only, each refused with its name, nothing on disk ----------------------

BAD_SETTINGS = [
    ("memory_items", -1, ValueError),
    ("memory_items", 1.5, TypeError),
    ("memory_items", True, TypeError),
    ("memory_items", 2**70, ValueError),
    ("memory_bytes", 0, ValueError),
    ("memory_bytes", "1", TypeError),
    ("memory_policy", "LRU", ValueError),
    ("memory_policy", None, TypeError),
    ("memory_admission", "never", ValueError),
    ("memory_admission", 1, TypeError),
    ("default_ttl", -1, ValueError),
    ("default_ttl", float("nan"), ValueError),
    ("default_ttl", "10", TypeError),
    ("ttl_jitter", float("inf"), ValueError),
    ("negative_ttl", -0.5, ValueError),
    ("stale_ttl", None, TypeError),
    ("refresh_ahead", 1.5, ValueError),
    ("early_beta", -1, ValueError),
    ("lock_timeout", 0, ValueError),
    ("guard", 1, TypeError),
    ("bloom_capacity", 0, ValueError),
    ("bloom_error_rate", 1.0, ValueError),
    ("checkpoint_interval", 0, ValueError),
    ("persist_rate", -1, ValueError),
    ("disk_capacity_bytes", -5, ValueError),
    ("disk_capacity_bytes", 1.0, TypeError),
    ("tombstone_ttl", float("nan"), ValueError),
    ("sweep_interval", -1, ValueError),
    ("max_value_bytes", 0, ValueError),
    ("max_value_bytes", 2**80, ValueError),
    ("disk_cache_bytes", -1, ValueError),
    ("clock", 5, TypeError),
]


@pytest.mark.parametrize(("name", "value", "error"), BAD_SETTINGS, ids=[f"{n}={v!r}" for n, v, _ in BAD_SETTINGS])
def test_a_bad_setting_is_refused_by_name_and_creates_nothing(
    tmp_path: Path, name: str, value: Any, error: type[Exception]
) -> None:
    path, persist = tmp_path / "a" / "store", tmp_path / "p"
    with pytest.raises(error) as info:
        TierStore(str(path), persist_path=str(persist), **{name: value})
    assert name in str(info.value)
    assert os.listdir(tmp_path) == []


def test_settings_are_keyword_only(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        TierStore(str(tmp_path / "s"), 10)  # type: ignore[misc]
    with pytest.raises(TypeError, match="memory_itmes"):
        TierStore(str(tmp_path / "s"), memory_itmes=10)  # type: ignore[call-arg]
    assert os.listdir(tmp_path) == []
