"""Shared sorted indexes as steps, on a real redis-server: ``AsyncSharedIndex`` answers as the blocking index.

The blocking ``SharedIndex`` runs its steps with ``steps.run`` (its own tests
are ``test_shared_ranking``); here the same steps are driven on an event loop
by a minimal asyncio driver written for these tests over redis.asyncio, with
redis-py's response callbacks cleared so the steps get raw RESP2 replies, as
from the blocking client. Both kinds of index read and write the same Redis
data and must agree on every answer, every error and every round trip.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.aio.support import run
from tests.shared.parts_support import PREFIX, dump
from tests.shared.redis_server import RedisServer
from tierstore import CorruptRecord, SharedUnavailable, SortedIndex, StoreClosed, TierStore
from tierstore.codec import encode_key
from tierstore.index_codec import encode_score
from tierstore.shared.aio_ranking import AsyncSharedIndex
from tierstore.shared.client import wrong_type
from tierstore.shared.ranking import AFTER, SharedIndex
from tierstore.shared.steps import Call, Steps

_T = TypeVar("_T")


class AsyncDriver:
    """Steps run on the loop: each ``Call`` as it is (a command, or a script by ``EVAL``), recorded.

    The reply is sent back raw; an error of the round trip is thrown in at the yield.
    """

    def __init__(self, socket: str) -> None:
        self.redis = redis.asyncio.Redis(unix_socket_path=socket, protocol=2)
        self.redis.response_callbacks.clear()  # raw replies: ZSCORE's bytes, not redis-py's float
        self.calls: list[Call] = []

    async def run(self, steps: Steps[_T]) -> _T:
        answer: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = steps.send(answer) if error is None else steps.throw(error)
            except StopIteration as stop:
                result: _T = stop.value
                return result
            assert isinstance(step, Call), step  # an index only ever makes calls
            self.calls.append(step)
            answer = error = None
            try:
                answer = await self._call(step)
            except redis.RedisError as exc:
                error = exc

    async def _call(self, call: Call) -> Any:
        if call.script is None:
            return await self.redis.execute_command(*call.args)
        return await self.redis.eval(call.script, len(call.keys), *call.keys, *call.args)


@asynccontextmanager
async def driving(server: RedisServer) -> AsyncIterator[AsyncDriver]:
    driver = AsyncDriver(server.socket)
    try:
        yield driver
    finally:
        await driver.redis.aclose()


def on_loop(
    server: RedisServer, index: SortedIndex, body: Callable[[AsyncSharedIndex, AsyncDriver], Awaitable[_T]]
) -> _T:
    """``body(async index, driver)`` run on a fresh event loop, the async index over ``index``."""
    assert isinstance(index, SharedIndex)

    async def main() -> _T:
        async with driving(server) as driver:
            return await body(AsyncSharedIndex(index, driver.run), driver)

    result: _T = run(main)
    return result


# -- the same answers -----------------------------------------------------------------------

UNIVERSE: list[Any] = ["a", "b", "bb", "\u00e9", "", b"a", b"b", b"\x00", b"\xff", "missing"]
BOARD = {
    "a": 1.0, "b": 1.0, "bb": -0.0, "\u00e9": math.inf, "": -math.inf, b"a": 1.0, b"b": 2**60, b"\x00": 1e300,
    b"\xff": -1e-300, **{f"t{i:02}": 0.5 for i in range(12)},
}  # fmt: skip
RANGES = [(-math.inf, math.inf, None), (0, 0, None), (-0.0, 1.5, 2), (1, 0, None), (0.1, 1e300, 0), (-1, 1, 1)]
CURSORS = [
    None,
    (encode_score(1) + encode_key("ab")).hex(),  # absent
    (encode_score(0.5) + encode_key("t05")).hex(),  # present, among ties
    (bytes.fromhex("0000000000000000") + b"b").hex(),  # below every score
    (bytes.fromhex("fff8000000000001") + b"s").hex(),  # above every score
]


def queries() -> list[tuple[str, tuple[Any, ...]]]:
    """Every read of an index, as (coroutine name, arguments)."""
    found: list[tuple[str, tuple[Any, ...]]] = [("count", ()), ("read_stamp", ()), ("contains", (5,))]
    for offset, limit in ((0, 100), (1, 2), (3, 2), (19, 5), (50, 5), (0, 0)):
        found += [("page", (offset, limit, reverse)) for reverse in (False, True)]
    for member in UNIVERSE:
        found += [("rank", (member, False)), ("rank", (member, True)), ("score", (member,)), ("contains", (member,))]
    found += [("range_by_score", bounds) for bounds in RANGES]
    found += [("page_after", (c, n, r)) for c in CURSORS for n in (1, 2, 7) for r in (False, True)]
    return found


BLOCKING: dict[str, Callable[..., Any]] = {
    "count": len,
    "read_stamp": lambda index: index.stamp,
    "contains": lambda index, member: member in index,
}


def ask(index: SortedIndex, name: str, args: tuple[Any, ...]) -> Any:
    """The blocking index's answer to the coroutine ``name``."""
    if name in BLOCKING:
        return BLOCKING[name](index, *args)
    return getattr(index, name)(*args)


