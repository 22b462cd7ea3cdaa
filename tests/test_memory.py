"""Tier 1: item and byte bounds, eviction counting and the promotion check."""

from __future__ import annotations

from tierstore.codec import Record
from tierstore.memory import MemoryTier


def record(value: object, size: int = 10, seq: int = 1) -> Record:
    return Record(value, 0, None, 0, 0.0, None, seq, size)


def test_item_bound_evicts_least_recently_used() -> None:
    tier = MemoryTier(2)
    tier.put("a", record(1))
    tier.put("b", record(2))
    assert tier.get("a") is not None  # a is now most recent
    tier.put("c", record(3))
    assert tier.get("b") is None
    assert tier.get("a") is not None and tier.get("c") is not None
    assert tier.evictions == 1


def test_byte_bound_evicts_until_under_and_tracks_bytes() -> None:
    tier = MemoryTier(100, max_bytes=25)
    tier.put("a", record(1, size=10))
    tier.put("b", record(2, size=10))
    assert tier.bytes == 20
    tier.put("c", record(3, size=10))
    assert tier.get("a") is None
    assert tier.bytes == 20
    tier.put("c", record(4, size=5))
    assert tier.bytes == 15
    tier.discard("b")
    assert tier.bytes == 5 and len(tier) == 1


def test_record_larger_than_the_byte_bound_is_not_held() -> None:
    tier = MemoryTier(100, max_bytes=25)
    tier.put("a", record(1, size=10))
    tier.put("a", record(2, size=30))
    assert tier.get("a") is None
    assert tier.bytes == 0


def test_zero_items_holds_nothing() -> None:
    tier = MemoryTier(0)
    tier.put("a", record(1))
    assert tier.get("a") is None and len(tier) == 0


def test_promotion_loses_to_a_write_that_came_after_the_read() -> None:
    tier = MemoryTier(10)
    epoch = tier.epoch("k")
    tier.put("k", record("new", seq=2))
    tier.discard("k")  # evicted or deleted meanwhile: the slow reader must still not land
    assert tier.promote("k", record("old", seq=1), epoch) is False
    assert tier.get("k") is None
    fresh = tier.epoch("k")
    assert tier.promote("k", record("current", seq=2), fresh) is True
    got = tier.get("k")
    assert got is not None and got.value == "current"


def test_promotion_does_not_replace_a_held_record() -> None:
    tier = MemoryTier(10)
    tier.put("k", record("held"))
    assert tier.promote("k", record("other"), tier.epoch("k")) is False
    got = tier.get("k")
    assert got is not None and got.value == "held"


def test_no_promotion_lands_while_a_write_is_in_progress() -> None:
    """A reader that saw the new value in tier 2 must never find the old one in tier 1 later."""
    tier = MemoryTier(10)
    before = tier.epoch("k")  # a slow reader fetched the old record before the write began
    tier.begin_write("k")
    during = tier.epoch("k")  # another reader fetched during the write (old or new: unknown)
    assert not tier.promote("k", record("old"), before)
    assert not tier.promote("k", record("old or new"), during)
    assert tier.get("k") is None
    tier.put("k", record("new"))
    assert not tier.promote("k", record("old"), before)
    got = tier.get("k")
    assert got is not None and got.value == "new"
    after = tier.epoch("k")
    tier.discard("k")
    assert tier.promote("k", record("stale"), after) is False
    fresh = tier.epoch("k")
    assert tier.promote("k", record("current"), fresh) is True


def test_a_write_without_begin_still_ends_on_an_even_epoch() -> None:
    tier = MemoryTier(10)
    tier.put("k", record(1))
    tier.discard("k")
    assert tier.epoch("k") % 2 == 0
    assert tier.promote("k", record(2), tier.epoch("k"))
