"""Tier-1 races, forced deterministically: a reader runs at every step of a writer, and back.

``at_every_step`` runs a callable at each Python-level event (call, return, C
call) of the code under test in this thread, as a thread switch could at that
point; profiling is off inside the callback, so the interleaved code runs
whole. Nothing depends on timing.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tierstore import TierStore
from tierstore.codec import VALUE, Record


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


@pytest.mark.parametrize("memory_bytes", [None, 400])
def test_a_reader_at_every_step_of_an_evicting_write_breaks_nothing(store_path: str, memory_bytes: int | None) -> None:
    """cachetools' eviction iterates the order in Python: a read's move_to_end between ``iter`` and
    ``next`` raised RuntimeError out of ``set`` after tier 2 was written, and tier 1 kept the old value."""
    with TierStore(store_path, memory_items=8, memory_bytes=memory_bytes) as store:
        for i in range(8):
            store.set(f"k{i}", i)
        held = [f"k{i}" for i in range(8)]

        def read_all() -> None:
            if store._memory._lock.locked():  # this thread holds it: a reader thread would wait, then run
                return
            for key in held:
                store.get(key)

        for round_ in range(20):
            key = f"n{round_}"
            with at_every_step(read_all) as steps:
                assert store.set(key, round_) is True
                assert store.set(held[round_ % 8], -round_) is True  # overwrite: the old value must go
            assert steps[0] > 20  # the reader really ran inside the writes
            assert store.get(key) == round_
            assert store.get(held[round_ % 8]) == -round_
        stats = store.stats()
        assert stats["memory_items"] <= 8
        if memory_bytes is not None:
            assert 0 < stats["memory_bytes"] <= memory_bytes


def test_a_writer_at_every_step_of_a_read_never_lets_an_older_value_back(store_path: str) -> None:
    """A reader fetching from tier 2 while writes land must never make tier 1 serve an older value."""
    with TierStore(store_path, memory_items=4) as store:
        store.set("k", 0)
        for i in range(10):
            store.set(f"pad{i}", i)  # k is evicted: reads of k go to tier 2 and promote
        assert store.stats()["memory_items"] <= 4
        counter = [0]
        seen: list[int] = []

        def write_next() -> None:
            counter[0] += 1
            store.set("k", counter[0])
            seen.append(store.get("k"))  # a reader after the write returned sees it, or newer

        for _ in range(5):
            store._memory.discard("k", store._stripes.of("k"))  # force the next read through tier 2 (and its promotion)
            with at_every_step(write_next):
                value = store.get("k")
            assert value is not None
            final = store.get("k")
            assert final == counter[0], f"tier 1 serves {final} after {counter[0]} was written"
        assert seen == sorted(seen) and len(set(seen)) == len(seen)


def test_a_writer_paused_between_its_tiers_never_shows_new_then_old(store_path: str) -> None:
    """The interleaving: a slow reader fetched "old" from tier 2 before a write; the writer is paused
    after tier 2 and before tier 1; a fast reader fetches "new" from tier 2, and before it can promote
    it the slow reader promotes "old". The fast reader returns "new"; no later read may return "old"
    (it did while the write epoch changed only at the end of a write)."""
    with TierStore(store_path, memory_items=4, memory_admission="always") as store:
        store.set("k", "old")
        for i in range(8):
            store.set(f"pad{i}", i)  # k leaves tier 1: its reads go to tier 2
        memory = store._memory
        assert memory.get("k") is None
        real_put, real_promote = memory.put, store._admit  # the store's promotion, past admission
        slow_fetched, slow_go = threading.Event(), threading.Event()
        writer_paused, writer_go = threading.Event(), threading.Event()
        calls: list[str] = []

        def promote_in_order(key: Any, record: Record, stripe: int, epoch: int) -> bool:
            if key != "k":
                return real_promote(key, record, stripe, epoch)
            calls.append(record[VALUE])
            if len(calls) == 1:  # the slow reader, holding "old": wait for the fast one
                slow_fetched.set()
                assert slow_go.wait(10)
            elif len(calls) == 2:  # the fast reader, holding "new": let the slow one promote first
                slow_go.set()
                slow_reader.join(10)
            return real_promote(key, record, stripe, epoch)

        def put_late(key: Any, record: Any, stripe: int) -> None:
            if key == "k":
                writer_paused.set()
                assert writer_go.wait(10)
            real_put(key, record, stripe)

        store._admit = promote_in_order
        memory.put = put_late  # type: ignore[method-assign]
        slow_reader = threading.Thread(target=lambda: store.get("k"))
        slow_reader.start()
        assert slow_fetched.wait(10)
        writer = threading.Thread(target=lambda: store.set("k", "new"))
        writer.start()
        assert writer_paused.wait(10)
        observed = [store.get("k"), store.get("k")]
        writer_go.set()
        writer.join(10)
        observed.append(store.get("k"))
        memory.put, store._admit = real_put, real_promote  # type: ignore[method-assign]
        assert calls[:2] == ["old", "new"]
        assert observed == ["new", "new", "new"]