async def walk(index: AsyncSharedIndex, limit: int, reverse: bool) -> list[tuple[Any, float]]:
    items, cursor = await index.page_after(None, limit, reverse)
    while cursor is not None:
        more, cursor = await index.page_after(cursor, limit, reverse)
        items.extend(more)
    return items


def test_the_async_index_answers_as_the_blocking_one(
    stores: Callable[..., TierStore], redis_server: RedisServer
) -> None:
    index = stores().index("board")
    index.add_many(BOARD)
    index.replace(index.page(0, 100), stamp=b"v\x00")
    expected = [ask(index, name, args) for name, args in queries()]

    async def body(aindex: AsyncSharedIndex, driver: AsyncDriver) -> None:
        answers = [await getattr(aindex, name)(*args) for name, args in queries()]
        for (name, args), answer, want in zip(queries(), answers, expected, strict=True):
            assert answer == want and type(answer) is type(want), (name, args)
        everything = index.page(0, 100)
        for limit in (1, 3, 100):
            assert await walk(aindex, limit, False) == everything
            assert await walk(aindex, limit, True) == everything[::-1]
        assert await aindex.score("missing") is None and await aindex.rank("missing") is None
        assert aindex.name == "board" and aindex.sync is index

    on_loop(redis_server, index, body)
    assert expected[:2] == [len(BOARD), b"v\x00"]  # the reads compared are not all empty
    assert index.page_after(CURSORS[2], 2, True)[0] == [("t04", 0.5), ("t03", 0.5)]


def test_writes_through_the_async_index_are_the_blocking_ones(
    stores: Callable[..., TierStore], redis_server: RedisServer
) -> None:
    first, second = stores(), stores()
    index, other = first.index("w"), second.index("w")

    async def body(aindex: AsyncSharedIndex, driver: AsyncDriver) -> None:
        await aindex.add("x", 3)
        await aindex.add_many({"y": 1, b"y": 1, "z": -0.0})
        await aindex.add_many([])
        assert other.page() == [("z", 0.0), (b"y", 1.0), ("y", 1.0), ("x", 3.0)]
        assert await aindex.remove("x") is True and await aindex.remove("x") is False
        assert await aindex.count() == 3 == len(other) and not await aindex.contains("x")
        await aindex.mark_dirty()
        await aindex.mark_dirty()
        assert other.dirty_stamp == 2 and not other.built and await aindex.read_stamp() is None
        await aindex.replace({"r": 1.5})  # in a thread: the stamp defaults to the dirty stamp
        assert other.page() == [("r", 1.5)] and await aindex.read_stamp() == 2 == other.stamp
        await aindex.replace([], stamp="s")
        assert other.built and await aindex.count() == 0 and await aindex.read_stamp() == "s"

    on_loop(redis_server, index, body)


