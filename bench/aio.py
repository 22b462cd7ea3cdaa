"""The asyncio section: ``AsyncTierStore`` under 1,000 concurrent coroutines, and its hot-path cost.

- *Scenario*: ``aio_coroutines`` coroutines each read ``aio_ops`` Zipf-distributed
  keys (``zipf_s``) over ``aio_keys`` keys through cache-aside with a 5 ms async
  source (``asyncio.sleep``), starting cold. tierstore: ``await
  s.get_or_load(key, source)``. The peer is aiocache's ``SimpleMemoryCache`` with
  its own stampede lock (``aiocache.lock.RedLock``: get, else take the key's lock,
  get again, load and set), the pattern aiocache documents. The sync store runs
  the same scenario from the same coroutines the way code without an async
  facade would: ``await asyncio.to_thread(store.get_or_load, key, source)``
  with a blocking 5 ms source (``time.sleep``), on asyncio's default executor.
  Reported: ops/s, p99 latency of one read, and source calls (the fewest
  possible is the number of distinct keys read).
- *Micro-goal*: a tier-1 hit through ``await s.get(k)`` against the sync
  ``get`` plus one bare ``await`` of a trivial coroutine, in interleaved rounds
  (median of the per-round ratios, as in the hot-path section): at most 1.5x.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import itertools
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tierstore import TierStore
from tierstore.aio import AsyncTierStore

from .config import Config
from .measure import median, percentile
from .report import Goal, Section, progress, timed
from .workloads import sample_value

__all__ = [
    "run_aio", "SECTIONS", "SETTINGS", "Reader", "aiocache_reader", "scenario", "streams_of", "to_thread_reader",
    "zipf_keys",
]

SECTIONS = ("asyncio",)
_LEASE = 2.0  # aiocache RedLock lease, seconds: far longer than a load
SETTINGS: dict[str, Any] = {"checkpoint_interval": None, "sweep_interval": None}
ns = time.perf_counter_ns


def zipf_keys(keys: int, count: int, s: float, seed: int) -> list[str]:
    """``count`` keys drawn from ``keys`` keys with Zipf weights ``1 / rank**s`` (reproducible)."""
    cumulative = list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, keys + 1)))
    draw = random.Random(seed).random
    total = cumulative[-1]
    return [f"key:{bisect.bisect_left(cumulative, draw() * total)}" for _ in range(count)]


def streams_of(config: Config) -> list[list[str]]:
    """The scenario's key streams, one per coroutine (each its own seed)."""
    return [
        zipf_keys(config.aio_keys, config.aio_ops, config.zipf_s, config.seed + i) for i in range(config.aio_coroutines)
    ]


