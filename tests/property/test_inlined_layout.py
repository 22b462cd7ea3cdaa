"""Every inlined copy of codec's layout agrees with codec.

The write and read paths inline parts of the key and envelope layout for
speed: ``keyspace.fast_entry_key`` builds ``NS_ENTRY + codec.BYTES_TAG/STR_TAG +
key`` without calling ``encode_key``, and the header readers
(``session.envelope_version``, ``expiry.envelope_expiry``,
``capacity.header_seq``, ``values.check_value_size``) pick fields out of an envelope by position without
decoding its value. Each must say what the full encoders and decoders say.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierstore import codec
from tierstore.capacity import header_seq
from tierstore.codec import EXPIRES_AT, MAX_KEY_BYTES, NEGATIVE, SAFE_STR_LEN, SEQ, TOMBSTONE, VERSION
from tierstore.expiry import envelope_expiry
from tierstore.keyspace import NS_ENTRY, entry_key, fast_entry_key
from tierstore.session import envelope_version
from tierstore.values import check_value_size


class StrKey(str):
    pass


class BytesKey(bytes):
    pass


def outcome(fn: object, key: object) -> tuple[str, object]:
    """What ``fn(key)`` returns, or the type and message of what it raises."""
    try:
        return ("value", fn(key))  # type: ignore[operator]
    except (TypeError, ValueError) as exc:
        return (type(exc).__name__, str(exc))


def sized_text(alphabet: st.SearchStrategy[str], around: int) -> st.SearchStrategy[str]:
    return st.integers(min_value=max(0, around - 3), max_value=around + 3).flatmap(
        lambda n: st.text(alphabet, min_size=n, max_size=n)
    )


wide = st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF)  # 4 bytes each in UTF-8
anything = st.characters()  # lone surrogates included: not encodable
keys = st.one_of(
    st.text(),
    st.text(anything, max_size=8),
    sized_text(st.sampled_from("ab"), SAFE_STR_LEN),
    sized_text(wide, SAFE_STR_LEN),
    sized_text(st.sampled_from("ab"), MAX_KEY_BYTES),
    sized_text(st.sampled_from("\u00e9\u20ac"), MAX_KEY_BYTES // 2),
    st.binary(),
    st.integers(min_value=MAX_KEY_BYTES - 3, max_value=MAX_KEY_BYTES + 3).map(lambda n: b"k" * n),
    st.text(max_size=4).map(StrKey),
    st.binary(max_size=4).map(BytesKey),
    st.binary(max_size=4).map(bytearray),
    st.integers(),
    st.none(),
    st.floats(allow_nan=False),
)


@given(key=keys)
def test_fast_entry_key_is_entry_key(key: object) -> None:
    fast, full = outcome(fast_entry_key, key), outcome(entry_key, key)
    assert fast == full
    if full[0] == "value":
        assert full[1] == NS_ENTRY + codec.encode_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "",
        b"",
        "a" * SAFE_STR_LEN,
        "a" * (SAFE_STR_LEN + 1),
        "\U0001f600" * SAFE_STR_LEN,
        "\U0001f600" * (SAFE_STR_LEN + 1),
        "a" * MAX_KEY_BYTES,
        "a" * (MAX_KEY_BYTES + 1),
        b"k" * MAX_KEY_BYTES,
        b"k" * (MAX_KEY_BYTES + 1),
        "\ud800",
        "a" * (SAFE_STR_LEN + 1) + "\ud800",
        StrKey("s"),
        BytesKey(b"b"),
        bytearray(b"b"),
        memoryview(b"b"),
        7,
        None,
    ],
)
def test_fast_entry_key_is_entry_key_at_the_edges(key: object) -> None:
    assert outcome(fast_entry_key, key) == outcome(entry_key, key)


plain = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(), st.binary()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12,
)
moments = st.floats(min_value=-1e15, max_value=1e15, allow_nan=False)


@given(
    value=plain,
    version=st.integers(0, codec.MAX_VERSION),
    expires_at=st.one_of(st.none(), moments),
    flags=st.sampled_from([0, NEGATIVE, TOMBSTONE]),
    written_at=moments,
    ttl=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e9)),
    seq=st.integers(0, 2**63 - 1),
)
def test_header_readers_read_the_fields_unpack_record_reads(
    value: object,
    version: int,
    expires_at: float | None,
    flags: int,
    written_at: float,
    ttl: float | None,
    seq: int,
) -> None:
    data, _ = codec.encode_record(codec.new_packer(), value, version, expires_at, flags, written_at, ttl, seq)
    record = codec.unpack_record(data)
    assert envelope_version(data) == record[VERSION] == version
    assert envelope_expiry(data) == record[EXPIRES_AT] == expires_at
    assert header_seq(data) == record[SEQ] == seq
    size = len(msgpack.packb(value))  # the value's own encoding, which max_value_bytes bounds
    check_value_size(data, size)
    if len(data) > size - 1:
        with pytest.raises(ValueError, match=f"{size} bytes encoded"):
            check_value_size(data, size - 1)
