"""Hypothesis properties of BloomFilter: no false negatives, ever; serialization is exact.

Capacities go down to 1, so many filters are far past capacity (nearly every bit
set): that stresses the probe arithmetic at tiny ``nbits`` where wrap-around and
a zero step are common, and still no added key may read as absent.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tierstore import BloomFilter
from tierstore.codec import MAX_KEY_BYTES

# Keys as the store accepts them: str (no lone surrogates, the default alphabet) and bytes.
KEYS = st.one_of(st.text(max_size=40), st.binary(max_size=40), st.text(min_size=900, max_size=1000))
LONG_BYTES = st.binary(min_size=MAX_KEY_BYTES - 4, max_size=MAX_KEY_BYTES)
CAPACITIES = st.integers(min_value=1, max_value=2000)
RATES = st.floats(min_value=1e-6, max_value=0.5)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


@given(keys=st.lists(st.one_of(KEYS, LONG_BYTES), max_size=60), capacity=CAPACITIES, rate=RATES, seed=SEEDS)
def test_no_false_negatives(keys: list[str | bytes], capacity: int, rate: float, seed: int) -> None:
    bloom = BloomFilter(capacity, rate, seed=seed)
    for key in keys:
        bloom.add(key)
        assert key in bloom
    assert all(key in bloom for key in keys)
    assert len(bloom) <= len(set(keys))
    assert 0.0 <= bloom.estimated_error_rate() <= 1.0


@given(keys=st.lists(KEYS, max_size=60), more=st.lists(KEYS, max_size=20), capacity=CAPACITIES, rate=RATES)
def test_round_trip_is_exact_and_the_copy_keeps_working(
    keys: list[str | bytes], more: list[str | bytes], capacity: int, rate: float
) -> None:
    bloom = BloomFilter(capacity, rate)
    bloom.update(keys)
    data = bloom.to_bytes()
    loaded = BloomFilter.from_bytes(data)
    assert loaded.to_bytes() == data
    assert (loaded.nbits, loaded.nhashes, loaded.seed, len(loaded), loaded.bits_set) == (
        bloom.nbits,
        bloom.nhashes,
        bloom.seed,
        len(bloom),
        bloom.bits_set,
    )
    assert all(key in loaded for key in keys)
    loaded.update(more)
    assert all(key in loaded for key in keys + more)


@given(keys=st.lists(KEYS, max_size=40), data=st.data())
def test_the_bits_do_not_depend_on_insertion_order(keys: list[str | bytes], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(keys))
    first, second = BloomFilter(200, 0.01, seed=42), BloomFilter(200, 0.01, seed=42)
    first.update(keys)
    second.update(shuffled)
    assert first.bits_set == second.bits_set
    assert bits_of(first) == bits_of(second)


def bits_of(bloom: BloomFilter) -> bytes:
    """The bit array inside ``to_bytes`` (between the header and the 16-byte checksum)."""
    nbytes = (bloom.nbits + 7) // 8
    return bloom.to_bytes()[-16 - nbytes : -16]


@given(data=st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda tail: b"TSBF\x01" + tail)))
def test_arbitrary_bytes_never_load(data: bytes) -> None:
    try:
        BloomFilter.from_bytes(data)
    except ValueError:
        return
    raise AssertionError("arbitrary bytes loaded as a filter")