def test_len_in_and_stamp_refuse_to_block(stores: Callable[..., TierStore], redis_server: RedisServer) -> None:
    index = stores().index("board")
    index.add("a", 1)

    async def body(aindex: AsyncSharedIndex, driver: AsyncDriver) -> None:
        with pytest.raises(TypeError, match=re.escape("await index.count()")):
            len(aindex)
        with pytest.raises(TypeError, match=re.escape("await index.contains(member)")):
            "a" in aindex  # noqa: B015
        with pytest.raises(TypeError, match=re.escape("await index.read_stamp()")):
            aindex.stamp  # noqa: B018
        assert driver.calls == []
        assert await aindex.count() == 1 and await aindex.contains("a") and not await aindex.contains(b"a")

    on_loop(redis_server, index, body)


def test_each_call_is_one_raw_round_trip(stores: Callable[..., TierStore], redis_server: RedisServer) -> None:
    index = stores().index("board")
    index.add_many(BOARD)
    cursor = index.page_after(None, 3)[1]

    async def body(aindex: AsyncSharedIndex, driver: AsyncDriver) -> list[list[Call]]:
        made: list[list[Call]] = []
        for call in (
            aindex.add("x", 1), aindex.add_many({"y": 2, "z": 3}), aindex.remove("x"), aindex.mark_dirty(),
            aindex.score("y"), aindex.rank("y", True), aindex.page(3, 4, True), aindex.count(), aindex.contains("y"),
            aindex.page_after(None, 5), aindex.page_after(cursor, 5, True), aindex.range_by_score(0, 10, 3),
            aindex.read_stamp(), aindex.contains(5), aindex.page(0, 0), aindex.range_by_score(1, 0),
        ):  # fmt: skip
            before = len(driver.calls)
            await call
            made.append(driver.calls[before:])
        return made

    made = on_loop(redis_server, index, body)
    assert [len(calls) for calls in made] == [1] * 13 + [0] * 3  # a non-key and empty windows make no call
    commands = [calls[0] for calls in made[:13]]
    scripted = commands.pop(10)
    assert scripted.script == AFTER and scripted.keys == [PREFIX + b"i:sboard"]
    for call in commands:
        assert call.script is None and call.keys == () and call.what.startswith("index 'board': ")
        assert all(isinstance(arg, (bytes, int)) for arg in call.args), call
    assert [call.args[0] for call in commands] == [
        b"ZADD", b"ZADD", b"ZREM", b"HINCRBY", b"ZSCORE", b"ZREVRANK", b"ZREVRANGE", b"ZCARD", b"ZSCORE", b"ZRANGE",
        b"ZRANGEBYSCORE", b"HMGET",
    ]  # fmt: skip


BAD_CALLS: list[tuple[str, tuple[Any, ...], type[Exception]]] = [
    ("add", (1, 1), TypeError),
    ("add", ("a", math.nan), ValueError),
    ("add", ("a", 10**400), OverflowError),
    ("add_many", ([("ok", 1), ("bad", math.nan)],), ValueError),
    ("add_many", ("ab",), TypeError),
    ("remove", (None,), TypeError),
    ("score", (b"x" * 100_000,), ValueError),
    ("contains", ("x" * 100_000,), ValueError),
    ("rank", (3,), TypeError),
    ("page", (-1,), ValueError),
    ("page", (0, 2.0), TypeError),
    ("page_after", (None, 0), ValueError),
    ("page_after", ("zz", 1), ValueError),
    ("range_by_score", (math.nan, 1), ValueError),
    ("range_by_score", (0, 1, -1), ValueError),
    ("replace", ([], [1]), TypeError),
]


