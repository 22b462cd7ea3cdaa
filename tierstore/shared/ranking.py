"""Sorted indexes in shared mode: a Redis sorted set per index, with ``SortedIndex``'s API and order.

A member is kept as its tagged bytes (``codec.encode_key``) and its score as the
float64 the local index keeps (``index_codec.encode_score`` checks it: NaN is a
``ValueError``, ``-0.0`` is ``0.0``, infinities are allowed). Redis orders a
sorted set by score and then by member bytes, which is the local
``(score, tagged member)`` order, and ``ZREVRANGE`` is exactly its reverse.

Names (``<prefix>`` is ``Names.prefix``, ``N`` the tagged index name):
``<prefix>i:N`` the sorted set (absent when empty), ``<prefix>im:N`` a hash of
the rebuild state (``built`` ``1`` once ``replace`` ran, ``stamp`` the source
stamp in msgpack, ``dirty`` the ``mark_dirty`` count), ``<prefix>it:N:<token>``
a set ``replace`` builds aside (expiring, so an abandoned build goes away).

Every call is one Redis round trip: a command, or a script for ``page_after``
with a cursor (the position after a ``(score, member)`` that may no longer be
in the set: a binary search over the ranks of that score, O(log n) probes) and
for the swap of ``replace`` (``RENAME`` of the built set and the stamp in one
step, so readers see the old index or the new). ``replace`` builds in chunks of
10,000 pairs. Cursors are the local ones (the position's encoded score and
tagged member, in hex), so a cursor from either kind of index names the same
position. Nothing is kept locally: every process reads what Redis holds.
Every call but ``replace`` is a generator of steps (``steps``) yielding raw
commands, whose RESP2 replies it reads as redis-py's callbacks would.
Thread-safety: each call is one atomic step in Redis; the object holds no state
beyond names.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from typing import Any

import msgpack

from ..codec import Key, decode_key, encode_key
from ..errors import CorruptRecord, shown
from ..index_codec import Pairs, check_stamp, decode_cursor, decode_score, encode_score, iter_pairs
from ..ranking import SortedIndex
from .client import SharedClient
from .scripts import Scripts
from .steps import Call, Steps, run

__all__ = ["SharedIndex", "AFTER", "SWAP"]

_BUILD_CHUNK = 10_000
_BUILD_TTL_MS = 3_600_000  # an abandoned build is gone after an hour; each chunk renews it

# KEYS: the set. ARGV: score (a float's repr), tagged member, limit + 1, "1" for reverse.
AFTER = """
local function lt(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local s, m, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lo = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. s)
local hi = lo + redis.call('ZCOUNT', KEYS[1], s, s)
local last = hi
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if lt(redis.call('ZRANGE', KEYS[1], mid, mid)[1], m) then lo = mid + 1 else hi = mid end
end
if ARGV[4] == '1' then
  if lo == 0 then return {} end
  return redis.call('ZRANGE', KEYS[1], math.max(0, lo - want), lo - 1, 'WITHSCORES')
end
if lo < last and redis.call('ZRANGE', KEYS[1], lo, lo)[1] == m then lo = lo + 1 end
return redis.call('ZRANGE', KEYS[1], lo, lo + want - 1, 'WITHSCORES')
"""

# KEYS: the set, the built set, the state hash. ARGV: packed stamp, members built.
SWAP = """
if redis.call('ZCARD', KEYS[2]) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else
  redis.call('RENAME', KEYS[2], KEYS[1])
  redis.call('PERSIST', KEYS[1])
end
redis.call('HSET', KEYS[3], 'built', '1', 'stamp', ARGV[1])
return 1
"""


_BOTTOM = encode_score(-math.inf)  # cursor positions below it are below every member


def _check_count(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {shown(value)}")
    return value


def _score(score: object) -> float:
    """The float64 the index keeps for ``score`` (checked as the local index checks it)."""
    return decode_score(encode_score(score))


def _number(score: float) -> bytes:
    """A score as a command argument: the float's repr, which Redis parses back to the same float64."""
    return repr(score).encode()


