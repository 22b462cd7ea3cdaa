"""A Hypothesis state machine that drives SortedIndex against a sorted-list model.

Three indexes whose names are prefixes of one another (``"lb"``, ``"lb2"`` and
``b"lb"``) share one store, so a key-space leak between indexes shows up as a
wrong read. Rules add, re-score, remove, replace (in several build batches),
mark dirty and reopen the store; every read (page, page_after walks, rank,
range_by_score, score, len) is checked against the model.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tierstore import ranking
from tierstore.codec import encode_key
from tierstore.store import TierStore

NAMES = st.sampled_from(["lb", "lb2", b"lb"])
MEMBERS = st.sampled_from(["a", "b", b"a", "ab", "\u00e9", "", b"\x00", "zz", "m1", "m2"])
SCORES = st.one_of(
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([-0.0, 0.5, -1.5, 1e300, -1e300, math.inf, -math.inf, 2**53 + 1]),
)
PAIRS = st.lists(st.tuples(MEMBERS, SCORES), max_size=8)
MAX_REOPENS = 2
STAMPS = st.one_of(st.none(), st.integers(min_value=0, max_value=3), st.sampled_from(["s", b"s"]))


def as_stored(score: float) -> float:
    """What the index keeps: a float64, with -0.0 as 0.0."""
    value = float(score)
    return 0.0 if value == 0.0 else value


class Model:
    """One index as plain data: member -> score, stamps."""

    def __init__(self) -> None:
        self.scores: dict[Any, float] = {}
        self.built = False
        self.stamp: Any = None
        self.dirty = 0

    def order(self) -> list[tuple[Any, float]]:
        return sorted(self.scores.items(), key=lambda item: (item[1], encode_key(item[0])))


class RankingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="tierstore-ranking-")
        self.store = TierStore(self.dir)
        self.models: dict[Any, Model] = {"lb": Model(), "lb2": Model(), b"lb": Model()}
        self.saved_chunk = ranking._BUILD_CHUNK
        self.reopens = 0

    @initialize()
    def small_build_chunks(self) -> None:
        ranking._BUILD_CHUNK = 3  # builds span several batches, deduping across them

    def teardown(self) -> None:
        ranking._BUILD_CHUNK = self.saved_chunk
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- writes -------------------------------------------------------------------------

    @rule(name=NAMES, member=MEMBERS, score=SCORES)
    def add(self, name: Any, member: Any, score: float) -> None:
        self.store.index(name).add(member, score)
        self.models[name].scores[member] = as_stored(score)

    @rule(name=NAMES, pairs=PAIRS)
    def add_many(self, name: Any, pairs: list[tuple[Any, float]]) -> None:
        self.store.index(name).add_many(pairs)
        self.models[name].scores.update((member, as_stored(score)) for member, score in pairs)

    @rule(name=NAMES, member=MEMBERS)
    def remove(self, name: Any, member: Any) -> None:
        model = self.models[name]
        assert self.store.index(name).remove(member) is (member in model.scores)
        model.scores.pop(member, None)

    @rule(name=NAMES, pairs=PAIRS, stamp=st.one_of(st.just(...), STAMPS))
    def replace(self, name: Any, pairs: list[tuple[Any, float]], stamp: Any) -> None:
        model = self.models[name]
        self.store.index(name).replace(iter(pairs), stamp=stamp)
        model.scores = {member: as_stored(score) for member, score in pairs}
        model.built = True
        model.stamp = model.dirty if stamp is ... else stamp

    @rule(name=NAMES)
    def mark_dirty(self, name: Any) -> None:
        self.store.index(name).mark_dirty()
        self.models[name].dirty += 1

    # Opening LevelDB costs ~10 ms, most of a run's time: two reopens per run suffice.
    @precondition(lambda self: self.reopens < MAX_REOPENS)
    @rule()
    def reopen(self) -> None:
        self.reopens += 1
        self.store.close()
        self.store = TierStore(self.dir)

    # -- reads -------------------------------------------------------------------------

    @rule(name=NAMES, offset=st.integers(min_value=0, max_value=12), limit=st.integers(0, 12), reverse=st.booleans())
    def page(self, name: Any, offset: int, limit: int, reverse: bool) -> None:
        order = self.models[name].order()
        if reverse:
            order.reverse()
        assert self.store.index(name).page(offset, limit, reverse=reverse) == order[offset : offset + limit]

    @rule(name=NAMES, limit=st.integers(min_value=1, max_value=5), reverse=st.booleans())
    def page_after_walk(self, name: Any, limit: int, reverse: bool) -> None:
        order = self.models[name].order()
        if reverse:
            order.reverse()
        index = self.store.index(name)
        pages: list[list[tuple[Any, float]]] = []
        cursor = None
        while True:
            items, cursor = index.page_after(cursor, limit, reverse=reverse)
            pages.append(items)
            if cursor is None:
                break
            assert len(items) == limit
        assert [item for page in pages for item in page] == order
        assert len(pages) == max(1, math.ceil(len(order) / limit))

    @rule(name=NAMES, member=MEMBERS, reverse=st.booleans())
    def rank(self, name: Any, member: Any, reverse: bool) -> None:
        order = [m for m, _ in self.models[name].order()]
        if reverse:
            order.reverse()
        expected = order.index(member) if member in order else None
        assert self.store.index(name).rank(member, reverse=reverse) == expected

    @rule(name=NAMES, lo=SCORES, hi=SCORES, limit=st.one_of(st.none(), st.integers(0, 4)))
    def range_by_score(self, name: Any, lo: float, hi: float, limit: int | None) -> None:
        expected = [item for item in self.models[name].order() if float(lo) <= item[1] <= float(hi)]
        if limit is not None:
            expected = expected[:limit]
        assert self.store.index(name).range_by_score(lo, hi, limit) == expected

    @rule(name=NAMES, member=MEMBERS)
    def score(self, name: Any, member: Any) -> None:
        assert self.store.index(name).score(member) == self.models[name].scores.get(member)

    @invariant()
    def sizes_and_stamps(self) -> None:
        for name, model in self.models.items():
            index = self.store.index(name)
            assert len(index) == len(model.scores)
            assert index.built is model.built
            assert index.stamp == (model.stamp if model.built else None)
            assert index.dirty_stamp == model.dirty


TestRankingMachine = RankingMachine.TestCase
# Expensive: a run opens LevelDB up to three times (~10 ms each) and draws many
# steps, so it takes half the profile's examples (the "thorough" profile still
# scales it) with 30 steps each.
TestRankingMachine.settings = settings(
    settings.default, max_examples=max(1, settings.default.max_examples // 2), stateful_step_count=30
)
