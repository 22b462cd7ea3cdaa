"""The shared tier across real processes: coherence, racing versions, deletes (a killed server: test_shared_outages).

Each store runs in its own spawned process (``workers.Worker``) over one real
redis-server (``redis_server`` fixture). A reader's observations are checked to
be non-decreasing: a process never goes back to an older value once it saw a newer one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from tests.shared.support import wait_for
from tests.shared.workers import Worker


@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
def test_readers_in_other_processes_converge_on_the_last_write_and_never_go_back(
    workers: Callable[..., Worker], versioned: bool
) -> None:
    writer = workers()
    readers = [workers() for _ in range(3)]
    last = 300
    writer.call("set", "k", 0)
    for reader in readers:
        assert reader.call("get", "k") == 0  # each holds a local copy from the start
        reader.start("read_until", "k", last, 30.0)
    landed = writer.call("write_values", "k", list(range(1, last + 1)), 0.001, versioned)
    assert landed == last
    for reader in readers:
        seen = reader.result()
        assert seen[-1] == last, seen[-10:]  # converged on the last write
        assert seen == sorted(seen), seen  # and never went back
        assert len(seen) > 2  # it saw writes while they happened, not only the end
    for reader in readers:  # later reads keep the last value: no old copy comes back
        assert [reader.call("get", "k") for _ in range(3)] == [last] * 3
        assert reader.stats()["invalidations_received"] > 0


def test_versioned_writers_racing_across_processes_end_with_the_highest_version_everywhere(
    workers: Callable[..., Worker],
) -> None:
    racers = [workers() for _ in range(4)]
    top = 300
    for attempt in range(8):  # a racer scheduled alone first can win every version: race again on a new key
        key = f"k{attempt}"
        start_at = time.time() + 1.0  # every racer is ready by then: none runs through the versions alone
        for index, racer in enumerate(racers):  # all race through the same rising versions
            racer.start("write_versions", key, list(range(1, top + 1)), f"p{index}", start_at)
        landed = [racer.result() for racer in racers]
        every = sorted(v for versions in landed for v in versions)
        assert every == list(range(1, top + 1))  # each version landed exactly once, in exactly one process
        if sum(1 for versions in landed if versions) > 1:
            break
    assert sum(1 for versions in landed if versions) > 1  # the race was real: several processes won some
    winner = next(index for index, versions in enumerate(landed) if top in versions)
    expected = ([f"p{winner}", top], top)
    for racer in [*racers, workers()]:  # every racer and a fresh process
        wait_for(lambda racer=racer: racer.call("entry", key) == expected)  # type: ignore[misc]
    for index, racer in enumerate(racers):  # shuffled older versions all lose now, everywhere
        versions = list(range(1, top))
        random.Random(index).shuffle(versions)
        racer.start("write_versions", key, versions, f"late{index}", 0.0)
    assert [racer.result() for racer in racers] == [[]] * len(racers)
    for racer in racers:
        assert racer.call("entry", key) == expected


def test_a_delete_in_one_process_is_seen_by_another(workers: Callable[..., Worker]) -> None:
    first, second = workers(), workers()
    first.call("setv", "k", "v", 7)
    assert [second.call("get", "k") for _ in range(3)] == ["v"] * 3  # cached in both tiers of the second
    assert first.call("delete", "k") is True
    wait_for(lambda: second.call("get", "k") is None)
    assert [second.call("get", "k", "gone") for _ in range(3)] == ["gone"] * 3
    assert second.call("entry", "k") is None
    assert second.call("setv", "k", "old", 7) is False  # the tombstone kept version 7 for every process
    assert second.call("setv", "k", "new", 8) is True
    wait_for(lambda: first.call("get", "k") == "new")


def test_adds_racing_across_processes_have_exactly_one_winner_per_key(workers: Callable[..., Worker]) -> None:
    racers = [workers() for _ in range(3)]
    for attempt in range(8):  # a racer scheduled alone first can add every key: race again on new keys
        keys = [f"a{attempt}:k{i}" for i in range(2000)]  # long enough that a racer scheduled late takes part
        racers[0].call("set", keys[0], "stored")  # a live entry: nobody adds over it
        start_at = time.time() + 1.0
        for index, racer in enumerate(racers):
            racer.start("add_at", keys, f"p{index}", start_at)
        won = [racer.result() for racer in racers]
        every = sorted(key for keys_won in won for key in keys_won)
        assert every == sorted(keys[1:])  # each key added exactly once, the stored one by nobody
        if sum(1 for keys_won in won if keys_won) > 1:
            break
    assert sum(1 for keys_won in won if keys_won) > 1  # the race was real
    for index, keys_won in enumerate(won):
        for racer in racers:
            for key in keys_won[:20]:
                tag = f"p{index}"
                wait_for(lambda racer=racer, key=key, tag=tag: racer.call("get", key) == tag)  # type: ignore[misc]
    assert racers[2].call("get", keys[0]) == "stored"


def test_delete_prefix_in_one_process_is_seen_by_another(workers: Callable[..., Worker]) -> None:
    first, second = workers(), workers(memory_admission="always")
    first.call("set_many", {"user:1": 1, "user:2": 2, "post:1": 3})
    for key in ("user:1", "user:2", "post:1"):
        wait_for(lambda key=key: second.call("get", key) is not None)  # type: ignore[misc]
        second.call("get", key)  # copies in both tiers
    assert first.call("delete_prefix", "user:") == 2
    wait_for(lambda: second.call("listed", None) == ["post:1"])
    wait_for(lambda: [second.call("get", key) for key in ("user:1", "user:2", "post:1")] == [None, None, 3])
    assert second.stats()["resyncs"] == 0
    assert second.call("clear") == 1
    wait_for(lambda: first.call("get", "post:1") is None)


def test_bulk_writes_in_one_process_keep_the_seq_contiguous_in_another(workers: Callable[..., Worker]) -> None:
    writer, reader = workers(), workers()
    writer.call("set", "warm", 0)
    wait_for(lambda: reader.stats()["invalidations_received"] == 1)
    writer.call("set_many", {f"k{i}": i for i in range(100)})
    assert writer.call("delete_many", [f"k{i}" for i in range(0, 100, 3)]) == 34
    assert writer.call("delete_prefix", "k1") == 8  # k1, k10..k19 but the deleted k12, k15, k18
    wait_for(lambda: reader.stats()["invalidations_received"] == 1 + 100 + 34 + 1)
    assert reader.stats()["resyncs"] == 0
    assert reader.call("listed", "k1") == []
    assert len(reader.call("listed", None)) == 100 - 34 - 8 + 1
