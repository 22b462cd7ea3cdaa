"""SortedIndex: score encoding, order, pagination, atomic rebuilds, durability and the refresher."""

from __future__ import annotations

import logging
import math
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierstore import SortedIndex, StoreClosed, TierStore, index_codec, ranking
from tierstore._plyvel import plyvel
from tierstore.codec import encode_key
from tierstore.errors import CorruptRecord
from tierstore.index_codec import decode_score, encode_score
from tierstore.index_refresher import IndexRefresher
from tierstore.keyspace import NS_INDEX_MEMBER, NS_INDEX_ORDER

WAIT = 10.0  # generous bound for background work; tests normally finish far sooner


@pytest.fixture
def store(store_path: str) -> Iterator[TierStore]:
    with TierStore(store_path) as opened:
        yield opened


def ordered(pairs: dict[Any, float]) -> list[tuple[Any, float]]:
    return sorted(pairs.items(), key=lambda item: (item[1], encode_key(item[0])))


def walk(index: SortedIndex, limit: int, reverse: bool = False) -> list[tuple[Any, float]]:
    seen: list[tuple[Any, float]] = []
    cursor = None
    while True:
        items, cursor = index.page_after(cursor, limit, reverse=reverse)
        seen.extend(items)
        if cursor is None:
            return seen


def index_records(store: TierStore) -> int:
    return sum(1 for ns in (NS_INDEX_MEMBER, NS_INDEX_ORDER) for _ in store._disk.scan(ns))


# -- score encoding -------------------------------------------------------------------

finite_or_infinite = st.floats(allow_nan=False) | st.integers(min_value=-(2**1000), max_value=2**1000)


@given(finite_or_infinite, finite_or_infinite)
def test_score_encoding_preserves_numeric_order(a: float, b: float) -> None:
    ea, eb = encode_score(a), encode_score(b)
    assert len(ea) == 8
    assert (ea < eb) == (float(a) < float(b))
    assert (ea == eb) == (float(a) == float(b))


@given(st.floats(allow_nan=False))
def test_score_encoding_round_trips(value: float) -> None:
    assert decode_score(encode_score(value)) == value


def test_negative_zero_is_zero() -> None:
    assert encode_score(-0.0) == encode_score(0.0) == encode_score(0)
    assert math.copysign(1.0, decode_score(encode_score(-0.0))) == 1.0


def test_bad_scores() -> None:
    with pytest.raises(ValueError, match="NaN"):
        encode_score(float("nan"))
    nan_with_payload = struct.unpack(">d", struct.pack(">Q", 0xFFF8000000000001))[0]
    with pytest.raises(ValueError, match="NaN"):
        encode_score(nan_with_payload)
    for bad in (True, "1", None, 1j, [1]):
        with pytest.raises(TypeError, match="score must be an int or float"):
            encode_score(bad)
    with pytest.raises(OverflowError, match="float64"):
        encode_score(10**400)


# -- basic operations -------------------------------------------------------------------


def test_add_score_rank_len_and_rescoring_moves(store: TierStore) -> None:
    index = store.index("board")
    index.add("carol", 3)
    index.add("alice", 1.5)
    index.add("bob", 3)
    index.add(b"bob", 3)
    assert len(index) == 4
    assert index.page() == [("alice", 1.5), (b"bob", 3.0), ("bob", 3.0), ("carol", 3.0)]
    assert index.rank("alice") == 0 and index.rank("carol") == 3
    assert index.rank("carol", reverse=True) == 0
    index.add("alice", 10)
    assert len(index) == 4
    assert index.page() == [(b"bob", 3.0), ("bob", 3.0), ("carol", 3.0), ("alice", 10.0)]
    assert index.score("alice") == 10.0 and index.score("nobody") is None
    assert index.rank("nobody") is None and "alice" in index and "nobody" not in index and 5 not in index
    assert index_records(store) == 8


def test_remove(store: TierStore) -> None:
    index = store.index("board")
    index.add_many([("a", 1), ("b", 2)])
    assert index.remove("a") is True
    assert index.remove("a") is False
    assert len(index) == 1 and index.page() == [("b", 2.0)]
    assert index_records(store) == 2