def _items(flat: list[Any]) -> list[tuple[Key, float]]:
    """``(member, score)`` pairs from a flat ``WITHSCORES`` reply (a command's or a script's), as redis-py pairs it."""
    return [(decode_key(flat[i]), float(flat[i + 1]) + 0.0) for i in range(0, len(flat), 2)]


def _cursor(member: Key, score: float) -> str:
    return (encode_score(score) + encode_key(member)).hex()


class SharedIndex(SortedIndex):
    """``SortedIndex`` on a Redis sorted set: every process that opens the name sees the same index.

    Use one per name per store (``store.index(name)``). The local index's
    documentation holds for every call; costs are Redis's (``rank`` and
    ``page`` O(log n + limit), ``len`` O(1)). Each call but ``replace`` is
    written once as steps (``<call>_steps``, ``len_steps`` and ``contains_steps``
    for ``len`` and ``in``): the blocking methods run them here with
    ``steps.run``, ``aio_ranking.AsyncSharedIndex`` on an event loop.
    """

    def __init__(self, client: SharedClient, scripts: Scripts, name: Key, gate: Callable[[], None]) -> None:
        tag = encode_key(name)
        prefix = client.names.prefix
        self._name = name
        self._client = client
        self._redis = client.redis
        self._scripts = scripts
        self._gate = gate
        self._set = prefix + b"i:" + tag
        self._state = prefix + b"im:" + tag
        self._building = prefix + b"it:" + tag + b":"

    def _call(self, what: str, command: Callable[..., Any], *args: Any) -> Any:
        """A blocking round trip of ``replace`` (the only call not written as steps)."""
        self._gate()
        return self._client.call(f"index {self._name!r}: {what}", command, *args)

    def _command(self, what: str, *args: bytes | int) -> Call:
        """The step of one raw command; the gate first, so a closed store's index makes no call."""
        self._gate()
        return Call(f"index {self._name!r}: {what}", None, (), args)

    # -- properties ---------------------------------------------------------------

    @property
    def name(self) -> Key:
        return self._name

    @property
    def stamp(self) -> Any:
        """The source stamp the last ``replace`` reflects; ``None`` if never built."""
        return run(self.stamp_steps(), self._scripts)

    def stamp_steps(self) -> Steps[Any]:
        built, stamp = yield self._command("stamp", b"HMGET", self._state, b"built", b"stamp")
        if built is None or stamp is None:
            return None
        try:
            return check_stamp(msgpack.unpackb(stamp, raw=False))
        except Exception:  # msgpack raises several unrelated types on bad input
            raise CorruptRecord(f"index state {self._state!r} in Redis holds a damaged stamp") from None

    @property
    def built(self) -> bool:
        """Whether ``replace`` ever ran on this index (``stamp`` may itself be ``None``)."""
        return run(self.built_steps(), self._scripts)

    def built_steps(self) -> Steps[bool]:
        return (yield self._command("built", b"HGET", self._state, b"built")) is not None

    @property
    def dirty_stamp(self) -> int:
        """The stamp ``mark_dirty`` renews: an int that grows by one per call (in any process), 0 at first."""
        return run(self.dirty_stamp_steps(), self._scripts)

    def dirty_stamp_steps(self) -> Steps[int]:
        raw = yield self._command("dirty_stamp", b"HGET", self._state, b"dirty")
        if raw is None:
            return 0
        if not raw.lstrip(b"-").isdigit():
            raise CorruptRecord(f"index state {self._state!r} in Redis holds a damaged dirty stamp")
        return int(raw)

    def __len__(self) -> int:
        return run(self.len_steps(), self._scripts)

    def len_steps(self) -> Steps[int]:
        """``len(index)`` as steps: ``ZCARD``."""
        return int((yield self._command("len", b"ZCARD", self._set)))

    def __contains__(self, member: object) -> bool:
        return run(self.contains_steps(member), self._scripts)

    def contains_steps(self, member: object) -> Steps[bool]:
        """``member in index`` as steps: ``False`` for a non-key without a call, else its ``ZSCORE``."""
        if not isinstance(member, (str, bytes)):
            return False
        return (yield from self.score_steps(member)) is not None

    def __repr__(self) -> str:
        try:
            members: object = len(self)
        except Exception:  # a repr never raises: the count is what Redis could not give
            members = "?"
        return f"SortedIndex({self._name!r}, members={members}, shared)"

    # -- writing ------------------------------------------------------------------

    def add(self, member: Key, score: float) -> None:
        """Set ``member``'s score, moving it if it was already in the index."""
        run(self.add_steps(member, score), self._scripts)

    def add_steps(self, member: Key, score: float) -> Steps[None]:
        tag, value = encode_key(member), _score(score)
        yield self._command("add", b"ZADD", self._set, _number(value), tag)

    def add_many(self, pairs: Pairs) -> None:
        """Add or re-score many members in one ``ZADD``; a later pair for a member wins.

        Every pair is validated first, so bad input changes nothing.
        """
        run(self.add_many_steps(pairs), self._scripts)

    def add_many_steps(self, pairs: Pairs) -> Steps[None]:
        staged = {tag: decode_score(score) for tag, score in iter_pairs(pairs)}
        if staged:
            flat = [part for tag, value in staged.items() for part in (_number(value), tag)]
            yield self._command("add_many", b"ZADD", self._set, *flat)

    def remove(self, member: Key) -> bool:
        """Remove ``member``; ``True`` if it was in the index."""
        return run(self.remove_steps(member), self._scripts)

    def remove_steps(self, member: Key) -> Steps[bool]:
        tag = encode_key(member)
        return bool((yield self._command("remove", b"ZREM", self._set, tag)))

    def mark_dirty(self) -> None:
        """Renew the dirty stamp: the source changed, so a refresher rebuilds the index."""
        run(self.mark_dirty_steps(), self._scripts)

    def mark_dirty_steps(self) -> Steps[None]:
        yield self._command("mark_dirty", b"HINCRBY", self._state, b"dirty", 1)

    def replace(self, pairs: Pairs, stamp: Any = ...) -> None:
        """Rebuild the index from ``pairs`` atomically; readers see the old index or the new.

        ``stamp`` is the source stamp this rebuild reflects; left out, it is the
        dirty stamp as of the call. The new set is built aside and renamed over the
        live one with the stamp in one script: writes made while it builds are
        dropped with the old set, and the last ``replace`` to finish wins. Bad input
        raises and leaves the old index in place (the set built aside is deleted).
        Blocking only (many round trips): the asyncio facade runs it in a thread.
        """
        if stamp is not ...:
            check_stamp(stamp)
        self._gate()
        source = self.dirty_stamp if stamp is ... else stamp
        building = self._building + os.urandom(8).hex().encode()
        try:
            count = self._build_aside(building, pairs)
            swapped = self._scripts.run(
                f"index {self._name!r}: replace", SWAP, [self._set, building, self._state],
                [msgpack.packb(source), str(count)],
            )  # fmt: skip
        except BaseException:
            self._discard(building)
            raise
        if swapped != 1:
            raise CorruptRecord(f"index {self._name!r}: the set built aside expired or changed before the swap")

    def _build_aside(self, building: bytes, pairs: Pairs) -> int:
        """ZADD ``pairs`` into ``building`` in chunks (a chunk and the expiry in one round trip); the count."""
        source = iter_pairs(pairs)
        count = 0
        while chunk := dict(itertools.islice(source, _BUILD_CHUNK)):
            staged = {tag: decode_score(score) for tag, score in chunk.items()}
            pipe = self._redis.pipeline(transaction=False)
            pipe.zadd(building, staged)
            pipe.pexpire(building, _BUILD_TTL_MS)
            pipe.zcard(building)
            count = int(self._call("replace", pipe.execute)[-1])
        return count

    def _discard(self, building: bytes) -> None:
        try:
            self._client.call("index replace", self._redis.delete, building)
        except Exception:  # the first error matters; the set expires anyway
            pass

    # -- reading ------------------------------------------------------------------

    def score(self, member: Key) -> float | None:
        """``member``'s score, or ``None`` when it is not in the index."""
        return run(self.score_steps(member), self._scripts)

    def score_steps(self, member: Key) -> Steps[float | None]:
        tag = encode_key(member)
        score = yield self._command("score", b"ZSCORE", self._set, tag)
        return None if score is None else float(score) + 0.0

    def rank(self, member: Key, reverse: bool = False) -> int | None:
        """0-based position of ``member`` in ``(score, member)`` order."""
        return run(self.rank_steps(member, reverse), self._scripts)

    def rank_steps(self, member: Key, reverse: bool = False) -> Steps[int | None]:
        tag = encode_key(member)
        rank = yield self._command("rank", b"ZREVRANK" if reverse else b"ZRANK", self._set, tag)
        return None if rank is None else int(rank)

    def page(self, offset: int = 0, limit: int = 20, reverse: bool = False) -> list[tuple[Key, float]]:
        """Members ``offset`` to ``offset + limit`` in order (``reverse``: exactly the reverse)."""
        return run(self.page_steps(offset, limit, reverse), self._scripts)

    def page_steps(self, offset: int = 0, limit: int = 20, reverse: bool = False) -> Steps[list[tuple[Key, float]]]:
        _check_count(offset, "offset", minimum=0)
        _check_count(limit, "limit", minimum=0)
        if limit == 0:
            return []
        return (yield from self._ranks_steps("page", offset, offset + limit - 1, reverse))

    def _ranks_steps(self, what: str, start: int, end: int, reverse: bool) -> Steps[list[tuple[Key, float]]]:
        """The members at ranks ``start`` to ``end`` (of the reverse order with ``reverse``), one command."""
        command = b"ZREVRANGE" if reverse else b"ZRANGE"
        return _items((yield self._command(what, command, self._set, start, end, b"WITHSCORES")))

    def page_after(
        self, cursor: str | None, limit: int = 20, reverse: bool = False
    ) -> tuple[list[tuple[Key, float]], str | None]:
        """Keyset pagination: up to ``limit`` members after ``cursor`` and the cursor of the next page.

        As the local ``SortedIndex.page_after``: start with ``cursor=None``;
        ``next_cursor`` is ``None`` after the last page; a cursor names a position,
        valid across writes, rebuilds and processes.
        """
        return run(self.page_after_steps(cursor, limit, reverse), self._scripts)

    def page_after_steps(
        self, cursor: str | None, limit: int = 20, reverse: bool = False
    ) -> Steps[tuple[list[tuple[Key, float]], str | None]]:
        _check_count(limit, "limit", minimum=1)
        position = None if cursor is None else decode_cursor(cursor)
        score = math.nan if position is None else decode_score(position[:8])
        if position is None or math.isnan(score):
            # No cursor, or one encoding no score: a position below -inf or above inf (the local index
            # compares the bytes): every member is after it, or none is.
            if position is not None and (position[:8] < _BOTTOM) == reverse:
                return [], None
            items = yield from self._ranks_steps("page_after", 0, limit, reverse)
        else:
            self._gate()
            flat = yield Call(
                f"index {self._name!r}: page_after", AFTER, [self._set],
                [repr(score), position[8:], str(limit + 1), "1" if reverse else "0"],
            )  # fmt: skip
            items = _items(flat)
            if reverse:
                items.reverse()
        next_cursor = _cursor(*items[limit - 1]) if len(items) > limit else None
        return items[:limit], next_cursor

    def range_by_score(self, lo: float, hi: float, limit: int | None = None) -> list[tuple[Key, float]]:
        """Members with ``lo <= score <= hi`` in order, at most ``limit`` of them."""
        return run(self.range_by_score_steps(lo, hi, limit), self._scripts)

    def range_by_score_steps(self, lo: float, hi: float, limit: int | None = None) -> Steps[list[tuple[Key, float]]]:
        low, high = _score(lo), _score(hi)
        if limit is not None:
            _check_count(limit, "limit", minimum=0)
        if low > high or limit == 0:
            return []
        window: tuple[bytes | int, ...] = () if limit is None else (b"LIMIT", 0, limit)
        found = yield self._command(
            "range_by_score", b"ZRANGEBYSCORE", self._set, _number(low), _number(high), *window, b"WITHSCORES"
        )
        return _items(found)
