"""memory_policy through the store: which keys tier 1 keeps, and that its reads stay safe under threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.conftest import start
from tierstore import TierStore
from tierstore.codec import SIZE


def _tier1_keys(store: TierStore) -> set[object]:
    return set(store._memory._data)


def test_lfu_keeps_the_often_read_key_that_lru_would_drop(tmp_path: Path) -> None:
    kept = {}
    for policy in ("lru", "lfu"):
        with TierStore(str(tmp_path / policy), memory_items=3, memory_policy=policy) as store:
            store.set("hot", 0)
            for _ in range(5):
                assert store.get("hot") == 0
            for i in range(6):  # a burst of keys written once each
                store.set(f"burst{i}", i)
            kept[policy] = "hot" in _tier1_keys(store)
            assert store.get("hot") == 0  # tier 2 has it either way
    assert kept == {"lru": False, "lfu": True}


def test_fifo_evicts_in_insertion_order_whatever_is_read(tmp_path: Path) -> None:
    with TierStore(str(tmp_path / "s"), memory_items=2, memory_policy="fifo") as store:
        store.set("first", 1)
        store.set("second", 2)
        for _ in range(5):
            store.get("first")  # reads do not matter to FIFO
        store.set("third", 3)
        assert _tier1_keys(store) == {"second", "third"}
        assert store.stats()["evictions_memory"] == 1


def test_a_byte_bound_holds_with_a_policy(tmp_path: Path) -> None:
    with TierStore(str(tmp_path / "s"), memory_items=100, memory_bytes=200, memory_policy="lfu") as store:
        for i in range(20):
            store.set(f"k{i}", "x" * 40)
        stats = store.stats()
        assert 0 < stats["memory_bytes"] <= 200
        assert stats["memory_bytes"] == sum(r[SIZE] for r in store._memory._data.values())
        assert [store.get(f"k{i}") for i in range(20)] == ["x" * 40] * 20


def test_an_unknown_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="memory_policy"):
        TierStore(str(tmp_path / "s"), memory_policy="random")  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("policy", ["lfu", "fifo"])
def test_readers_and_writers_in_threads_never_break_a_policy_tier(tmp_path: Path, policy: str) -> None:
    with TierStore(str(tmp_path / "s"), memory_items=8, memory_policy=policy) as store:  # type: ignore[arg-type]
        stop = threading.Event()

        def reader() -> int:
            reads = 0
            while not stop.is_set():
                for i in range(32):
                    value = store.get(f"k{i}")
                    assert value is None or value == i
                    reads += 1
            return reads

        def writer() -> int:
            for round_ in range(200):
                for i in range(32):
                    store.set(f"k{i}", i)
                if round_ % 10 == 0:
                    store.delete(f"k{round_ % 32}")
            return 0

        readers = [start(reader) for _ in range(3)]
        writer_thread, writer_out = start(writer)
        writer_thread.join(60)
        stop.set()
        for thread, _ in readers:
            thread.join(60)
        assert writer_out == [0]
        assert all(len(out) == 1 and isinstance(out[0], int) and out[0] > 0 for _, out in readers)
        assert len(store._memory) <= 8
