"""Real threads and a real second process against one store."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from typing import Any

import pytest

from tierstore import StoreClosed, StoreLocked, TierStore

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


def test_racing_versioned_writers_leave_the_highest_version(store_path: str) -> None:
    keys = ["a", "b", "c", b"d"]
    threads_count, per_thread = 8, 400
    plans = []
    for seed in range(threads_count):
        rng = random.Random(seed)
        plans.append([(rng.choice(keys), rng.randrange(1, 100_000)) for _ in range(per_thread)])
    highest = {key: max(v for plan in plans for k, v in plan if k == key) for key in keys}
    with TierStore(store_path, memory_items=2, **OPTS) as store:
        start = threading.Barrier(threads_count)

        def writer(plan: list[tuple[Any, int]]) -> None:
            start.wait()
            for key, version in plan:
                store.set(key, f"{key!r}@{version}", version=version)
                store.get(key)  # promotions from tier 2 race with the writes too

        workers = [threading.Thread(target=writer, args=(plan,)) for plan in plans]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        hot = {key: store.get_entry(key) for key in keys}
    with TierStore(store_path, **OPTS) as store:
        for key in keys:
            entry = store.get_entry(key)
            assert entry is not None and entry.version == highest[key]
            assert entry.value == f"{key!r}@{highest[key]}"
            assert hot[key] == entry


def test_close_while_threads_read_gives_store_closed_not_a_crash(store_path: str) -> None:
    store = TierStore(store_path, memory_items=10, **OPTS)
    for i in range(2000):
        store.set(f"k{i}", i)
    reading = threading.Barrier(7)
    outcomes: list[str] = []
    lock = threading.Lock()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        reading.wait()
        try:
            while True:
                if rng.random() < 0.5:
                    store.get(f"k{rng.randrange(2000)}")
                else:
                    sum(1 for _ in store.keys(prefix="k1"))
        except StoreClosed:
            with lock:
                outcomes.append("closed")
        except Exception as exc:  # anything else is a failure of the contract
            with lock:
                outcomes.append(repr(exc))

    workers = [threading.Thread(target=reader, args=(seed,)) for seed in range(6)]
    for w in workers:
        w.start()
    reading.wait()
    store.close()
    for w in workers:
        w.join(10)
    assert outcomes == ["closed"] * 6


HOLDER = """
import sys
from tierstore import TierStore
store = TierStore(sys.argv[1], sweep_interval=None, checkpoint_interval=None)
store.set("k", "held")
print("ready", flush=True)
sys.stdin.readline()
store.close()
"""


def test_directory_held_by_another_process_is_store_locked(store_path: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLocked, match=store_path):
            TierStore(store_path, **OPTS)
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)
    with TierStore(store_path, **OPTS) as store:
        assert store.get("k") == "held"


def test_concurrent_readers_never_see_an_older_value_after_a_newer_one(store_path: str) -> None:
    """Promotion from tier 2 never puts an older record over a newer one."""
    with TierStore(store_path, memory_items=4, **OPTS) as store:
        keys = [f"k{i}" for i in range(16)]
        for key in keys:
            store.set(key, 0, version=1)
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

        workers = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
        for w in workers:
            w.start()
        for n in range(1, 3000):
            store.set(keys[n % 16], n // 16 + 1, version=n + 1)
        stop.set()
        for w in workers:
            w.join()
        assert violations == []
