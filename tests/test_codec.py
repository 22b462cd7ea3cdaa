"""Keys, versions and the envelope: round trips and rejections; the rule of what a record is."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierstore.codec import (
    ENVELOPE_ROOM,
    EXPIRES_AT,
    FLAGS,
    LOAD_TIME,
    MAX_DEPTH,
    MAX_KEY_BYTES,
    MAX_VERSION,
    NEGATIVE,
    RECORD_ROOM,
    SEQ,
    SIZE,
    TOMBSTONE,
    TTL,
    VALUE,
    VERSION,
    WRITTEN_AT,
    Record,
    RecordState,
    check_version,
    decode_key,
    encode_key,
    encode_record,
    is_negative,
    is_tombstone,
    make_record,
    new_packer,
    plain_value,
    purge_time,
    record_state,
    unpack_record,
)
from tierstore.entries import ABSENT, entry_of
from tierstore.errors import CorruptRecord
from tierstore.values import UNREADABLE, envelope_header


def test_str_and_bytes_keys_stay_distinct_and_round_trip() -> None:
    assert encode_key("a") != encode_key(b"a")
    for key in ["a", b"a", "", b"", "\u00e9t\u00e9", b"\x00\xff"]:
        assert decode_key(encode_key(key)) == key
        assert type(decode_key(encode_key(key))) is type(key)


@pytest.mark.parametrize("key", [1, 1.5, None, ["a"], ("a",), bytearray(b"a")])
def test_other_key_types_are_type_errors(key: object) -> None:
    with pytest.raises(TypeError, match="keys must be str or bytes"):
        encode_key(key)


def test_key_length_limit_counts_encoded_bytes() -> None:
    encode_key("x" * MAX_KEY_BYTES)
    encode_key(b"x" * MAX_KEY_BYTES)
    with pytest.raises(ValueError, match="4097 bytes"):
        encode_key("x" * (MAX_KEY_BYTES + 1))
    with pytest.raises(ValueError, match="limit is 4096"):
        encode_key("\u00e9" * (MAX_KEY_BYTES // 2 + 1))  # 2 bytes each in UTF-8
    with pytest.raises(ValueError):
        encode_key(b"x" * (MAX_KEY_BYTES + 1))


def test_unencodable_str_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        encode_key("\ud800")


@pytest.mark.parametrize("bad", [True, 1.0, "1", None])
def test_version_type_errors(bad: object) -> None:
    with pytest.raises(TypeError, match="version must be an int"):
        check_version(bad)


@pytest.mark.parametrize("bad", [-1, 2**63])
def test_version_range_errors(bad: int) -> None:
    with pytest.raises(ValueError, match="version"):
        check_version(bad)


def test_envelope_round_trip() -> None:
    data, value = encode_record(new_packer(), {"a": (1, 2)}, 7, 123.5, NEGATIVE, 100.0, 23.5, 42, 0.25)
    record = unpack_record(data)
    assert value == {"a": [1, 2]}
    assert (record[VALUE], record[VERSION], record[EXPIRES_AT], record[FLAGS]) == ({"a": [1, 2]}, 7, 123.5, NEGATIVE)
    assert (record[WRITTEN_AT], record[TTL], record[SEQ], record[SIZE], record[LOAD_TIME]) == (
        100.0,
        23.5,
        42,
        len(data),
        0.25,
    )
    assert is_negative(record) and not is_tombstone(record)


def test_unencodable_value_names_its_type_and_leaves_the_packer_usable() -> None:
    packer = new_packer()
    with pytest.raises(TypeError, match="set"):
        encode_record(packer, {1, 2}, 0, None, 0, 0.0, None, 1)
    with pytest.raises(TypeError, match="object"):
        encode_record(packer, [1, {"x": object()}], 0, None, 0, 0.0, None, 1)
    data, _ = encode_record(packer, "fine", 0, None, 0, 0.0, None, 1)
    assert unpack_record(data)[VALUE] == "fine"


def test_big_int_is_refused() -> None:
    with pytest.raises(OverflowError):
        encode_record(new_packer(), 2**64, 0, None, 0, 0.0, None, 1)
    with pytest.raises(OverflowError):
        encode_record(new_packer(), {"n": [2**64]}, 0, None, 0, 0.0, None, 1)


class _Text(str):
    pass


class _Table(dict):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize(
    "value",
    ["s", b"b", 1, 1.5, True, None, (1, "x"), [1, (2, 3)], {"k": (1,)}, _Text("t"), {"t": _Text("u")}, _Table(a=1)],
)
def test_the_value_for_tier_1_is_what_tier_2_decodes(value: object) -> None:
    data, plain = encode_record(new_packer(), value, 0, None, 0, 0.0, None, 1)
    decoded = unpack_record(data)[VALUE]
    assert plain == decoded
    assert msgpack.packb(plain) == msgpack.packb(decoded)  # the same types all the way down
    assert plain_value(value, data) == decoded


@pytest.mark.parametrize("buffer", [bytearray(b"xy"), memoryview(b"xy"), memoryview(b"axy")[1:]])
def test_a_buffer_value_is_held_as_the_bytes_tier_2_gives_back(buffer: object) -> None:
    data, held = encode_record(new_packer(), buffer, 0, None, 0, 1.0, None, 1)
    assert type(held) is bytes and held == unpack_record(data)[VALUE] == b"xy"


def test_a_value_of_exact_plain_types_is_kept_as_it_is() -> None:
    value = {"id": 7, "tags": ["a", "b"], "nested": {"x": 1.5, "y": None, b"raw": True}}
    _, plain = encode_record(new_packer(), value, 0, None, 0, 0.0, None, 1)
    assert plain is value  # shared with the caller, as cachetools does: nothing decoded at set


def test_a_tuple_dict_key_is_refused_at_encoding() -> None:
    with pytest.raises(TypeError, match="dict key"):
        encode_record(new_packer(), {"ok": {(1, 2): "tuple key"}}, 0, None, 0, 0.0, None, 1)


def test_nesting_one_past_what_tier_2_reads_is_refused_at_encoding() -> None:
    deepest: list[object] = []
    for _ in range(MAX_DEPTH - 1):
        deepest = [deepest]
    data, plain = encode_record(new_packer(), deepest, 0, None, 0, 0.0, None, 1)
    assert msgpack.packb(plain) == msgpack.packb(unpack_record(data)[VALUE]) == msgpack.packb(deepest)
    with pytest.raises(ValueError, match="deep"):
        encode_record(new_packer(), [deepest], 0, None, 0, 0.0, None, 1)  # msgpack packs it but cannot read it


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb("not an array"),
        msgpack.packb([1, 2, 3]),
        msgpack.packb([2, 0, None, 0, "v", 0.0, None, 1]),
        msgpack.packb([1, -1, None, 0, "v", 0.0, None, 1]),
        msgpack.packb([1, "0", None, 0, "v", 0.0, None, 1]),
        msgpack.packb([1, 0, "soon", 0, "v", 0.0, None, 1]),
        msgpack.packb([1, 0, float("nan"), 0, "v", 0.0, None, 1]),
        msgpack.packb([1, 0, None, 0, "v", 0.0, None, 1])[:-3],
    ],
)
def test_malformed_envelopes_are_corrupt_records(data: bytes) -> None:
    with pytest.raises(CorruptRecord):
        unpack_record(data)


def test_an_undecodable_record_says_why_even_when_msgpack_gives_no_message() -> None:
    # b"\xc1" is msgpack's one reserved byte: its FormatError has an empty message
    with pytest.raises(CorruptRecord, match=r"^undecodable record: \S"):
        unpack_record(b"\xc1garbage")


def test_the_widest_envelope_fields_fit_the_envelope_room() -> None:
    widest, _ = encode_record(new_packer(), None, MAX_VERSION, 1e15, NEGATIVE | TOMBSTONE, 1e15, 1e9, 2**63 - 1, 1e9)
    assert len(widest) - len(msgpack.packb(None)) == 57 <= ENVELOPE_ROOM


def test_a_record_reads_up_to_max_value_bytes_plus_the_room_for_its_envelope_and_later_fields() -> None:
    """An envelope may add up to ``ENVELOPE_ROOM`` to a value within ``max_value_bytes``, a shared copy its stamp."""

    def envelope(value: str) -> bytes:
        return msgpack.packb([1, 0, None, 0, value, 0.0, None, 1, 0.0, [7, b"e" * 16]])

    limit = 1000
    fits = envelope("x" * (limit + RECORD_ROOM - len(envelope("")) - 2))  # a str16 header: 2 bytes more
    assert len(fits) == limit + RECORD_ROOM
    assert unpack_record(fits, limit)[SIZE] == len(fits)
    with pytest.raises(CorruptRecord, match="not decoded"):
        unpack_record(fits[:5] + b"x" + fits[5:], limit)  # one byte longer: refused before decoding


@given(
    value=st.recursive(
        st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=8,
    ),
    version=st.integers(0, MAX_VERSION),
    expires_at=st.none() | st.floats(0, 1e12),
    flags=st.sampled_from([0, NEGATIVE, TOMBSTONE]),
    ttl=st.none() | st.floats(0.001, 1e9),
    seq=st.integers(0, 2**63 - 1),
    stamp=st.none() | st.just([7, b"epoch-id"]),
)
def test_envelope_header_reads_every_field_but_the_value(
    value: object, version: int, expires_at: float | None, flags: int, ttl: float | None, seq: int, stamp: object
) -> None:
    """The header of a record too long for this open: what ``unpack_record`` reads, the value left unread."""
    data, _ = encode_record(new_packer(), value, version, expires_at, flags, 12.5, ttl, seq, 0.25)
    if stamp is not None:  # a shared copy's tenth field
        items = msgpack.unpackb(data, strict_map_key=False)
        data = msgpack.packb([*items, stamp])
    full = unpack_record(data)
    header = envelope_header(data)
    assert header[VALUE] is UNREADABLE
    assert header[:VALUE] + header[VALUE + 1 :] == full[:VALUE] + full[VALUE + 1 :]
    assert header[SIZE] == len(data)


@pytest.mark.parametrize(
    "items",
    [
        [1, 2, None, 0, "v", 0.0, None],  # too few fields
        [2, 2, None, 0, "v", 0.0, None, 1, 0.0],  # an unknown format
        [1, -1, None, 0, "v", 0.0, None, 1, 0.0],  # a negative version
        [1, 2, float("nan"), 0, "v", 0.0, None, 1, 0.0],  # a NaN expiry
        [1, 2, None, 8, "v", 0.0, None, 1, 0.0],  # unknown flag bits
    ],
)
def test_envelope_header_refuses_what_unpack_record_refuses(items: list[object]) -> None:
    data = msgpack.packb(items)
    with pytest.raises(CorruptRecord):
        unpack_record(data)
    with pytest.raises(CorruptRecord):
        envelope_header(data)


def test_envelope_header_of_a_truncated_or_foreign_record_is_corrupt() -> None:
    data, _ = encode_record(new_packer(), "x" * 100, 3, None, 0, 1.0, None, 1)
    for damaged in (data[:-1], data[:20], b"", b"\xc1", msgpack.packb({"not": "an envelope"})):
        with pytest.raises(CorruptRecord):
            envelope_header(damaged)


def _nested_header(depth: int, value: bytes = b"\x00") -> bytes:
    """An envelope whose version field is a list nested ``depth`` deep (built byte by byte: no packer limit)."""
    nested = b"\x91" * depth + b"\x00"
    return b"\x99\x01" + nested + b"\xc0\x00" + value + msgpack.packb(1.0) + b"\xc0\x01" + msgpack.packb(0.0)


@pytest.mark.parametrize("depth", [600, 1000, 1023, 1024, 5000])
def test_a_header_field_nested_past_python_s_repr_limit_is_a_corrupt_record(depth: int) -> None:
    """The refusal's message sketches the header: a deep or long field neither recurses nor grows it."""
    for data in (_nested_header(depth), msgpack.packb([1, "9" * 100_000, None, 0, "v", 0.0, None, 1, 0.0])):
        with pytest.raises(CorruptRecord) as refused:
            unpack_record(data)
        assert len(str(refused.value)) < 300


