"""Every read of the store agrees with ``codec.record_state``, the one rule of what a record is.

``TierStore.get`` inlines the rule's ``LIVE`` test on its tier-1 hit path (a
function call there would cost it against ``LRUCache.get``); this is what ties
the inlined copy, and every other reader, to the rule. Records of every kind
(values, negative entries, tombstones; with and without an expiry and a
version) are written through the public API under an injected clock, the clock
is moved around the record's expiry and stale window, and ``get``,
``get_entry``, ``in``, ``keys()``, the stats ``get`` counts in, ``sweep()`` and
``get_or_load`` must all say what ``record_state`` says, from tier 1 and from
tier 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tierstore import ABSENT, TierStore, codec
from tierstore.codec import NEGATIVE, TOMBSTONE, Record, RecordState, record_state
from tierstore.entries import Entry

T0 = 1_000_000.0
KEY = "k"
VALUE = {"v": [1, "x"]}
LOADED = "loaded"
MISSING = object()
GET_STATS = ("hits_memory", "hits_disk", "negative_hits", "misses")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Written:
    """What the test wrote, and so the record the store must hold."""

    kind: str  # "value", "negative" or "tombstone"
    ttl: float | None
    version: int | None
    tombstone_ttl: float

    def record(self) -> Record:
        """The record the writer builds at ``T0`` (no jitter): ``expires_at = T0 + ttl``."""
        if self.kind == "tombstone":
            ttl: float | None = self.tombstone_ttl
            flags, version, value = TOMBSTONE, self.version or 1, None
        else:
            ttl = self.ttl
            flags = NEGATIVE if self.kind == "negative" else 0
            version, value = self.version or 0, None if self.kind == "negative" else VALUE
        expires_at = None if ttl is None else T0 + ttl
        return codec.make_record(value, version, expires_at, flags, T0, ttl, 0, 0)

    def write(self, store: TierStore) -> None:
        if self.kind == "tombstone":
            store.set(KEY, VALUE, version=self.version or 1)
            store.delete(KEY)
            return
        value = ABSENT if self.kind == "negative" else VALUE
        store.set(KEY, value, ttl=self.ttl, version=self.version)


seconds = st.floats(min_value=0.001, max_value=1_000.0, allow_nan=False)
written = st.builds(
    Written,
    kind=st.sampled_from(["value", "negative", "tombstone"]),
    ttl=st.one_of(st.none(), seconds),
    version=st.sampled_from([None, 3]),
    tombstone_ttl=seconds,
)
deltas = st.one_of(st.just(0.0), st.sampled_from([-1e-6, 1e-6]), st.floats(min_value=-5.0, max_value=5.0))


def moments(record: Record, stale_ttl: float) -> st.SearchStrategy[float]:
    """Times around the write, the expiry and the end of the stale window (exactly on them, too)."""
    anchors = [T0]
    expires_at = record[codec.EXPIRES_AT]
    if expires_at is not None:
        anchors += [expires_at, expires_at + stale_ttl]
    return st.tuples(st.sampled_from(anchors), deltas).map(lambda pair: pair[0] + pair[1])


def expected_entry(record: Record, state: RecordState) -> Entry | None:
    """``get_entry``'s answer for each state, written out."""
    if state is RecordState.LIVE:
        return Entry(record[codec.VALUE], record[codec.VERSION], record[codec.EXPIRES_AT], False, False)
    if state is RecordState.NEGATIVE:
        return Entry(ABSENT, record[codec.VERSION], record[codec.EXPIRES_AT], True, False)
    if state is RecordState.STALE:
        return Entry(record[codec.VALUE], record[codec.VERSION], record[codec.EXPIRES_AT], False, True)
    return None


def get_stat(state: RecordState, tier1: bool) -> str:
    """The stat one ``get`` counts in."""
    if state is RecordState.LIVE:
        return "hits_memory" if tier1 else "hits_disk"
    return "negative_hits" if state is RecordState.NEGATIVE else "misses"


@given(
    what=written,
    stale_ttl=st.one_of(st.just(0.0), seconds),
    tier1=st.booleans(),
    data=st.data(),
)
def test_every_read_agrees_with_record_state(what: Written, stale_ttl: float, tier1: bool, data: Any) -> None:
    clock = Clock()
    with TierStore(
        memory_items=100 if tier1 else 0,  # 0: every read goes to tier 2
        stale_ttl=stale_ttl,
        tombstone_ttl=what.tombstone_ttl,
        sweep_interval=None,
        clock=clock,
    ) as store:
        what.write(store)
        record = what.record()
        clock.now = data.draw(moments(record, stale_ttl), label="now")
        state = record_state(record, clock.now, stale_ttl)
        live = state is RecordState.LIVE

        before = store.stats()
        assert store.get(KEY, MISSING) == (VALUE if live else MISSING)
        after = store.stats()
        counted = {name for name in GET_STATS if after[name] > before[name]}
        assert counted == {get_stat(state, tier1)}

        assert store.get_entry(KEY) == expected_entry(record, state)
        assert (KEY in store) is live
        assert list(store.keys()) == ([KEY] if live else [])

        swept = store.sweep()
        expires_at = record[codec.EXPIRES_AT]
        purgeable = state is RecordState.EXPIRED or (
            state is RecordState.TOMBSTONE and expires_at is not None and expires_at <= clock.now
        )
        assert swept["expired_purged"] + swept["swept_tombstones"] == int(purgeable)

        calls: list[int] = []

        def loader() -> str:
            calls.append(1)
            return LOADED

        answer = store.get_or_load(KEY, loader, default=MISSING)
        if live:
            assert (answer, calls) == (VALUE, [])
        elif state is RecordState.NEGATIVE:
            assert (answer, calls) == (MISSING, [])
        else:
            assert (answer, calls) == (LOADED, [1])
