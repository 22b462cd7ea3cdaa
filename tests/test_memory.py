"""Tier 1: item and byte bounds, eviction counting and the promotion check."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tierstore.codec import VALUE, Record, make_record
from tierstore.memory import MemoryTier
from tierstore.stripes import Stripes

_S = Stripes()


def record(value: object, size: int = 10, seq: int = 1) -> Record:
    return make_record(value, 0, None, 0, 0.0, None, seq, size)


def test_item_bound_evicts_least_recently_used() -> None:
    tier = MemoryTier(2, None, _S)
    tier.put("a", record(1), _S.of("a"))
    tier.put("b", record(2), _S.of("b"))
    assert tier.get("a") is not None  # a is now most recent
    tier.put("c", record(3), _S.of("c"))
    assert tier.get("b") is None
    assert tier.get("a") is not None and tier.get("c") is not None
    assert tier.evictions == 1


def test_byte_bound_evicts_until_under_and_tracks_bytes() -> None:
    tier = MemoryTier(100, 25, _S)
    tier.put("a", record(1, size=10), _S.of("a"))
    tier.put("b", record(2, size=10), _S.of("b"))
    assert tier.bytes == 20
    tier.put("c", record(3, size=10), _S.of("c"))
    assert tier.get("a") is None
    assert tier.bytes == 20
    tier.put("c", record(4, size=5), _S.of("c"))
    assert tier.bytes == 15
    tier.discard("b", _S.of("b"))
    assert tier.bytes == 5 and len(tier) == 1


def test_record_larger_than_the_byte_bound_is_not_held() -> None:
    tier = MemoryTier(100, 25, _S)
    tier.put("a", record(1, size=10), _S.of("a"))
    tier.put("a", record(2, size=30), _S.of("a"))
    assert tier.get("a") is None
    assert tier.bytes == 0


def test_zero_items_holds_nothing() -> None:
    tier = MemoryTier(0, None, _S)
    tier.put("a", record(1), _S.of("a"))
    assert tier.get("a") is None and len(tier) == 0


def test_promotion_loses_to_a_write_that_came_after_the_read() -> None:
    tier = MemoryTier(10, None, _S)
    epoch = tier.epoch(_S.of("k"))
    tier.put("k", record("new", seq=2), _S.of("k"))
    tier.discard("k", _S.of("k"))  # evicted or deleted meanwhile: the slow reader must still not land
    assert tier.promote("k", record("old", seq=1), _S.of("k"), epoch) is False
    assert tier.get("k") is None
    fresh = tier.epoch(_S.of("k"))
    assert tier.promote("k", record("current", seq=2), _S.of("k"), fresh) is True
    got = tier.get("k")
    assert got is not None and got[VALUE] == "current"


def test_promotion_does_not_replace_a_held_record() -> None:
    tier = MemoryTier(10, None, _S)
    tier.put("k", record("held"), _S.of("k"))
    assert tier.promote("k", record("other"), _S.of("k"), tier.epoch(_S.of("k"))) is False
    got = tier.get("k")
    assert got is not None and got[VALUE] == "held"


def test_no_promotion_lands_while_a_write_is_in_progress() -> None:
    """A reader that saw the new value in tier 2 must never find the old one in tier 1 later."""
    tier = MemoryTier(10, None, _S)
    before = tier.epoch(_S.of("k"))  # a slow reader fetched the old record before the write began
    tier.begin_write(_S.of("k"))
    during = tier.epoch(_S.of("k"))  # another reader fetched during the write (old or new: unknown)
    assert not tier.promote("k", record("old"), _S.of("k"), before)
    assert not tier.promote("k", record("old or new"), _S.of("k"), during)
    assert tier.get("k") is None
    tier.put("k", record("new"), _S.of("k"))
    assert not tier.promote("k", record("old"), _S.of("k"), before)
    got = tier.get("k")
    assert got is not None and got[VALUE] == "new"
    after = tier.epoch(_S.of("k"))
    tier.discard("k", _S.of("k"))
    assert tier.promote("k", record("stale"), _S.of("k"), after) is False
    fresh = tier.epoch(_S.of("k"))
    assert tier.promote("k", record("current"), _S.of("k"), fresh) is True


def test_a_write_without_begin_still_ends_on_an_even_epoch() -> None:
    tier = MemoryTier(10, None, _S)
    tier.put("k", record(1), _S.of("k"))
    tier.discard("k", _S.of("k"))
    assert tier.epoch(_S.of("k")) % 2 == 0
    assert tier.promote("k", record(2), _S.of("k"), tier.epoch(_S.of("k")))


@settings(max_examples=60, deadline=None)
@given(reads=st.lists(st.sampled_from([f"k{i}" for i in range(12)]), max_size=80), items=st.integers(1, 6))
def test_the_stores_inlined_admission_matches_tier_1s_promote(
    tmp_path_factory: Any, reads: list[str], items: int
) -> None:
    """``TierStore.get`` inlines tier 1's read (``lookup``, then ``touch``: the recency ``get`` marks) and
    ``TierStore._fetch`` inlines ``is_first_read``; together they must decide as ``MemoryTier.get`` and
    ``MemoryTier.promote`` do."""
    from tierstore import TierStore

    model = MemoryTier(items, None, _S, second_read=True)
    with TierStore(str(tmp_path_factory.mktemp("s")), memory_items=items, checkpoint_interval=None) as store:
        for i in range(12):
            store.set(f"k{i}", i)
        store._memory.clear()
        for key in reads:
            store.get(key)
            if model.get(key) is None:
                stripe = _S.of(key)
                model.promote(key, record(int(key[1:])), stripe, model.epoch(stripe))
        assert list(store._memory._data) == list(model._data)
        assert store._first_reads == model.first_reads