def run_aio(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """The asyncio scenario against aiocache, and the await-overhead goal."""
    return [timed(lambda: asyncio.run(_section(config, parent)))]


async def _section(config: Config, parent: str) -> Section:
    root = os.path.join(parent, "asyncio")
    os.makedirs(root)
    section = Section(
        "asyncio",
        f"asyncio: {config.aio_coroutines:,} coroutines x {config.aio_ops} Zipf reads over {config.aio_keys:,} keys, "
        f"{config.source_delay * 1000:g} ms async source, cold start",
        columns=["system", "ops/s", "p99 ms", "source calls", "distinct keys"],
    )
    streams = streams_of(config)
    distinct = len({key for stream in streams for key in stream})
    progress("asyncio: tierstore")
    async with AsyncTierStore(os.path.join(root, "tierstore"), **SETTINGS) as s:
        ours = await scenario(lambda key, load: s.get_or_load(key, load), streams, config.source_delay)
        section.figures["hot await get"] = await _await_overhead(s, config)
    _report(section, "tierstore AsyncTierStore.get_or_load", ours, distinct)
    progress("asyncio: the sync store through asyncio.to_thread")
    with TierStore(os.path.join(root, "sync"), **SETTINGS) as store:
        threaded = await scenario(to_thread_reader(store), streams, config.source_delay, blocking=True)
    _report(section, _THREADED, threaded, distinct)
    section.figures["AsyncTierStore / to_thread(TierStore) ops/s"] = ours["ops_per_s"] / threaded["ops_per_s"]
    try:
        from aiocache import SimpleMemoryCache
    except ImportError:
        section.skip("aiocache", "pip install aiocache")
    else:
        progress("asyncio: aiocache")
        cache = SimpleMemoryCache()
        theirs = await scenario(aiocache_reader(cache), streams, config.source_delay)
        await cache.close()
        _report(section, "aiocache SimpleMemoryCache + RedLock", theirs, distinct)
        section.figures["tierstore / aiocache ops/s"] = ours["ops_per_s"] / theirs["ops_per_s"]
    hot = section.figures["hot await get"]
    section.goals.append(Goal("await get (tier-1 hit) / (get + bare await)", hot["ratio"], "<=", 1.5))
    section.goals.append(Goal("tierstore source calls / distinct keys", ours["source_calls"] / distinct, "==", 1.0))
    section.notes.append(
        f"{_THREADED}: the sync TierStore (same settings) from the same coroutines, each read in asyncio's default "
        f"executor ({_default_workers()} threads here) with a blocking source (time.sleep of the same 5 ms)"
    )
    section.notes.append(
        f"await get, tier-1 hit: {hot['ours_ns_per_op']:.0f} ns against {hot['theirs_ns_per_op']:.0f} ns for the sync "
        f"get plus one bare await (median of {15 * config.hot_rounds} interleaved rounds of 1,000 calls)"
    )
    section.notes.append(
        "aiocache: get, else async with RedLock(cache, key, lease=2): get again, else load and set "
        "(its documented stampede pattern); tierstore: AsyncTierStore(path, checkpoint_interval=None, "
        "sweep_interval=None).get_or_load(key, loader) with a coroutine loader"
    )
    return section


Reader = Callable[[str, Callable[[], Any]], Awaitable[Any]]
_THREADED = "tierstore TierStore.get_or_load in asyncio.to_thread"


def to_thread_reader(store: TierStore) -> Reader:
    """The sync store read from coroutines through ``asyncio.to_thread`` (its loader blocks a worker thread)."""

    async def read(key: str, load: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(store.get_or_load, key, load)

    return read


def _default_workers() -> int:
    """The thread count of asyncio's default executor (``ThreadPoolExecutor``'s default)."""
    return min(32, (os.cpu_count() or 1) + 4)


async def scenario(read: Reader, streams: list[list[str]], delay: float, *, blocking: bool = False) -> dict[str, Any]:
    """Every coroutine reads its stream; ops/s over the whole run, p99 of single reads, source calls.

    ``blocking``: the source is a plain function sleeping in its thread, for a reader that runs loads in threads.
    """
    calls = itertools.count()
    latencies: list[int] = []

    def loader_of(key: str) -> Callable[[], Any]:
        async def load() -> Any:
            next(calls)
            await asyncio.sleep(delay)
            return sample_value(len(key))

        def load_blocking() -> Any:
            next(calls)  # one C call: atomic from several threads
            time.sleep(delay)
            return sample_value(len(key))

        return load_blocking if blocking else load

    async def reader(stream: list[str]) -> None:
        for key in stream:
            t0 = ns()
            await read(key, loader_of(key))
            latencies.append(ns() - t0)

    gc.collect()
    started = time.perf_counter()
    await asyncio.gather(*[reader(stream) for stream in streams])
    elapsed = time.perf_counter() - started
    ops = sum(len(stream) for stream in streams)
    return {
        "ops": ops,
        "seconds": elapsed,
        "ops_per_s": ops / elapsed,
        "p99_ms": percentile(latencies, 99) / 1e6,
        "source_calls": next(calls),
    }


def aiocache_reader(cache: Any) -> Reader:
    from aiocache.lock import RedLock

    async def read(key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        value = await cache.get(key)
        if value is not None:
            return value
        async with RedLock(cache, key, lease=_LEASE):
            value = await cache.get(key)
            if value is None:
                value = await load()
                await cache.set(key, value)
            return value

    return read


def _report(section: Section, name: str, figures: dict[str, Any], distinct: int) -> None:
    section.figures[name] = {**figures, "distinct_keys": distinct}
    section.rows.append([name, figures["ops_per_s"], figures["p99_ms"], figures["source_calls"], distinct])


async def _await_overhead(s: AsyncTierStore, config: Config) -> dict[str, Any]:
    """``await s.get(k)`` on tier-1 hits against ``get(k)`` plus one bare ``await``, interleaved rounds.

    Many short rounds (1,000 calls, well under a millisecond each: 15 times the
    hot-path section's rounds), so that a burst of a noisy neighbour spoils a few
    rounds rather than moving the median.
    """
    rounds = 15 * config.hot_rounds
    keys = [f"hot:{i}" for i in range(1000)]
    for key in keys:
        await s.set(key, sample_value(7))
    sequence = list(keys)
    aget = s.get
    store = s.store
    assert store is not None
    get = store.get

    async def trivial() -> None:
        return None

    async def ours() -> int:
        t0 = ns()
        for key in sequence:
            await aget(key)
        return ns() - t0

    async def theirs() -> int:
        t0 = ns()
        for key in sequence:
            get(key)
            await trivial()
        return ns() - t0

    await ours(), await theirs()
    ratios, ours_ns, theirs_ns = [], [], []
    for round_ in range(rounds):
        gc.collect()
        if round_ % 2:  # alternate which goes first: neither always runs on a cooler cache
            b, a = await theirs(), await ours()
        else:
            a, b = await ours(), await theirs()
        ours_ns.append(a)
        theirs_ns.append(b)
        ratios.append(a / b)
    return {
        "ratio": median(ratios),
        "ratios": [round(r, 3) for r in ratios],
        "ours_ns_per_op": median(ours_ns) / len(sequence),
        "theirs_ns_per_op": median(theirs_ns) / len(sequence),
    }
