"""Sorted indexes in shared mode, on a real redis-server: the local ``SortedIndex``'s behaviour, shared by every store.

The comparison tests run the same operations on a local index and a shared one
and compare every read; the others check sharing across stores and processes,
cursors, the atomic ``replace`` under concurrent reads, bad input and outages.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.shared import part_workers
from tests.shared.parts_support import PREFIX, SPAWN, round_trips
from tests.shared.redis_server import RedisServer
from tierstore import SortedIndex, StoreClosed, TierStore
from tierstore.shared import ranking as shared_ranking
from tierstore.shared.ranking import SharedIndex


@pytest.fixture
def shared_stores(stores: Callable[..., TierStore]) -> tuple[TierStore, TierStore]:
    """Two shared stores for every example of a Hypothesis test (each example uses a new index name)."""
    return stores(), stores()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[TierStore]:
    with TierStore(tmp_path / "local") as store:
        yield store


def walk(index: SortedIndex, limit: int, reverse: bool = False) -> list[tuple[Any, float]]:
    items, cursor = index.page_after(None, limit, reverse)
    while cursor is not None:
        more, cursor = index.page_after(cursor, limit, reverse)
        items.extend(more)
    return items


def index_keys(raw: redis.Redis) -> dict[bytes, Any]:
    """Every index key in Redis with its contents ("nothing changed" compares these)."""
    found: dict[bytes, Any] = {}
    for key in raw.keys(PREFIX + b"i*"):
        kind = raw.type(key)
        found[key] = raw.zrange(key, 0, -1, withscores=True) if kind == b"zset" else raw.hgetall(key)
    return found


# -- the same behaviour as the local index --------------------------------------------------

MEMBERS = st.sampled_from(["a", "b", "bb", "\u00e9", "", b"a", b"b", b"\x00", b"\xff"])
SCORES = st.sampled_from([0, -0.0, 1, 1.5, -1, 2**60, 1e300, -1e-300, math.inf, -math.inf, 0.1])
STAMPS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), st.text(max_size=3),
    st.binary(max_size=3),
)  # fmt: skip
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), MEMBERS, SCORES),
        st.tuples(st.just("add_many"), st.lists(st.tuples(MEMBERS, SCORES), max_size=6)),
        st.tuples(st.just("remove"), MEMBERS),
        st.tuples(
            st.just("replace"), st.lists(st.tuples(MEMBERS, SCORES), max_size=6), st.one_of(st.just(...), STAMPS)
        ),
        st.tuples(st.just("mark_dirty")),
    ),
    max_size=12,
)


def apply(index: SortedIndex, operation: tuple[Any, ...]) -> Any:
    name, *args = operation
    return getattr(index, name)(*args)


def reads(index: SortedIndex) -> dict[str, Any]:
    """Everything an index answers, for the comparison."""
    universe = ["a", "b", "bb", "\u00e9", "", b"a", b"b", b"\x00", b"\xff", "missing"]
    found: dict[str, Any] = {
        "len": len(index),
        "page": index.page(0, 100),
        "reverse": index.page(0, 100, reverse=True),
        "offsets": [index.page(offset, 2, reverse) for offset in (1, 3) for reverse in (False, True)],
        "ranks": [(index.rank(m), index.rank(m, reverse=True), index.score(m), m in index) for m in universe],
        "ranges": [index.range_by_score(lo, hi, limit) for lo, hi, limit in RANGES],
        "walks": [walk(index, limit, reverse) for limit in (1, 2, 5) for reverse in (False, True)],
        "stamp": (index.built, index.stamp, index.dirty_stamp),
    }
    return found


RANGES = [(-math.inf, math.inf, None), (0, 0, None), (-0.0, 1.5, 2), (1, 0, None), (0.1, 1e300, 0), (-1, 1, 1)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_a_shared_index_answers_as_the_local_one(
    shared_stores: tuple[TierStore, TierStore], local: TierStore, operations: list[tuple[Any, ...]]
) -> None:
    name = uuid.uuid4().hex
    shared, other = (store.index(name) for store in shared_stores)
    mine = local.index(name)
    for operation in operations:
        assert apply(shared, operation) == apply(mine, operation)
    assert reads(shared) == reads(mine) == reads(other)  # the other store sees the same index
    for cursor in _cursors(mine):  # a cursor names a position: the same on either index
        for reverse in (False, True):
            assert shared.page_after(cursor, 2, reverse) == mine.page_after(cursor, 2, reverse)


def _cursors(index: SortedIndex) -> list[str]:
    """Cursors of the positions of the index's members, and of positions between and beyond them."""
    found = []
    for reverse in (False, True):
        _, cursor = index.page_after(None, 1, reverse)
        while cursor is not None:
            found.append(cursor)
            _, cursor = index.page_after(cursor, 1, reverse)
    found.append((bytes.fromhex("bff0000000000000") + b"sab").hex())  # score 1, member "ab": maybe absent
    found.append((bytes.fromhex("0000000000000000") + b"b").hex())  # below every score (no float encodes so)
    found.append((bytes.fromhex("fff8000000000001") + b"s").hex())  # above every score
    return found


