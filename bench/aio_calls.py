"""Per-call costs of ``AsyncTierStore`` in shared mode, each against a floor doing the same Redis work.

The floors use redis.asyncio directly (a ``redis.asyncio.Redis`` on the same
socket, RESP2). Interleaved rounds whose order rotates; the figure is the
median of the per-round ratios (as in the hot-path section), so the machine's
drift cancels out:

- ``get`` of a key no tier holds (one ``HMGET`` in Redis) against ``HMGET`` of
  the same hash;
- ``set`` (one ``EVALSHA`` of the SET script) against ``EVALSHA`` of that script
  with the keys and ARGV the store built for a set of the same key and value
  (taken from its write steps before their round trip): the same script path
  in Redis and the same message published with the store's origin, which its
  listener skips as it skips its own;
- a tier-1 hit against the sync ``get`` plus a bare ``await`` (as the asyncio
  section measures the local store).

The get miss and the set through ``asyncio.to_thread`` on the blocking store
are a reference (the other design: blocking calls in threads), not a floor.
Each call's round trips are counted too (``shared_calls`` over one more pass).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tierstore import TierStore
from tierstore.aio import AsyncTierStore
from tierstore.codec import encode_key
from tierstore.shared.scripts import SET
from tierstore.shared.steps import Call

from .config import Config
from .measure import median
from .workloads import sample_value

__all__ = ["per_call"]

Loop = Callable[[], Awaitable[int]]  # one pass over its keys; elapsed ns
ns = time.perf_counter_ns
_CALLS = 100  # Redis calls per loop: a few milliseconds and more rounds, so a noisy neighbour spoils few of them
_HOT = 1_000  # tier-1 hits per loop (as the asyncio section's)


def _set_call(store: TierStore, key: str, value: Any) -> Call:
    """The SET script call the store builds for ``set(key, value)``: its write steps' first round trip,
    taken before it is made (closing the steps then only forgets any local copy of ``key``)."""
    assert store._shared is not None
    steps = store._shared.writes.write_steps(key, value)
    call = next(steps)
    steps.close()
    if not (isinstance(call, Call) and call.script is SET):
        raise RuntimeError(f"the store's set of {key!r} began with {call!r}, not the SET script")
    return call


def _passes(call: Callable[..., Awaitable[Any]], arguments: list[tuple[Any, ...]]) -> Loop:
    """A loop awaiting ``call(*args)`` for each of ``arguments`` (built beforehand: no frame of ours per call)."""

    async def loop() -> int:
        t0 = ns()
        for args in arguments:
            await call(*args)
        return ns() - t0

    return loop


async def _trivial() -> None:
    return None


def _sync_hits(get: Callable[[str], Any], keys: list[str]) -> Loop:
    """The tier-1 hit's floor, inline as in the asyncio section: the sync ``get`` and one bare ``await``."""

    async def loop() -> int:
        t0 = ns()
        for key in keys:
            get(key)
            await _trivial()
        return ns() - t0

    return loop


class _Calls:
    """The per-call cases on one shared store: ours, the floor on ``r`` (a redis.asyncio client), a thread's."""

    def __init__(self, s: AsyncTierStore, r: Any) -> None:
        store = s.store
        assert store is not None and store._shared is not None
        self.s, self.store, self.r = s, store, r
        self.value = sample_value(7)
        self.absent = [f"absent:{i}" for i in range(_CALLS)]
        self.written = [f"written:{i}" for i in range(_CALLS)]
        self.hot = [f"hot:{i}" for i in range(_HOT)]
        self.names = store._shared.client.names

    async def prepare(self) -> None:
        """Write the hot keys (a write's copy enters tier 1)."""
        for key in self.hot:
            await self.s.set(key, self.value)

    async def cases(self) -> dict[str, tuple[dict[str, Loop], int]]:
        """Each case: its loops, the floor first and ours second, and the calls per loop."""
        s, store, value, to_thread, command = self.s, self.store, self.value, asyncio.to_thread, self.r.execute_command
        fields = (b"d", b"v", b"s", b"e")
        digest = await self.r.script_load(SET)
        scripts = [_set_call(store, key, value) for key in self.written]
        return {
            "get, key no tier holds": (
                {
                    "redis.asyncio HMGET": _passes(
                        command, [("HMGET", self.names.entry(encode_key(key)), *fields) for key in self.absent]
                    ),
                    "AsyncTierStore.get": _passes(s.get, [(key,) for key in self.absent]),
                    "asyncio.to_thread(TierStore.get)": _passes(to_thread, [(store.get, key) for key in self.absent]),
                },
                _CALLS,
            ),
            "set": (
                {
                    "redis.asyncio EVALSHA of SET": _passes(
                        command, [("EVALSHA", digest, len(call.keys), *call.keys, *call.args) for call in scripts]
                    ),
                    "AsyncTierStore.set": _passes(s.set, [(key, value) for key in self.written]),
                    "asyncio.to_thread(TierStore.set)": _passes(
                        to_thread, [(store.set, key, value) for key in self.written]
                    ),
                },
                _CALLS,
            ),
            "get, tier-1 hit": (
                {
                    "TierStore.get + bare await": _sync_hits(store.get, self.hot),
                    "AsyncTierStore.get": _passes(s.get, [(key,) for key in self.hot]),
                },
                _HOT,
            ),
        }

    async def round_trips(self, loop: Loop) -> int:
        """The Redis round trips the store makes in one more pass of ``loop`` (``shared_calls``)."""
        before = self.store.stats()["shared_calls"]
        await loop()
        return self.store.stats()["shared_calls"] - before


async def per_call(s: AsyncTierStore, socket: str, config: Config) -> dict[str, dict[str, Any]]:
    """Every case on the shared store ``s``, the floors on Redis at ``socket``: per loop its microseconds and
    round trips per call, and the median per-round ratios (more rounds for the sub-microsecond tier-1 hits)."""
    import redis.asyncio

    r = redis.asyncio.Redis(unix_socket_path=socket, protocol=2)
    try:
        calls = _Calls(s, r)
        await calls.prepare()
        gc.collect()
        gc.freeze()  # what exists now is never traced again: each round's collection sees only its own garbage
        try:
            costs = {}
            for name, (loops, count) in (await calls.cases()).items():
                rounds = (15 if count == _HOT else 6) * config.hot_rounds
                costs[name] = await _interleaved(loops, rounds, count)
                costs[name]["round_trips_per_call"] = {
                    who: await calls.round_trips(loop) / count for who, loop in list(loops.items())[1:]
                }
            return costs
        finally:
            gc.unfreeze()
    finally:
        await r.aclose()


async def _interleaved(loops: dict[str, Loop], rounds: int, calls: int) -> dict[str, Any]:
    """Each loop once per round, the order rotating; ns per pass and median per-round ratios: every loop's
    to the first (the floor), and the third's (a thread's) to the second (ours)."""
    names = list(loops)
    for loop in loops.values():
        await loop()  # warm: connections, threads, caches
    times: dict[str, list[int]] = {name: [] for name in names}
    for round_ in range(rounds):
        gc.collect()
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(await loops[name]())

    def ratio(a: str, b: str) -> float:
        return median([x / y for x, y in zip(times[a], times[b], strict=True)])

    return {
        "floor": names[0],
        "rounds": rounds,
        "calls": calls,
        "us_per_call": {name: median(times[name]) / calls / 1000 for name in names},
        "ratio_to_floor": {name: ratio(name, names[0]) for name in names[1:]},
        "ratio_to_ours": {name: ratio(name, names[1]) for name in names[2:]},
    }
