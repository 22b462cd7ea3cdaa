"""Listings in shared mode (pruning the keys set, the sweep's bounded pruning) and the Lua reader of envelopes.

The Lua reader of an envelope's header decides, in every script, whether an
entry is live: it is checked here against ``codec.record_state`` over every
msgpack encoding an expiry or a version may take, and through whole call
sequences under integer clocks (int expiries) against the local store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import FakeClock
from tests.shared.support import wait_for
from tests.shared.test_shared_writes import KEYS, NAMES, SEQUENCES, run
from tierstore import TierStore, codec


def test_listings_prune_members_whose_entry_expired(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store, other = stores(), stores()
    store.set_many({"a": 1, "b": 2})
    store.set("short", 1, ttl=0.05)
    store.set("user:short", 1, ttl=0.05)
    wait_for(lambda: raw.exists(NAMES.entry(codec.encode_key("short"))) == 0)  # Redis expired the hashes
    wait_for(lambda: raw.exists(NAMES.entry(codec.encode_key("user:short"))) == 0)
    assert raw.zcard(NAMES.keys) == 4
    assert list(other.keys("u")) == []
    assert raw.zscore(NAMES.keys, codec.encode_key("user:short")) is None  # pruned by the listing
    assert raw.zcard(NAMES.keys) == 3
    assert list(other.items()) == [("a", 1), ("b", 2)]
    assert len(other) == 2
    assert raw.zrange(NAMES.keys, 0, -1) == [codec.encode_key("a"), codec.encode_key("b")]


def test_sweep_prunes_the_keys_set_in_bounded_pages(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    from tierstore.shared.listing import PAGE, SWEEP_PAGES

    store = stores(sweep_interval=None)
    total = PAGE * SWEEP_PAGES + 700
    for start in range(0, total, 500):  # scripts short enough for the listeners' 0.2 s PINGs on a loaded machine
        store.set_many({f"k{i:05d}": i for i in range(start, min(start + 500, total))}, ttl=0.05)
    store.set("kept", 1)
    wait_for(lambda: raw.dbsize() <= 4, timeout=30)  # seq, epoch, keys set, kept: every other hash expired
    first = store.sweep()
    assert first["shared_pruned"] == PAGE * SWEEP_PAGES  # bounded: it stopped after its pages
    assert store.sweep()["shared_pruned"] == 700  # and went on from there
    assert raw.zrange(NAMES.keys, 0, -1) == [codec.encode_key("kept")]
    assert store.sweep()["shared_pruned"] == 0


def test_a_key_written_again_is_not_pruned(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store = stores()
    store.set("k", 1, ttl=0.05)
    wait_for(lambda: raw.exists(NAMES.entry(codec.encode_key("k"))) == 0)
    store.set("k", 2)  # back before any prune
    assert store._shared.listing._prune([codec.encode_key("k")]) == 0  # type: ignore[union-attr]
    assert list(store.items()) == [("k", 2)]


def _state_in_lua(raw: redis.Redis, data: bytes, now: float) -> str:
    from tierstore.shared.conditional_scripts import ENTRY_STATE

    answer: bytes = raw.eval(ENTRY_STATE + "return entry_state(ARGV[1], tonumber(ARGV[2]))", 0, data, repr(now))
    return answer.decode()


_STATE_NAMES = {
    codec.RecordState.LIVE: "live", codec.RecordState.NEGATIVE: "negative", codec.RecordState.STALE: "expired",
    codec.RecordState.EXPIRED: "expired", codec.RecordState.TOMBSTONE: "tombstone",
}  # fmt: skip


def test_the_lua_reader_of_an_envelope_header_agrees_with_record_state(raw: redis.Redis) -> None:
    """Every msgpack int and float encoding an expiry or a version slot may take, each flag, both sides of now."""
    packer = codec.new_packer()
    nows: list[float] = [1_000_000.0, 1_000_000, 0, -5_000, 2**40, 2**40 + 0.5, 1.5e14]
    versions = [0, 5, 200, 70_000, 2**33, 2**63 - 1]
    for now in nows:
        for expires_at in (None, now, now - 1, now + 1, now + 0.25, now - 0.25, int(now) + 300, float(now) + 1e-3):
            for flags in (0, codec.NEGATIVE, codec.TOMBSTONE, codec.NEGATIVE | codec.TOMBSTONE):
                for version in versions:
                    data, _ = codec.encode_record(packer, {"v": [1, 2]}, version, expires_at, flags, now, 1.0, 0)
                    expected = _STATE_NAMES[codec.record_state(codec.unpack_record(data), now)]
                    assert _state_in_lua(raw, data, now) == expected, (now, expires_at, flags, version)
    for damaged in (
        b"",
        b"\x93\x02\x00\xc0",
        b"\xc0",
        b"\x99\x01\x00",
        b"\x99\x01\x00\xc0\x09",
        b"\x99\x01\xa1x\xc0\x00",
    ):
        assert _state_in_lua(raw, damaged, 1.0) == "damaged", damaged


@pytest.mark.parametrize("start", [1_000_000, 2**40, -5_000], ids=["int", "large-int", "negative"])
def test_integer_clocks_decide_as_locally(stores: Callable[..., TierStore], tmp_path: Path, start: int) -> None:
    """An int clock packs int expiries (other msgpack encodings) that the scripts must read as locally."""
    clock = FakeClock(start)  # type: ignore[arg-type]
    settings: dict[str, Any] = {"clock": clock, "negative_ttl": 30, "stale_ttl": 30, "tombstone_ttl": 1000}
    shared = stores(**settings)
    with TierStore(tmp_path / "local", sweep_interval=None, **settings) as local:
        for name in ("add", "touch", "delete_many", "pop"):
            for op in SEQUENCES[name]:
                assert run(shared, clock, op) == run(local, clock, op), (name, op)
            for key in KEYS:
                assert shared.get_entry(key) == local.get_entry(key), (name, key)
            shared.clear()
            local.clear()
