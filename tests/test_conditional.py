"""add, touch and pop: atomic per key, the version rule, tombstones, expiry in both tiers, reopen, races."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import WAIT, FakeClock, start
from tests.expiry_checks import assert_indexed, index_records
from tierstore import ABSENT, StoreClosed, TierStore
from tierstore.codec import EXPIRES_AT, VERSION, encode_key, unpack_record
from tierstore.keyspace import NS_ENTRY

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


def open_store(path: str, clock: FakeClock | None = None, **settings: Any) -> TierStore:
    if clock is not None:
        settings["clock"] = clock
    return TierStore(path, **{**OPTS, **settings})


def disk_record(store: TierStore, key: str | bytes) -> Any:
    data = store._disk.get(NS_ENTRY + encode_key(key))
    return None if data is None else unpack_record(data)


# -- add ------------------------------------------------------------------------------------------


def test_add_stores_only_without_a_live_entry(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, negative_ttl=5) as store:
        assert store.add("k", 1) is True
        assert store.add("k", 2) is False
        assert store.get("k") == 1
        store.set("neg", ABSENT)
        assert store.add("neg", "now") is True  # a negative entry counts as absent
        assert store.get("neg") == "now"
        store.set("short", "old", ttl=1)
        clock.advance(2)
        assert store.add("short", "new") is True  # an expired entry counts as absent
        assert store.get("short") == "new"
        assert store.stats()["sets_rejected"] == 1


def test_add_keeps_the_version_rule_and_tombstones_after_reopen(store_path: str) -> None:
    with open_store(store_path) as store:
        store.set("k", "v5", version=5)
        store.delete("k")  # tombstone at 5
        assert store.add("k", "old", version=4) is False  # older than the tombstone
        assert store.add("k", "same", version=5) is False
        assert store.get("k") is None
        assert store.add("k", "plain") is True  # unversioned: keeps version 5
        entry = store.get_entry("k")
        assert entry is not None and entry.version == 5
        assert store.add("fresh", "v", version=3) is True
    with open_store(store_path) as store:
        entry = store.get_entry("k")
        assert entry is not None and (entry.value, entry.version) == ("plain", 5)
        assert store.set("fresh", "x", version=3) is False
        store.delete("fresh")
        assert store.add("fresh", "y", version=3) is False
        assert store.add("fresh", "z", version=4) is True


def test_add_racing_in_many_threads_has_exactly_one_winner(store_path: str) -> None:
    with open_store(store_path, memory_items=0) as store:  # every check reads tier 2
        for round_ in range(20):
            key = f"race-{round_}"
            barrier = threading.Barrier(12)
            results: list[tuple[int, bool]] = []

            def contender(
                n: int, key: str = key, barrier: threading.Barrier = barrier, results: list[Any] = results
            ) -> None:
                barrier.wait(WAIT)
                results.append((n, store.add(key, n)))

            threads = [threading.Thread(target=contender, args=(n,)) for n in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT)
            winners = [n for n, won in results if won]
            assert len(results) == 12 and len(winners) == 1
            assert store.get(key) == winners[0]


def test_add_detaches_a_load_in_flight(store_path: str) -> None:
    with open_store(store_path) as store:
        started, release = threading.Event(), threading.Event()

        def loader() -> str:
            started.set()
            release.wait(WAIT)
            return "loaded"

        thread, out = start(lambda: store.get_or_load("k", loader))
        assert started.wait(WAIT)
        assert store.add("k", "added") is True
        release.set()
        thread.join(WAIT)
        assert out == ["loaded"]  # returned to its caller ...
        assert store.get("k") == "added"  # ... never stored
        assert store.stats()["fills_rejected"] == 1


# -- pop ------------------------------------------------------------------------------------------


def test_pop_returns_and_deletes(store_path: str) -> None:
    with open_store(store_path) as store:
        store.set("k", [1, 2])
        assert store.pop("k") == [1, 2]
        assert store.get("k") is None and "k" not in store
        with pytest.raises(KeyError):
            store.pop("k")
        assert store.pop("k", "dflt") == "dflt"
        assert store.pop("k", None) is None
        store.set("neg", ABSENT)
        assert store.pop("neg", "dflt") == "dflt"
        assert store.get_entry("neg") is None  # the negative entry went too
        assert store.stats()["deletes"] == 5


def test_pop_leaves_a_tombstone_at_the_version_across_tiers_and_reopen(store_path: str) -> None:
    with open_store(store_path, memory_items=1) as store:
        store.set("k", "v", version=7)
        assert store.pop("k") == "v"
        store.set("other", 1)  # pushes k's tombstone out of tier 1
        assert store.set("k", "late", version=7) is False
    with open_store(store_path) as store:
        assert store.get("k") is None
        assert store.set("k", "late", version=6) is False
        assert store.set("k", "new", version=8) is True


def test_pop_racing_gives_the_value_to_exactly_one(store_path: str) -> None:
    with open_store(store_path) as store:
        for round_ in range(20):
            key = f"pop-{round_}"
            store.set(key, round_)
            barrier = threading.Barrier(12)
            results: list[Any] = []

            def popper(key: str = key, barrier: threading.Barrier = barrier, results: list[Any] = results) -> None:
                barrier.wait(WAIT)
                results.append(store.pop(key, "none"))

            threads = [threading.Thread(target=popper) for _ in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT)
            assert sorted(results, key=repr) == sorted([round_] + ["none"] * 11, key=repr)


# -- touch ----------------------------------------------------------------------------------------


def test_touch_moves_the_expiry_in_both_tiers_and_the_index(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, memory_items=1) as store:
        store.set("k", {"a": 1}, ttl=10, version=3)
        assert store.touch("k", ttl=100) is True
        hot = store.get_entry("k")
        assert hot is not None and hot.expires_at == clock.now + 100 and (hot.value, hot.version) == ({"a": 1}, 3)
        assert disk_record(store, "k")[EXPIRES_AT] == clock.now + 100
        assert_indexed(store)
        store.set("other", 1)  # k leaves tier 1
        clock.advance(50)  # past the first expiry
        assert store.sweep()["expired_purged"] == 0
        assert store.get("k") == {"a": 1}
    with open_store(store_path, clock) as store:
        entry = store.get_entry("k")
        assert entry is not None and entry.version == 3 and entry.expires_at == clock.now + 50
        clock.advance(51)
        assert store.sweep()["expired_purged"] == 1
        assert store.get("k") is None
        assert disk_record(store, "k")[VERSION] == 3  # the sweep keeps the version as a tombstone
        assert store.set("k", "x", version=3) is False


def test_touch_to_no_expiry_survives_the_sweep(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("k", 1, ttl=5)
        assert store.touch("k", ttl=None) is True
        assert disk_record(store, "k")[EXPIRES_AT] is None
        clock.advance(10)
        store.sweep()
        assert store.get("k") == 1
        assert index_records(store) == []  # the old index record was dropped by the sweep


def test_touch_refuses_what_is_not_live(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, stale_ttl=100) as store:
        assert store.touch("missing") is False
        store.set("neg", ABSENT)
        assert store.touch("neg", ttl=1000) is False
        store.set("stale", 1, ttl=1)
        clock.advance(2)
        assert store.touch("stale", ttl=1000) is False
        entry = store.get_entry("stale")
        assert entry is not None and entry.stale  # unchanged
        store.set("gone", 1, version=2)
        store.delete("gone")
        assert store.touch("gone") is False
        assert disk_record(store, "gone")[VERSION] == 2
        assert store.get_entry("neg") is not None


def test_touch_default_ttl_and_jitter(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, default_ttl=100, ttl_jitter=0.5) as store:
        store.set("k", 1, ttl=None)
        assert store.touch("k") is True
        entry = store.get_entry("k")
        assert entry is not None and entry.expires_at is not None
        assert clock.now + 100 <= entry.expires_at <= clock.now + 150


# -- bad input, closed store ------------------------------------------------------------------------


@pytest.mark.parametrize("key", [1, None, 1.5, ("a",), bytearray(b"a")])
def test_bad_keys_raise_type_error_and_change_nothing(store_path: str, key: Any) -> None:
    with open_store(store_path) as store:
        for call in (lambda: store.add(key, 1), lambda: store.touch(key), lambda: store.pop(key, None)):
            with pytest.raises(TypeError):
                call()
        assert list(store.keys()) == [] and store.stats()["sets"] == 0


def test_bad_ttls_and_versions_change_nothing(store_path: str) -> None:
    with open_store(store_path) as store:
        store.set("k", 1, ttl=10)
        before = store.get_entry("k")
        for bad, error in ((-1, ValueError), (0, ValueError), (float("nan"), ValueError), ("5", TypeError)):
            with pytest.raises(error):
                store.touch("k", ttl=bad)
            with pytest.raises(error):
                store.add("new", 1, ttl=bad)
        with pytest.raises(ValueError):
            store.add("new", 1, version=-1)
        with pytest.raises(ValueError):
            store.add("x" * 5000, 1)
        with pytest.raises(TypeError):
            store.add("new", object())
        assert store.get_entry("k") == before and "new" not in store


def test_calls_on_a_closed_store_raise_store_closed(store_path: str) -> None:
    store = open_store(store_path)
    store.set("k", 1)
    store.close()
    for call in (lambda: store.add("k", 1), lambda: store.touch("k"), lambda: store.pop("k")):
        with pytest.raises(StoreClosed):
            call()


# -- replace_value --------------------------------------------------------------------------------


def test_replace_value_keeps_the_expiry_exactly_and_the_version(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock, ttl_jitter=0.5, negative_ttl=5) as store:
        store.set("k", 1, ttl=100, version=3)
        before = disk_record(store, "k")
        clock.advance(10)
        assert store.replace_value("k", 2) is True
        after = disk_record(store, "k")
        assert after[EXPIRES_AT] == before[EXPIRES_AT] and after[VERSION] == 3
        entry = store.get_entry("k")
        assert entry is not None and entry.value == 2 and entry.expires_at == before[EXPIRES_AT]
        assert_indexed(store)
        store.set("forever", 1, ttl=None)
        assert store.replace_value("forever", [1]) is True and store.get_entry("forever").expires_at is None  # type: ignore[union-attr]
        store.set("neg", ABSENT)
        store.delete("gone")
        for key in ("missing", "neg", "gone"):
            assert store.replace_value(key, 9) is False
            assert store.get(key) is None
        clock.advance(200)  # past the jittered expiry, whatever it drew
        assert store.replace_value("k", 3) is False  # expired
        with pytest.raises(TypeError):
            store.replace_value("forever", object())
        assert store.get("forever") == [1]
    with open_store(store_path, clock) as store:
        assert store.get("forever") == [1]
    with pytest.raises(StoreClosed):
        store.replace_value("forever", 1)


def test_replace_value_detaches_a_load_in_flight(store_path: str, clock: FakeClock) -> None:
    with open_store(store_path, clock) as store:
        store.set("k", "old", ttl=10)
        clock.advance(20)  # expired: get_or_load loads
        started, release = threading.Event(), threading.Event()

        def loader() -> str:
            started.set()
            release.wait(WAIT)
            return "loaded"

        thread, out = start(lambda: store.get_or_load("k", loader))
        assert started.wait(WAIT)
        clock.advance(-20)  # live again, with no write since the load began
        assert store.replace_value("k", "replaced") is True
        release.set()
        thread.join(WAIT)
        assert out == ["loaded"]  # returned to its caller ...
        assert store.get("k") == "replaced"  # ... never stored over the new value
        assert store.stats()["fills_rejected"] == 1


# -- update_value ---------------------------------------------------------------------------------


def test_update_value_from_many_threads_loses_no_increment(store_path: str) -> None:
    with open_store(store_path, memory_items=4) as store:
        store.set("n", 0, ttl=100, version=5)
        barrier = threading.Barrier(8)

        def bump() -> None:
            barrier.wait(WAIT)
            for _ in range(200):
                assert store.update_value("n", lambda value: value + 1)
                store.set(f"other:{threading.get_ident()}", 1)  # tier 1 (4 items) keeps evicting "n"

        threads = [threading.Thread(target=bump) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        entry = store.get_entry("n")
        assert entry is not None and (entry.value, entry.version) == (1600, 5)


def test_update_value_without_a_live_entry_or_with_a_failing_update_writes_nothing(
    store_path: str, clock: FakeClock
) -> None:
    called: list[Any] = []
    with open_store(store_path, clock, negative_ttl=5) as store:
        store.set("neg", ABSENT)
        store.delete("gone")
        store.set("old", 1, ttl=1)
        clock.advance(2)
        for key in ("missing", "neg", "gone", "old"):
            assert store.update_value(key, called.append) is False
        assert called == []
        store.set("k", "text", ttl=10)
        with pytest.raises(TypeError):
            store.update_value("k", lambda value: value + 1)
        with pytest.raises(TypeError):
            store.update_value("k", lambda value: object())  # not storable: refused before any write
        assert store.get("k") == "text"
        assert store.update_value("k", lambda value: value + "!") is True and store.get("k") == "text!"
        with pytest.raises(TypeError, match="update_value needs a callable"):
            store.update_value("k", "text!!")  # type: ignore[arg-type]
        assert store.get("k") == "text!"
