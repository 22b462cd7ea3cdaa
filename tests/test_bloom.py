"""BloomFilter: sizing, accuracy, keys, serialization and its rejection of malformed data."""

from __future__ import annotations

import hashlib
import math
import os
import random
import struct
import threading

import pytest

from tierstore import BloomFilter
from tierstore.bloom import optimal_nbits, probe_positions
from tierstore.codec import encode_key

_HEADER = struct.Struct("<4sBHIQdQQ")  # the documented layout, rebuilt here to forge records


def formula_bits(capacity: int, error_rate: float) -> float:
    return -capacity * math.log(error_rate) / math.log(2) ** 2


def forge(
    magic: bytes, fmt: int, nhashes: int, seed: int, capacity: int, rate: float, nbits: int, count: int, bits: bytes
) -> bytes:
    """A record with a valid checksum over whatever fields it is given."""
    body = _HEADER.pack(magic, fmt, nhashes, seed, capacity, rate, nbits, count) + bits
    return body + hashlib.blake2b(body, digest_size=16).digest()


# -- sizing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "error_rate"), [(100, 0.01), (1000, 0.05), (10_000, 0.001), (1_000_000, 0.01), (50, 1e-9)]
)
def test_sizing_follows_the_textbook_formulas(capacity: int, error_rate: float) -> None:
    bloom = BloomFilter(capacity, error_rate)
    optimum = formula_bits(capacity, error_rate)
    assert optimum <= bloom.nbits <= 1.1 * optimum
    assert bloom.nbits == optimal_nbits(capacity, error_rate)
    assert bloom.nhashes == round(bloom.nbits / capacity * math.log(2))
    assert (bloom.capacity, bloom.error_rate, len(bloom)) == (capacity, error_rate, 0)


def test_one_percent_at_a_million_keys_takes_9_6_bits_per_key_and_7_probes() -> None:
    bloom = BloomFilter(1_000_000, 0.01)
    assert 9.58 < bloom.nbits / 1_000_000 < 9.59
    assert bloom.nhashes == 7


@pytest.mark.parametrize(("error_rate", "seed"), [(0.01, 1), (0.05, 2), (0.01, None)])
def test_measured_false_positive_rate_at_capacity_is_near_the_target(error_rate: float, seed: int | None) -> None:
    capacity = 100_000
    bloom = BloomFilter(capacity, error_rate, seed=seed)
    bloom.update(f"present:{i}" for i in range(capacity))
    assert all(f"present:{i}" in bloom for i in range(capacity))
    false_positives = sum(f"absent:{i}" in bloom for i in range(100_000))
    assert false_positives / 100_000 <= 1.25 * error_rate
    assert false_positives > 0.5 * error_rate * 100_000  # it is a Bloom filter, not a set
    assert 0.8 * error_rate < bloom.estimated_error_rate() < 1.2 * error_rate


def test_estimated_error_rate_grows_with_keys_not_with_repeats() -> None:
    bloom = BloomFilter(1000, 0.01, seed=3)
    assert bloom.estimated_error_rate() == 0.0
    bloom.update(str(i) for i in range(500))
    half = bloom.estimated_error_rate()
    assert 0 < half < 0.01
    bloom.update(str(i) for i in range(500))
    assert bloom.estimated_error_rate() == half
    bloom.update(str(i) for i in range(2000))
    assert bloom.estimated_error_rate() > 2 * 0.01


# -- keys ---------------------------------------------------------------------------------


def test_added_keys_are_in_and_others_are_not() -> None:
    bloom = BloomFilter(10_000, 0.001)
    keys = ["", "a", "ключ", "x" * 4000, b"", b"a", b"\x00\xff" * 100]
    for key in keys:
        assert key not in bloom
        bloom.add(key)
        assert key in bloom
    assert "b" not in bloom and b"b" not in bloom


def test_str_and_bytes_keys_are_different_keys() -> None:
    bloom = BloomFilter(10_000, 0.0001, seed=11)
    bloom.add("a")
    bloom.add(b"b")
    assert "a" in bloom and b"a" not in bloom
    assert b"b" in bloom and "b" not in bloom


def test_len_counts_each_key_once_and_add_says_whether_it_was_new() -> None:
    bloom = BloomFilter(1000, 0.01)
    assert bloom.add("k") is True
    assert bloom.add("k") is False
    assert bloom.update(["k", "l", "m", "l"]) == 2
    assert len(bloom) == 3
    assert bloom.bits_set <= 3 * bloom.nhashes