def test_add_many_is_one_batch_and_last_pair_wins(store: TierStore) -> None:
    index = store.index("board")
    index.add("a", 0)
    index.add_many([("a", 5), ("b", 1), ("a", 7)])
    index.add_many({"c": -1, "b": 2})
    assert index.page() == [("c", -1.0), ("b", 2.0), ("a", 7.0)]
    assert len(index) == 3


@pytest.mark.parametrize(
    ("pairs", "error"),
    [
        ([("ok", 1), ("bad", float("nan"))], ValueError),
        ([("ok", 1), ("bad", True)], TypeError),
        ([("ok", 1), (3, 1)], TypeError),
        ([("ok", 1), ("x" * 5000, 1)], ValueError),
        ([("ok", 1), ("single",)], TypeError),
        (5, TypeError),
        ("ab", TypeError),
    ],
)
def test_bad_input_changes_nothing(store: TierStore, pairs: Any, error: type[Exception]) -> None:
    index = store.index("board")
    index.add("keep", 1)
    with pytest.raises(error):
        index.add_many(pairs)
    with pytest.raises(error):
        index.replace(pairs, stamp="s")
    assert index.page() == [("keep", 1.0)] and len(index) == 1 and not index.built
    assert index_records(store) == 2


def test_bad_arguments(store: TierStore) -> None:
    index = store.index("board")
    index.add("a", 1)
    with pytest.raises(TypeError):
        index.add(1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        index.add("a", False)
    with pytest.raises(ValueError, match="NaN"):
        index.add("a", math.nan)
    with pytest.raises(ValueError, match="offset"):
        index.page(-1)
    with pytest.raises(TypeError, match="limit"):
        index.page(0, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        index.page_after(None, 0)
    with pytest.raises(TypeError, match="cursor"):
        index.page_after(b"00", 1)  # type: ignore[arg-type]
    for cursor in ("zz", "00", "00" * 8 + "ff"):
        with pytest.raises(ValueError, match="cursor"):
            index.page_after(cursor, 1)
    for cursor in ("z" * 1_000_000, "00" * 1_000_000):  # a client's cursor: the message stays short
        with pytest.raises(ValueError, match=r"malformed cursor '(z|0)+'\.\.\. \(\d+ characters\)") as caught:
            index.page_after(cursor, 1)
        assert len(str(caught.value)) < 200
    with pytest.raises(ValueError, match="NaN"):
        index.range_by_score(math.nan, 1)
    with pytest.raises(TypeError, match="stamp"):
        index.replace([], stamp=[1])
    with pytest.raises(TypeError):
        store.index(3)  # type: ignore[arg-type]
    assert index.score("a") == 1.0


def test_page_offsets_limits_and_reverse(store: TierStore) -> None:
    index = store.index("board")
    model = {f"m{i:04}": float(i % 37) for i in range(2500)}
    index.add_many(model)
    expected = ordered(model)
    assert index.page() == expected[:20]
    assert index.page(0, 0) == []
    assert index.page(1000, 1500) == expected[1000:2500]
    assert index.page(2490, 50) == expected[2490:]
    assert index.page(3000, 5) == []
    assert index.page(7, 30, reverse=True) == expected[::-1][7:37]
    assert index.page(0, 5000, reverse=True) == expected[::-1]


def test_page_after_walks_every_member_once_in_both_directions(store: TierStore) -> None:
    index = store.index("board")
    model = {f"m{i}": float(i % 13) - 6 for i in range(3000)}
    model.update({b"raw": 0.0, "\u00e9": -0.0})
    index.add_many(model)
    expected = ordered(model)
    assert walk(index, 7) == expected
    assert walk(index, 1100, reverse=True) == expected[::-1]
    assert walk(index, 5000) == expected
    items, cursor = index.page_after(None, len(expected))
    assert items == expected and cursor is None


def test_reverse_is_read_for_its_truth_as_rank_reads_it(store: TierStore) -> None:
    index = store.index("board")
    index.add_many({"a": 1.0, "b": 2.0, "c": 3.0})
    for truthy, falsy in [(1, 0), ("yes", None)]:
        assert index.page(0, 2, reverse=truthy) == index.page(0, 2, reverse=True)
        assert index.page(0, 2, reverse=falsy) == index.page(0, 2)
        assert index.page_after(None, 2, reverse=truthy) == index.page_after(None, 2, reverse=True)
        assert index.page_after(None, 2, reverse=falsy) == index.page_after(None, 2)
        assert index.rank("a", reverse=truthy) == 2


def test_page_after_on_an_empty_index(store: TierStore) -> None:
    assert store.index("empty").page_after(None) == ([], None)


def test_range_by_score_is_inclusive(store: TierStore) -> None:
    index = store.index("board")
    model = {"a": -math.inf, "b": -2.5, "c": -0.0, "d": 0, "e": 2.5, "f": 3, "g": math.inf}
    index.add_many(model)
    expected = ordered(model)
    assert index.range_by_score(-2.5, 2.5) == expected[1:5]
    assert index.range_by_score(0.0, 0.0) == [("c", 0.0), ("d", 0.0)]
    assert index.range_by_score(-math.inf, math.inf) == expected
    assert index.range_by_score(-math.inf, math.inf, limit=2) == expected[:2]
    assert index.range_by_score(3, 2) == []
    assert index.range_by_score(1, 2) == []
    assert index.range_by_score(0, 10, limit=0) == []


def test_index_names_never_overlap(store: TierStore) -> None:
    names: list[Any] = ["a", "ab", b"a", "a\x00", ""]
    for position, name in enumerate(names):
        store.index(name).add("m", position)
        store.index(name).add(f"only-{position}", position)
    for position, name in enumerate(names):
        index = store.index(name)
        assert len(index) == 2
        assert index.page() == [("m", float(position)), (f"only-{position}", float(position))]
        assert walk(index, 1) == index.page()
        assert index.range_by_score(-10, 10) == index.page()
    assert store.index("a") is store.index("a")
    assert store.index("a") is not store.index(b"a")


def test_indexes_are_not_cache_entries(store: TierStore) -> None:
    store.index("k").add("m", 1)
    store.set("k", "value")
    assert list(store.items()) == [("k", "value")]
    assert store.delete("k")
    assert store.index("k").page() == [("m", 1.0)]


def test_durable_across_reopen(store_path: str) -> None:
    with TierStore(store_path) as store:
        index = store.index("board")
        index.add_many({"a": 1, "b": 2, "c": 3})
        index.remove("b")
        index.mark_dirty()
        store.index("built").replace({"x": 9}, stamp=b"v1")
    with TierStore(store_path) as store:
        index = store.index("board")
        assert index.page() == [("a", 1.0), ("c", 3.0)] and len(index) == 2
        assert index.dirty_stamp == 1 and index.stamp is None and not index.built
        built = store.index("built")
        assert built.page() == [("x", 9.0)] and built.stamp == b"v1" and built.built


def test_closed_store(store_path: str) -> None:
    store = TierStore(store_path)
    index = store.index("board")
    store.close()
    with pytest.raises(StoreClosed):
        index.add("a", 1)
    with pytest.raises(StoreClosed):
        index.page()
    with pytest.raises(StoreClosed):
        store.index("other")


# -- replace ---------------------------------------------------------------------------


def test_replace_swaps_contents_stamp_and_purges_the_old_generation(store: TierStore) -> None:
    index = store.index("board")
    index.add_many({"old1": 1, "old2": 2, "old3": 3})
    assert index.stamp is None and not index.built
    index.replace([("new", 5), ("old1", 0)], stamp=17)
    assert index.page() == [("old1", 0.0), ("new", 5.0)]
    assert len(index) == 2 and index.stamp == 17 and index.built
    assert index_records(store) == 4
    index.replace([], stamp=None)
    assert index.page() == [] and len(index) == 0 and index.built and index.stamp is None
    assert index_records(store) == 0


def test_replace_stamp_defaults_to_the_dirty_stamp(store: TierStore) -> None:
    index = store.index("board")
    assert index.dirty_stamp == 0
    index.mark_dirty()
    index.mark_dirty()
    index.replace({"a": 1})
    assert index.stamp == 2 == index.dirty_stamp


def test_replace_dedupes_members_across_build_chunks(store: TierStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranking, "_BUILD_CHUNK", 3)
    index = store.index("board")
    pairs = [("a", 1), ("b", 2), ("c", 3), ("a", 4), ("d", 0), ("b", 2), ("c", -1), ("e", 9)]
    index.replace(pairs, stamp="s")
    assert index.page() == ordered({"a": 4, "b": 2, "c": -1, "d": 0, "e": 9})
    assert len(index) == 5
    assert index_records(store) == 10


def test_a_failing_build_leaves_the_old_index_and_no_records(store: TierStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranking, "_BUILD_CHUNK", 4)
    index = store.index("board")
    index.replace({"keep": 1}, stamp="v1")

    def source() -> Iterator[tuple[str, float]]:
        for i in range(10):
            yield f"n{i}", i
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="went away"):
        index.replace(source(), stamp="v2")
    assert index.page() == [("keep", 1.0)] and index.stamp == "v1" and len(index) == 1
    assert index_records(store) == 2


def test_an_interrupted_build_is_purged_when_the_index_is_next_opened(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranking, "_BUILD_CHUNK", 2)
    with TierStore(store_path) as store:
        index = store.index("board")
        index.add("keep", 1)
        # Simulate a crash mid-build: the cleanup never runs.
        monkeypatch.setattr(SortedIndex, "_abandon", lambda self, gen: None)
        with pytest.raises(KeyError):
            index.replace((("n", i) if i < 5 else {}["crash"] for i in range(9)), stamp="v")  # type: ignore[misc]
        assert index_records(store) > 2
    with TierStore(store_path) as store:
        assert index_records(store) > 2  # purged when the index is next opened
        index = store.index("board")
        assert index.page() == [("keep", 1.0)] and not index.built
        assert index_records(store) == 2


def test_writes_during_a_replace_go_to_the_old_generation(store: TierStore) -> None:
    index = store.index("board")
    index.add("old", 1)

    def source() -> Iterator[tuple[str, float]]:
        index.add("during", 2)  # lands in the live (old) generation
        assert index.score("during") == 2.0
        yield "new", 3

    index.replace(source(), stamp=1)
    assert index.page() == [("new", 3.0)]


def test_readers_see_the_old_index_or_the_new_never_a_mix(store: TierStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranking, "_BUILD_CHUNK", 50)  # many batches per build
    index = store.index("board")
    size = 400
    generations = [{f"g{gen}-{i:03}": float(i) for i in range(size)} for gen in range(2)]
    index.replace(generations[0], stamp=0)
    stop = threading.Event()
    problems: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            page = index.page(0, size + 10)
            prefixes = {member[:3] for member, _ in page}
            if len(page) != size or len(prefixes) != 1:
                problems.append(f"{len(page)} members from {sorted(prefixes)}")
            if len(index.range_by_score(0, size)) != size:
                problems.append("range_by_score saw a partial index")
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(1, 16):
            index.replace(generations[round_ % 2], stamp=round_)
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert reads > 0
    assert index.page(0, 1)[0][0].startswith("g1-")


# -- keyset pagination under writes ----------------------------------------------------------


def test_keyset_walk_sees_every_member_once_while_members_are_added(store: TierStore) -> None:
    index = store.index("board")
    initial = {f"m{i:04}": float(i % 50) for i in range(1000)}
    index.add_many(initial)
    added: dict[str, float] = {}
    seen: list[Any] = []
    cursor = None
    step = 0
    while True:
        items, cursor = index.page_after(cursor, 13)
        seen.extend(member for member, _ in items)
        # Between pages, add members before and after the cursor position.
        for score in (-1.0, 25.5, 60.0):
            member = f"new{step}-{score}"
            index.add(member, score)
            added[member] = score
        step += 1
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert set(initial) <= set(seen)
    assert set(seen) - set(initial) <= set(added)
    assert any(member in seen for member in added)  # members added ahead are reached


def test_keyset_walk_with_a_concurrent_writer_thread(store: TierStore) -> None:
    index = store.index("board")
    initial = {f"m{i:05}": float(i) for i in range(3000)}
    index.add_many(initial)
    stop = threading.Event()
    added: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            member = f"w{i:05}"
            index.add(member, (i * 7919) % 3000 + 0.5)
            added.append(member)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = [member for member, _ in walk(index, 17)]
        seen_reverse = [member for member, _ in walk(index, 23, reverse=True)]
    finally:
        stop.set()
        thread.join()
    for walked in (seen, seen_reverse):
        assert len(walked) == len(set(walked))
        assert set(initial) <= set(walked)
        assert set(walked) - set(initial) <= set(added)


# -- the refresher -------------------------------------------------------------------------------


class Source:
    """A fake source of truth: rows, a version, and events to wait on."""

    def __init__(self) -> None:
        self.rows: dict[str, float] = {"a": 1}
        self.version = 1
        self.rebuilds = 0
        self.stamp_reads = 0
        self.fail = False
        self.rebuilt = threading.Event()
        self.stamp_read = threading.Event()

    def rebuild(self) -> list[tuple[str, float]]:
        self.rebuilds += 1
        if self.fail:
            self.rebuilt.set()
            raise RuntimeError("source is down")
        rows = list(self.rows.items())
        self.rebuilt.set()
        return rows

    def stamp(self) -> int:
        self.stamp_reads += 1
        self.stamp_read.set()
        return self.version


def test_refresher_round_logic(store: TierStore) -> None:
    source = Source()
    index = store.index("board")
    errors: list[BaseException] = []
    refresh = IndexRefresher(index, source.rebuild, stamp=source.stamp, on_error=errors.append)
    assert refresh() is True and index.page() == [("a", 1.0)] and index.stamp == 1
    assert refresh() is False and source.rebuilds == 1
    source.rows = {"b": 2}
    assert refresh() is False  # the stamp did not move
    source.version = 2
    assert refresh() is True and index.page() == [("b", 2.0)] and index.stamp == 2
    assert errors == []


def test_refresher_builds_a_never_built_index_even_when_the_stamp_is_none(store: TierStore) -> None:
    index = store.index("board")
    refresh = IndexRefresher(index, lambda: {"x": 1}, stamp=lambda: None)
    assert refresh() is True and index.built and index.stamp is None
    assert refresh() is False


def test_refresher_failure_keeps_the_old_index(store: TierStore, caplog: pytest.LogCaptureFixture) -> None:
    source = Source()
    index = store.index("board")
    errors: list[BaseException] = []
    refresh = IndexRefresher(index, source.rebuild, stamp=source.stamp, on_error=errors.append)
    refresh()
    source.version, source.fail = 2, True
    with caplog.at_level(logging.ERROR, logger="tierstore"):
        assert refresh() is False
    assert index.page() == [("a", 1.0)] and index.stamp == 1
    assert len(errors) == 1 and "source is down" in str(errors[0])
    assert "refreshing index 'board' failed" in caplog.text
    bad_stamp = IndexRefresher(index, source.rebuild, stamp=lambda: object(), on_error=errors.append)
    assert bad_stamp() is False and isinstance(errors[-1], TypeError)


def test_refresher_rejects_bad_arguments(store: TierStore) -> None:
    with pytest.raises(TypeError, match="rebuild"):
        store.keep_fresh("board", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="stamp"):
        store.keep_fresh("board", list, stamp=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        store.keep_fresh("board", list, interval=0)


def test_keep_fresh_driven_by_mark_dirty(store: TierStore) -> None:
    source = Source()
    index = store.index("board")
    handle = store.keep_fresh("board", source.rebuild, interval=0.02)
    assert source.rebuilt.wait(WAIT)
    assert _eventually(lambda: index.built)
    assert index.page() == [("a", 1.0)] and index.stamp == 0
    source.rows = {"b": 2, "c": 3}
    source.rebuilt.clear()
    index.mark_dirty()
    assert source.rebuilt.wait(WAIT)
    assert _eventually(lambda: index.stamp == 1)
    assert index.page() == [("b", 2.0), ("c", 3.0)] and source.rebuilds == 2
    handle.cancel()


def test_keep_fresh_driven_by_a_stamp_function(store: TierStore) -> None:
    source = Source()
    index = store.index("board")
    handle = store.keep_fresh("board", source.rebuild, stamp=source.stamp, interval=0.02)
    assert source.rebuilt.wait(WAIT)
    assert _eventually(lambda: index.stamp == 1)
    # Several more rounds with the stamp unchanged rebuild nothing.
    reads = source.stamp_reads
    assert _eventually(lambda: source.stamp_reads >= reads + 3)
    assert source.rebuilds == 1
    source.rows, source.version = {"z": -1}, 2
    assert _eventually(lambda: index.stamp == 2)
    assert index.page() == [("z", -1.0)]
    handle.cancel()


def test_keep_fresh_failures_are_counted_and_keep_the_old_index(store: TierStore) -> None:
    source = Source()
    index = store.index("board")
    index.replace({"old": 1}, stamp=0)
    source.fail = True
    assert store.stats()["index_refresh_errors"] == 0
    handle = store.keep_fresh("board", source.rebuild, stamp=source.stamp, interval=0.02)
    assert _eventually(lambda: store.stats()["index_refresh_errors"] >= 2)
    assert index.page() == [("old", 1.0)] and index.stamp == 0
    handle.cancel()


def test_close_stops_the_refresher(store_path: str) -> None:
    source = Source()
    store = TierStore(store_path)
    store.keep_fresh("board", source.rebuild, stamp=source.stamp, interval=0.01)
    assert source.rebuilt.wait(WAIT)
    store.close()
    reads = source.stamp_reads
    stopped = threading.Event()
    assert not stopped.wait(0.1)  # a few intervals pass with the store closed
    assert source.stamp_reads == reads


def _eventually(condition: Any, timeout: float = WAIT) -> bool:
    """Poll ``condition`` until it holds; background rounds have no event to wait on."""
    done = threading.Event()
    deadline = timeout
    while deadline > 0:
        if condition():
            return True
        done.wait(0.005)
        deadline -= 0.005
    return bool(condition())


def test_public_decoders_read_an_index_without_a_store(store: TierStore, store_path: str) -> None:
    store.index("board").replace([("ann", 3), (b"\x02", -2.5), ("bob", 1)], stamp="v1")
    store.close()
    db = plyvel.DB(store_path)
    try:
        meta = index_codec.decode_index_meta(db.get(index_codec.index_meta_key("board")))
        assert (meta.count, meta.built, meta.stamp) == (3, True, "v1")
        members = list(index_codec.read_index(db, "board", meta.gen))
        assert members == [(b"\x02", -2.5), ("bob", 1.0), ("ann", 3.0)]
        assert list(index_codec.read_index(db, "board", meta.gen, offset=1, limit=1)) == [("bob", 1.0)]
        keys = [index_codec.check_index_record(key, data) for key, data in db.iterator() if key[:1] in b"iox"]
    finally:
        db.close()
    assert {key.name for key in keys} == {"board"}
    order = [key for key in keys if key.namespace == NS_INDEX_ORDER]
    assert [(key.member, key.score, key.generation) for key in order] == [(m, s, meta.gen) for m, s in members]


def test_parse_index_key_refuses_damaged_keys() -> None:
    name = index_codec.index_meta_key("n")[1:]
    with pytest.raises(CorruptRecord, match="too short for its name"):
        index_codec.parse_index_key(NS_INDEX_MEMBER + b"\x00\x09s")
    with pytest.raises(CorruptRecord, match="trailing bytes"):
        index_codec.parse_index_key(index_codec.index_meta_key("n") + b"x")
    with pytest.raises(CorruptRecord, match="malformed score"):
        index_codec.parse_index_key(NS_INDEX_ORDER + name + bytes(8) + struct.pack(">Q", (1 << 64) - 1) + b"sm")
    with pytest.raises(CorruptRecord, match="has a value"):
        index_codec.check_index_record(index_codec.order_prefix("n", 0) + encode_score(1) + b"sm", b"x")
    with pytest.raises(CorruptRecord, match="malformed score"):
        index_codec.check_index_record(NS_INDEX_MEMBER + name + bytes(8) + b"sm", b"\x00" * 7)
    with pytest.raises(CorruptRecord, match="is corrupt"):
        index_codec.decode_index_meta(b"\xc1", b"where")


@pytest.mark.parametrize("damage", [b"\xc1", b"\x00" * 9, encode_score(0.0)[:4]])
def test_a_damaged_member_record_raises_corrupt_record_from_score_and_rank(store: TierStore, damage: bytes) -> None:
    index = store.index("board")
    index.add_many([("a", 1.0), ("b", 2.0)])
    [member_key] = [key for key, _ in store._disk.scan(NS_INDEX_MEMBER) if key.endswith(encode_key("a"))]
    store._disk.put(member_key, damage)
    with pytest.raises(CorruptRecord, match="malformed score"):
        index.score("a")
    with pytest.raises(CorruptRecord, match="malformed score"):
        index.rank("a")
    assert index.score("b") == 2.0 and index.rank("b") == 1