# -- sharing ------------------------------------------------------------------------------


def test_two_stores_see_one_index(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    first, second = stores(), stores()
    board = first.index("board")
    assert isinstance(board, SortedIndex) and isinstance(board, SharedIndex)
    assert first.index("board") is board and second.index("board") is not board  # one object per name per store
    board.add_many({"carol": 3, "alice": 1.5, "bob": 3, b"bob": 3})
    other = second.index("board")
    assert other.page() == [("alice", 1.5), (b"bob", 3.0), ("bob", 3.0), ("carol", 3.0)]
    other.remove("alice")
    assert len(board) == 3 and "alice" not in board and board.rank("carol") == 2
    assert second.index(b"board").page() == [] and len(stores(namespace="else").index("board")) == 0
    assert raw.zrange(PREFIX + b"i:sboard", 0, -1) == [b"bbob", b"sbob", b"scarol"]  # tagged members
    assert repr(board) == "SortedIndex('board', members=3, shared)"


def test_stamps_and_dirty_marks_are_shared(stores: Callable[..., TierStore]) -> None:
    first, second = stores(), stores()
    mine, theirs = first.index("i"), second.index("i")
    assert (mine.built, mine.stamp, mine.dirty_stamp) == (False, None, 0)
    mine.mark_dirty()
    theirs.mark_dirty()
    assert mine.dirty_stamp == 2
    theirs.replace({"a": 1})  # the stamp defaults to the dirty stamp as of the call
    assert (mine.built, mine.stamp) == (True, 2)
    for stamp in (None, True, 2**64 - 1, -(2**63), 1.5, "s", b"\x00b"):
        mine.replace([], stamp=stamp)
        assert theirs.stamp == stamp and type(theirs.stamp) is type(stamp) and theirs.built
    assert len(theirs) == 0 and theirs.page() == []


def test_page_after_walks_ties_and_survives_removed_cursors(stores: Callable[..., TierStore]) -> None:
    store = stores()
    index = store.index("ties")
    model = {f"m{i:04}": 0.0 for i in range(1000)}
    model.update({f"n{i}": float(i % 3) for i in range(30)})
    index.add_many(model)
    expected = sorted(model.items(), key=lambda item: (item[1], item[0]))
    assert walk(index, 7) == expected
    assert walk(index, 13, reverse=True) == expected[::-1]
    items, cursor = index.page_after(None, 500)
    assert cursor is not None and items == expected[:500]
    index.remove(items[-1][0])  # the cursor's member is gone: the position stays
    index.add("m0499x", 0.0)  # just after the cursor's position: the next page starts with it
    rest, _ = index.page_after(cursor, 5)
    assert rest == [("m0499x", 0.0), *expected[500:504]]
    back, _ = index.page_after(cursor, 3, reverse=True)
    assert back == expected[496:499][::-1]


BAD_CALLS: list[tuple[Callable[[SortedIndex], object], type[Exception]]] = [
    (lambda index: index.add(1, 1), TypeError),  # type: ignore[arg-type]
    (lambda index: index.add("a", False), TypeError),
    (lambda index: index.add("a", math.nan), ValueError),
    (lambda index: index.add("a", 10**400), OverflowError),
    (lambda index: index.add("x" * 100_000, 1), ValueError),
    (lambda index: index.add_many([("ok", 1), ("bad", math.nan)]), ValueError),
    (lambda index: index.add_many([("ok", 1), ("single",)]), TypeError),
    (lambda index: index.add_many("ab"), TypeError),
    (lambda index: index.replace([("ok", 1), (3, 1)], stamp="s"), TypeError),
    (lambda index: index.replace(5, stamp="s"), TypeError),  # type: ignore[arg-type]
    (lambda index: index.replace([], stamp=[1]), TypeError),
    (lambda index: index.replace([], stamp=math.nan), ValueError),
    (lambda index: index.replace([], stamp=2**64), OverflowError),
    (lambda index: index.remove(None), TypeError),  # type: ignore[arg-type]
    (lambda index: index.score(b"x" * 100_000), ValueError),
    (lambda index: index.rank(3), TypeError),  # type: ignore[arg-type]
    (lambda index: index.page(-1), ValueError),
    (lambda index: index.page(0, 2.0), TypeError),  # type: ignore[arg-type]
    (lambda index: index.page_after(None, 0), ValueError),
    (lambda index: index.page_after(b"00", 1), TypeError),  # type: ignore[arg-type]
    (lambda index: index.page_after("zz", 1), ValueError),
    (lambda index: index.page_after("00" * 8 + "ff", 1), ValueError),
    (lambda index: index.range_by_score(math.nan, 1), ValueError),
    (lambda index: index.range_by_score(0, "1"), TypeError),  # type: ignore[arg-type]
    (lambda index: index.range_by_score(0, 1, -1), ValueError),
]


@pytest.mark.parametrize(("call", "error"), BAD_CALLS)
def test_bad_input_raises_as_locally_and_changes_nothing(
    stores: Callable[..., TierStore],
    local: TierStore,
    raw: redis.Redis,
    call: Callable[[SortedIndex], object],
    error: type[Exception],
) -> None:
    store = stores()
    index, mine = store.index("board"), local.index("board")
    for each in (index, mine):
        each.add("keep", 1)
        each.mark_dirty()
    before = index_keys(raw)
    with pytest.raises(error) as expected:
        call(mine)
    with pytest.raises(error, match=re.escape(str(expected.value))):  # the same type and message
        call(index)
    assert index_keys(raw) == before
    assert not [key for key in raw.keys("*") if b":it:" in key]  # no build left aside
    assert index.page() == [("keep", 1.0)] and not index.built and index.dirty_stamp == 1 and 5 not in index
    with pytest.raises(TypeError):
        store.index(3)  # type: ignore[arg-type]


def test_a_failing_source_leaves_the_old_index_and_nothing_aside(
    stores: Callable[..., TierStore], raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_ranking, "_BUILD_CHUNK", 10)
    index = stores().index("board")
    index.replace({"old": 1}, stamp="v1")

    def source() -> Iterator[tuple[str, float]]:
        for i in range(35):
            yield f"new{i}", i
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        index.replace(source(), stamp="v2")
    assert index.page() == [("old", 1.0)] and index.stamp == "v1"
    assert not [key for key in raw.keys("*") if b":it:" in key]
    index.replace(((f"m{i}", i % 4) for i in range(45)), stamp="v3")  # several chunks; repeats across chunks
    assert len(index) == 45 and index.stamp == "v3"


def test_replace_is_atomic_for_readers_in_another_store(
    stores: Callable[..., TierStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_ranking, "_BUILD_CHUNK", 50)  # many chunks per build: a mix would show
    writer, reader = stores(), stores()
    index = writer.index("swap")
    generations = [{f"{tag}{i:03}": float(i) for i in range(400)} for tag in ("old", "new")]
    index.replace(generations[0])
    seen: set[tuple[str, ...]] = set()
    sizes: set[int] = set()
    done = threading.Event()

    def read() -> None:
        other = reader.index("swap")
        while not done.is_set():
            members = other.page(0, 1000)
            sizes.add(len(members))
            seen.add(tuple(sorted({str(member)[:3] for member, _ in members})))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for generation in itertools.islice(itertools.cycle(generations[::-1]), 10):
            index.replace(generation)
    finally:
        done.set()
        thread.join()
    assert seen <= {("old",), ("new",)} and sizes == {400}
    assert len(seen) == 2  # the reader saw both generations, never a mix


def test_indexes_shared_across_processes(redis_server: RedisServer) -> None:
    results = SPAWN.Queue()
    start_at = time.time() + 3.0
    processes = [
        SPAWN.Process(
            target=part_workers.add_members, args=(redis_server.url, "board", f"p{n}-", 150, start_at, results)
        )
        for n in range(3)
    ]
    for process in processes:
        process.start()
    lengths = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    assert max(lengths) == 450
    with TierStore(shared=redis_server.url) as store:
        index = store.index("board")
        assert len(index) == 450
        assert index.page(0, 3) == [("p0-149", -149.0), ("p1-149", -149.0), ("p2-149", -149.0)]
        assert walk(index, 100) == index.page(0, 1000)


def test_replace_in_one_process_is_atomic_for_readers_in_others(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_ranking, "_BUILD_CHUNK", 100)  # each build in 30 chunks: a mix would show
    with TierStore(shared=redis_server.url) as store:
        index = store.index("swap")
        index.replace({f"old{i:04}": i for i in range(3000)})
        results = SPAWN.Queue()
        until = time.time() + 8.0
        readers = [SPAWN.Process(target=part_workers.read_pages, args=(redis_server.url, "swap", until, results))]
        for process in readers:
            process.start()
        generation = 0
        while time.time() < until - 1.0:
            tag = ("new", "old")[generation % 2]
            index.replace({f"{tag}{i:04}": i for i in range(3000)})
            generation += 1
        seen = [results.get(timeout=60) for _ in readers]
        for process in readers:
            process.join(30)
    assert generation >= 2
    for found in seen:
        assert all(len(prefixes) == 1 for prefixes in found), found  # never a mix of two generations


def test_each_call_is_one_round_trip(stores: Callable[..., TierStore], monkeypatch: pytest.MonkeyPatch) -> None:
    store = stores()
    index = store.index("board")
    index.add_many({f"m{i}": i for i in range(30)})
    _, cursor = index.page_after(None, 5)
    assert cursor is not None
    index.page_after(cursor, 5)  # loads the scripts
    index.replace(index.page(0, 100))
    made = round_trips(store, monkeypatch)
    calls: list[Callable[[], object]] = [
        lambda: index.add("x", 1), lambda: index.add_many({"y": 2, "z": 3}), lambda: index.remove("x"),
        lambda: index.score("y"), lambda: index.rank("y"), lambda: index.page(3, 4), lambda: len(index),
        lambda: index.page_after(None, 5), lambda: index.page_after(cursor, 5, True), lambda: "y" in index,
        lambda: index.range_by_score(0, 10, 3), lambda: index.mark_dirty(), lambda: index.stamp,
        lambda: index.built, lambda: index.dirty_stamp,
    ]  # fmt: skip
    for position, call in enumerate(calls, 1):
        call()
        assert len(made) == position, (position, made)
    index.replace({"a": 1}, stamp="s")  # one chunk and the swap
    assert len(made) == len(calls) + 2


def test_a_closed_store_closes_its_indexes(stores: Callable[..., TierStore]) -> None:
    store = stores()
    index = store.index("board")
    index.add("a", 1)
    store.close()
    for call in (lambda: index.add("b", 1), lambda: len(index), index.page, lambda: index.replace({})):
        with pytest.raises(StoreClosed):
            call()
    with pytest.raises(StoreClosed):
        store.index("board")