def test_update_validates_every_key_before_adding_any() -> None:
    bloom = BloomFilter(1000, 0.01)
    with pytest.raises(TypeError, match="int"):
        bloom.update(["good", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="4096"):
        bloom.update(["good", b"x" * 5000])
    assert len(bloom) == 0 and bloom.bits_set == 0 and "good" not in bloom


@pytest.mark.parametrize("single", ["abc", b"abc"])
def test_update_refuses_a_single_key_rather_than_admitting_its_characters(single: str | bytes) -> None:
    bloom = BloomFilter(1000, 0.01)
    with pytest.raises(TypeError, match=r"\[key\]"):
        bloom.update(single)
    assert len(bloom) == 0 and bloom.bits_set == 0
    assert bloom.update([single]) == 1 and single in bloom


@pytest.mark.parametrize("key", [1, 1.5, None, ("a",), bytearray(b"a")])
def test_keys_other_than_str_and_bytes_are_type_errors(key: object) -> None:
    bloom = BloomFilter(10, 0.1)
    with pytest.raises(TypeError, match="str or bytes"):
        bloom.add(key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or bytes"):
        key in bloom  # noqa: B015
    assert len(bloom) == 0


def test_keys_past_the_store_limit_or_not_unicode_are_value_errors() -> None:
    bloom = BloomFilter(10, 0.1)
    with pytest.raises(ValueError, match="4096"):
        bloom.add("é" * 3000)
    with pytest.raises(ValueError, match="Unicode"):
        bloom.add("\ud800")
    assert len(bloom) == 0


def test_concurrent_adds_lose_no_key() -> None:
    bloom = BloomFilter(40_000, 0.01)
    barrier = threading.Barrier(4)

    def adder(worker: int) -> None:
        barrier.wait()
        for i in range(10_000):
            bloom.add(f"{worker}:{i}")

    threads = [threading.Thread(target=adder, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(f"{w}:{i}" in bloom for w in range(4) for i in range(10_000))
    assert bloom.bits_set == BloomFilter.from_bytes(bloom.to_bytes()).bits_set


# -- parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "error_rate", "named"),
    [
        (0, 0.01, "capacity"),
        (-5, 0.01, "capacity"),
        (10, 0.0, "error_rate"),
        (10, 1.0, "error_rate"),
        (10, -0.1, "error_rate"),
        (10, 1.5, "error_rate"),
        (10, math.nan, "error_rate"),
        (10**12, 0.01, "capacity 1000000000000 at error_rate 0.01 needs"),  # 1.2 TB: a MemoryError
        (10**30, 0.01, "capacity"),  # an OverflowError from bytearray
        (10**400, 0.01, "capacity an int of 1329 bits"),  # an OverflowError from float()
        pytest.param(-(10**5000), 0.01, "capacity must be > 0, got a negative int", id="-10**5000"),  # str() fails
        (10**9, 1e-300, "8 GiB"),
    ],
)
def test_out_of_range_parameters_are_value_errors(capacity: int, error_rate: float, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        BloomFilter(capacity, error_rate)


@pytest.mark.parametrize(
    ("capacity", "error_rate", "named"),
    [
        (10.0, 0.01, "capacity"),
        ("10", 0.01, "capacity"),
        (True, 0.01, "capacity"),
        (10, "0.01", "error_rate"),
        (10, None, "error_rate"),
        (10, True, "error_rate"),
    ],
)
def test_wrongly_typed_parameters_are_type_errors(capacity: object, error_rate: object, named: str) -> None:
    with pytest.raises(TypeError, match=named):
        BloomFilter(capacity, error_rate)  # type: ignore[arg-type]


def test_seed_is_drawn_per_filter_and_checked_when_given() -> None:
    seeds = {BloomFilter(10, 0.1).seed for _ in range(8)}
    assert len(seeds) > 1
    assert BloomFilter(10, 0.1, seed=0).seed == 0
    assert BloomFilter(10, 0.1, seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ValueError, match="seed"):
        BloomFilter(10, 0.1, seed=2**32)
    with pytest.raises(ValueError, match="seed"):
        BloomFilter(10, 0.1, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        BloomFilter(10, 0.1, seed="1")  # type: ignore[arg-type]


def test_the_seed_moves_every_key_bits() -> None:
    keys = [f"k{i}" for i in range(100)]
    first, second, again = (
        BloomFilter(1000, 0.01, seed=1),
        BloomFilter(1000, 0.01, seed=2),
        BloomFilter(1000, 0.01, seed=1),
    )
    for bloom in (first, second, again):
        bloom.update(keys)
    assert first.to_bytes() == again.to_bytes()
    assert first.to_bytes()[_HEADER.size : -16] != second.to_bytes()[_HEADER.size : -16]


# -- serialization ------------------------------------------------------------------------------


def test_round_trip_keeps_parameters_bits_and_membership() -> None:
    bloom = BloomFilter(5000, 0.02)
    bloom.update(f"k{i}" for i in range(3000))
    data = bloom.to_bytes()
    loaded = BloomFilter.from_bytes(data)
    assert loaded.to_bytes() == data
    assert (loaded.capacity, loaded.error_rate, loaded.nbits, loaded.nhashes, loaded.seed, len(loaded)) == (
        bloom.capacity,
        bloom.error_rate,
        bloom.nbits,
        bloom.nhashes,
        bloom.seed,
        len(bloom),
    )
    assert loaded.estimated_error_rate() == bloom.estimated_error_rate()
    assert all(f"k{i}" in loaded for i in range(3000))
    assert [f"x{i}" in loaded for i in range(3000)] == [f"x{i}" in bloom for i in range(3000)]
    loaded.add("later")
    assert "later" in loaded and "later" not in bloom
    assert BloomFilter.from_bytes(bytearray(data)).to_bytes() == data
    assert BloomFilter.from_bytes(memoryview(data)).to_bytes() == data


def test_from_bytes_needs_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        BloomFilter.from_bytes("TSBF")  # type: ignore[arg-type]


def _small_record() -> bytes:
    bloom = BloomFilter(20, 0.1, seed=5)
    bloom.update(["a", "b", "c"])
    return bloom.to_bytes()


def test_every_truncation_is_rejected() -> None:
    data = _small_record()
    for length in range(len(data)):
        with pytest.raises(ValueError):
            BloomFilter.from_bytes(data[:length])


def test_every_flipped_byte_is_rejected() -> None:
    data = _small_record()
    for index in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[index] ^= flip
            with pytest.raises(ValueError):
                BloomFilter.from_bytes(bytes(damaged))


def test_appended_bytes_are_rejected() -> None:
    with pytest.raises(ValueError, match="checksum"):
        BloomFilter.from_bytes(_small_record() + b"\0")


def test_random_bytes_are_rejected() -> None:
    rng = random.Random(7)
    for length in [0, 1, 10, 47, 48, 49, 64, 100, 1000]:
        for _ in range(20):
            with pytest.raises(ValueError):
                BloomFilter.from_bytes(rng.randbytes(length))
    with pytest.raises(ValueError):
        BloomFilter.from_bytes(b"TSBF" + os.urandom(100))


def test_wrong_magic_and_format_are_named() -> None:
    bits = bytes(5)
    with pytest.raises(ValueError, match="magic"):
        BloomFilter.from_bytes(forge(b"XXXX", 1, 3, 0, 20, 0.1, 40, 0, bits))
    with pytest.raises(ValueError, match="format 2"):
        BloomFilter.from_bytes(forge(b"TSBF", 2, 3, 0, 20, 0.1, 40, 0, bits))


@pytest.mark.parametrize(
    ("fields", "bits", "problem"),
    [
        ((3, 0, 0, 0.1, 40, 0), bytes(5), "parameters"),  # capacity 0
        ((3, 0, 20, 1.0, 40, 0), bytes(5), "parameters"),  # error rate out of range
        ((3, 0, 20, math.nan, 40, 0), bytes(5), "parameters"),
        ((0, 0, 20, 0.1, 40, 0), bytes(5), "sizes"),  # no probes
        ((3, 0, 20, 0.1, 0, 0), b"", "sizes"),  # no bits
        ((3, 0, 20, 0.1, 41, 0), bytes(5), "bytes of bits"),  # too few bytes for nbits
        ((3, 0, 20, 0.1, 39, 0), bytes(4) + b"\x80", "past nbits"),  # bit 39 is padding
        ((3, 0, 20, 0.1, 40, 4), b"\x07" + bytes(4), "counts 4 keys"),  # more keys than bits set
    ],
)
def test_consistent_checksum_but_impossible_contents_are_rejected(
    fields: tuple[int, int, int, float, int, int], bits: bytes, problem: str
) -> None:
    nhashes, seed, capacity, rate, nbits, count = fields
    with pytest.raises(ValueError, match=problem):
        BloomFilter.from_bytes(forge(b"TSBF", 1, nhashes, seed, capacity, rate, nbits, count, bits))


def test_a_forged_but_consistent_record_loads() -> None:
    """The forging helper writes the real layout: the rejections above are about contents."""
    loaded = BloomFilter.from_bytes(forge(b"TSBF", 1, 3, 9, 20, 0.1, 40, 1, b"\x07" + bytes(4)))
    assert (loaded.nbits, loaded.nhashes, loaded.seed, len(loaded), loaded.bits_set) == (40, 3, 9, 1, 3)


def test_probe_positions_are_the_bits_a_filter_sets() -> None:
    """The positions the shared tier's Redis bitmap sets are the ones the filter itself sets."""
    for key in ("a", b"a", "\u00e9" * 40, b""):
        bloom = BloomFilter(1000, 0.01, seed=1234)
        bloom.add(key)
        bits = bloom.bit_array()
        positions = probe_positions(encode_key(key), 1234, bloom.nbits, bloom.nhashes)
        assert len(positions) == bloom.nhashes
        set_bits = {i for i in range(bloom.nbits) if bits[i >> 3] >> (i & 7) & 1}
        assert set_bits == set(positions)