@pytest.mark.parametrize("depth", [600, 1000, 1023, 1024, 5000])
def test_envelope_header_of_a_field_nested_past_the_packer_s_limit_is_corrupt(depth: int) -> None:
    """msgpack reads 1024 levels but packs at most 511: the header's repacking refuses as corrupt, never ValueError."""
    with pytest.raises(CorruptRecord):
        envelope_header(_nested_header(depth, msgpack.packb("x" * 1000)))


def test_absent_is_a_falsy_singleton() -> None:
    assert not ABSENT
    assert repr(ABSENT) == "ABSENT"
    assert type(ABSENT)() is ABSENT


# -- what a record is: live, negative, stale, expired, tombstone --------------------------


def _record(flags: int, expires_at: float | None) -> Record:
    return make_record("v", 3, expires_at, flags, 0.0, None, 1, 10)


@pytest.mark.parametrize(
    ("flags", "expires_at", "now", "stale_ttl", "state"),
    [
        (0, None, 100.0, 0.0, RecordState.LIVE),
        (0, 101.0, 100.0, 0.0, RecordState.LIVE),
        (0, 100.0, 100.0, 0.0, RecordState.EXPIRED),  # expiry is inclusive
        (0, 100.0, 100.0, 5.0, RecordState.STALE),
        (0, 100.0, 104.9, 5.0, RecordState.STALE),
        (0, 100.0, 105.0, 5.0, RecordState.EXPIRED),  # the end of the window too
        (NEGATIVE, None, 100.0, 5.0, RecordState.NEGATIVE),
        (NEGATIVE, 101.0, 100.0, 5.0, RecordState.NEGATIVE),
        (NEGATIVE, 100.0, 100.0, 5.0, RecordState.EXPIRED),  # never stale
        (TOMBSTONE, 101.0, 100.0, 0.0, RecordState.TOMBSTONE),
        (TOMBSTONE, 100.0, 200.0, 500.0, RecordState.TOMBSTONE),  # whatever its expiry
        (TOMBSTONE, None, 100.0, 0.0, RecordState.TOMBSTONE),
        (TOMBSTONE | NEGATIVE, 101.0, 100.0, 0.0, RecordState.TOMBSTONE),
    ],
)
def test_record_state(flags: int, expires_at: float | None, now: float, stale_ttl: float, state: RecordState) -> None:
    assert record_state(_record(flags, expires_at), now, stale_ttl) is state


times = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
records = st.builds(
    _record,
    flags=st.sampled_from([0, NEGATIVE, TOMBSTONE, TOMBSTONE | NEGATIVE]),
    expires_at=st.one_of(st.none(), times),
)
stale_ttls = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e6, allow_nan=False))


@given(record=records, now=times, stale_ttl=stale_ttls)
def test_purge_time_is_when_nothing_is_left_to_serve(record: Record, now: float, stale_ttl: float) -> None:
    """The sweep removes a record exactly when ``record_state`` says it is expired (or an expired tombstone)."""
    state = record_state(record, now, stale_ttl)
    expired = record[EXPIRES_AT] is not None and record[EXPIRES_AT] <= now
    due = purge_time(record, stale_ttl)
    assert (due is not None and due <= now) == (
        state is RecordState.EXPIRED or (state is RecordState.TOMBSTONE and expired)
    )
    # the moment itself is purgeable: the sweep reads the record once more, not on every pass
    if due is not None:
        assert record_state(record, due, stale_ttl) in (RecordState.EXPIRED, RecordState.TOMBSTONE)


@given(record=records, now=times, stale_ttl=stale_ttls)
def test_entry_of_follows_the_state(record: Record, now: float, stale_ttl: float) -> None:
    state = record_state(record, now, stale_ttl)
    entry = entry_of(record, now, stale_ttl)
    if state in (RecordState.EXPIRED, RecordState.TOMBSTONE):
        assert entry is None
        return
    assert entry is not None
    assert (entry.version, entry.expires_at) == (record[VERSION], record[EXPIRES_AT])
    assert (entry.negative, entry.stale) == (state is RecordState.NEGATIVE, state is RecordState.STALE)
    assert entry.value is (ABSENT if state is RecordState.NEGATIVE else record[VALUE])