@pytest.mark.parametrize(("name", "args", "error"), BAD_CALLS)
def test_bad_input_raises_as_blocking_before_any_call(
    stores: Callable[..., TierStore],
    redis_server: RedisServer,
    raw: redis.Redis,
    name: str,
    args: tuple[Any, ...],
    error: type[Exception],
) -> None:
    index = stores().index("board")
    index.add("keep", 1)
    before = dump(raw)
    with pytest.raises(error) as expected:
        ask(index, name, args)

    async def body(aindex: AsyncSharedIndex, driver: AsyncDriver) -> None:
        with pytest.raises(error, match=re.escape(str(expected.value))):
            await getattr(aindex, name)(*args)
        assert driver.calls == []

    on_loop(redis_server, index, body)
    assert dump(raw) == before


def test_a_closed_store_makes_no_call(stores: Callable[..., TierStore], redis_server: RedisServer) -> None:
    store = stores()
    index = store.index("board")
    store.close()

    async def body(aindex: AsyncSharedIndex, driver: AsyncDriver) -> None:
        for call in (aindex.add("b", 1), aindex.count(), aindex.page(), aindex.page_after(CURSORS[1], 2)):
            with pytest.raises(StoreClosed):
                await call
        with pytest.raises(StoreClosed):
            await aindex.replace({})
        assert driver.calls == []

    on_loop(redis_server, index, body)


def test_damage_in_redis_reads_alike(
    stores: Callable[..., TierStore], redis_server: RedisServer, raw: redis.Redis
) -> None:
    index = stores().index("board")
    raw.hset(PREFIX + b"im:sboard", mapping={"built": "1", "stamp": b"\xc1", "dirty": "x"})
    raw.set(PREFIX + b"i:sboard", "not a sorted set")
    for read in (lambda: index.stamp, lambda: index.dirty_stamp):
        with pytest.raises(CorruptRecord, match="damaged"):
            read()
    with pytest.raises(SharedUnavailable) as blocking:
        index.score("a")
    assert wrong_type(blocking.value)  # the client's error mapping still applies to a raw command

    async def body(aindex: AsyncSharedIndex, driver: AsyncDriver) -> None:
        with pytest.raises(CorruptRecord, match="damaged stamp"):
            await aindex.read_stamp()
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):  # thrown in at the yield, not swallowed
            await aindex.score("a")
        assert len(driver.calls) == 2

    on_loop(redis_server, index, body)


# -- the same index, written through either ----------------------------------------------------

MEMBERS = st.sampled_from(["a", "b", "bb", "\u00e9", "", b"a", b"b", b"\x00", b"\xff"])
SCORES = st.sampled_from([0, -0.0, 1, 1.5, -1, 2**60, 1e300, -1e-300, math.inf, -math.inf, 0.1])
OPERATIONS = st.lists(
    st.tuples(
        st.booleans(),  # through the async index
        st.one_of(
            st.tuples(st.just("add"), MEMBERS, SCORES),
            st.tuples(st.just("add_many"), st.lists(st.tuples(MEMBERS, SCORES), max_size=6)),
            st.tuples(st.just("remove"), MEMBERS),
            st.tuples(st.just("mark_dirty")),
        ),
    ),
    max_size=12,
)


@pytest.fixture
def shared(stores: Callable[..., TierStore]) -> TierStore:
    """One shared store for every example of a Hypothesis test (each example uses a new index name)."""
    return stores()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[TierStore]:
    with TierStore(tmp_path / "local") as store:
        yield store


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_writes_through_either_index_answer_as_the_local_one(
    shared: TierStore, redis_server: RedisServer, local: TierStore, operations: list[Any]
) -> None:
    name = uuid.uuid4().hex
    index, mine = shared.index(name), local.index(name)

    async def body(aindex: AsyncSharedIndex, driver: AsyncDriver) -> None:
        for through_async, (call, *args) in operations:
            want = getattr(mine, call)(*args)
            if through_async:
                assert await getattr(aindex, call)(*args) == want
            else:
                assert getattr(index, call)(*args) == want
        for query, args in queries():
            assert await getattr(aindex, query)(*args) == ask(mine, query, args), (query, args)

    on_loop(redis_server, index, body)
    assert index.dirty_stamp == mine.dirty_stamp
