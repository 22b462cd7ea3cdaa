"""Counters: atomic under threads, durable, in their own namespace, with a signed 64-bit range."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgpack
import pytest

from tierstore import StoreClosed, TierStore
from tierstore._plyvel import plyvel
from tierstore.counters import COUNTER_MAX, COUNTER_MIN, counter_key, counter_name, decode_count
from tierstore.errors import CorruptRecord
from tierstore.keyspace import NS_COUNTER


@pytest.fixture
def store(store_path: str) -> Iterator[TierStore]:
    with TierStore(store_path) as opened:
        yield opened


def test_untouched_counter_reads_zero(store: TierStore) -> None:
    assert store.counter("never") == 0
    assert store.counter(b"never") == 0


def test_incr_and_decr_return_the_new_count(store: TierStore) -> None:
    assert store.incr("hits") == 1
    assert store.incr("hits", 5) == 6
    assert store.decr("hits") == 5
    assert store.decr("hits", 7) == -2
    assert store.incr("hits", -3) == -5
    assert store.counter("hits") == -5


def test_str_and_bytes_names_are_different_counters(store: TierStore) -> None:
    store.incr("a", 2)
    store.incr(b"a", 3)
    assert store.counter("a") == 2
    assert store.counter(b"a") == 3


def test_counter_and_cached_value_with_one_name_do_not_interfere(store: TierStore) -> None:
    store.set("views", "cached")
    assert store.incr("views", 10) == 10
    assert store.get("views") == "cached"
    assert store.delete("views")
    assert store.counter("views") == 10
    assert list(store.keys()) == []
    store.set("views", 1)
    assert store.counter("views") == 10


@pytest.mark.parametrize("delta", [1.0, True, False, "1", None, 2**0.5])
def test_non_int_delta_is_a_type_error_and_changes_nothing(store: TierStore, delta: object) -> None:
    store.incr("n", 4)
    with pytest.raises(TypeError, match="delta"):
        store.incr("n", delta)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="delta"):
        store.decr("n", delta)  # type: ignore[arg-type]
    assert store.counter("n") == 4


def test_counter_keys_follow_the_store_key_rules(store: TierStore) -> None:
    with pytest.raises(TypeError, match="keys must be str or bytes"):
        store.incr(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.counter(bytearray(b"x"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        store.incr("x" * 5000)
    assert store.incr("x" * 4096) == 1


def test_signed_64_bit_range_raises_overflow_and_changes_nothing(store: TierStore) -> None:
    assert store.incr("big", COUNTER_MAX) == COUNTER_MAX
    with pytest.raises(OverflowError, match="64-bit"):
        store.incr("big")
    assert store.counter("big") == COUNTER_MAX
    assert store.decr("small", -COUNTER_MIN) == COUNTER_MIN
    with pytest.raises(OverflowError):
        store.decr("small")
    assert store.counter("small") == COUNTER_MIN
    with pytest.raises(OverflowError):
        store.incr("huge", 2**70)
    assert store.counter("huge") == 0


def test_counters_survive_reopen(store_path: str) -> None:
    with TierStore(store_path) as store:
        store.incr("a", 41)
        store.incr(b"b", -2)
    with TierStore(store_path) as store:
        assert store.incr("a") == 42
        assert store.counter(b"b") == -2


def test_eight_threads_lose_no_increment_and_the_total_survives_reopen(store_path: str) -> None:
    threads, rounds = 8, 1000
    store = TierStore(store_path)
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            start.wait()
            for _ in range(rounds):
                store.incr("total")
                store.incr("by-parity", 1 if index % 2 else -1)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert store.counter("total") == threads * rounds
    assert store.counter("by-parity") == 0
    store.close()
    with TierStore(store_path) as reopened:
        assert reopened.counter("total") == threads * rounds


def test_a_damaged_counter_record_raises_instead_of_reading_zero(store: TierStore) -> None:
    store._disk.put(NS_COUNTER + b"sbad", b"\xc1")  # 0xc1 is never valid msgpack
    store._disk.put(NS_COUNTER + b"stext", b"\xa1x")  # valid msgpack, not an int
    for key in ("bad", "text"):
        with pytest.raises(CorruptRecord, match="corrupt"):
            store.counter(key)
        with pytest.raises(CorruptRecord):
            store.incr(key)


def test_counters_of_a_closed_store_raise(store_path: str) -> None:
    store = TierStore(store_path)
    store.close()
    with pytest.raises(StoreClosed):
        store.incr("a")
    with pytest.raises(StoreClosed):
        store.counter("a")


def test_public_decoders_read_what_counters_write(store: TierStore, store_path: str) -> None:
    store.incr("hits", 5)
    store.decr(b"\x01", 2)
    store.close()
    db = plyvel.DB(store_path)
    try:
        found = {counter_name(key): decode_count(key, data) for key, data in db.iterator(prefix=NS_COUNTER)}
        assert found == {"hits": 5, b"\x01": -2}
        assert counter_key("hits") in dict(db.iterator(prefix=NS_COUNTER))
    finally:
        db.close()


@pytest.mark.parametrize("data", [b"\xc1", msgpack.packb("5"), msgpack.packb(True), b""])
def test_decode_count_refuses_a_damaged_record(data: bytes) -> None:
    with pytest.raises(CorruptRecord, match="is corrupt"):
        decode_count(counter_key("x"), data)
