"""The asyncio-shared section: ``AsyncTierStore`` in shared mode, its scenario and what each call costs.

On a ``redis-server`` the bench starts itself (as the shared sections do; the
section is skipped with a note without one or without redis-py):

- *Scenario*: the asyncio section's (``aio``: coroutines reading Zipf keys
  through ``get_or_load`` with a 5 ms async source, cold start) run against an
  ``AsyncTierStore(None, shared=URL)`` next to the local ``AsyncTierStore`` and
  aiocache. Redis round trips per op are the shared store's ``shared_calls``
  over the run (its listener's PINGs are not in them).
- *Per call* (``aio_calls``): a get miss, a set and a tier-1 hit of the shared
  store, each against a floor doing the same Redis work with redis.asyncio
  directly, and the first two through ``asyncio.to_thread`` as a reference.

No goals: there are no targets for these figures yet; the ratios are printed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from tierstore.aio import AsyncTierStore

from . import shared
from .aio import SETTINGS, aiocache_reader, scenario, streams_of
from .aio_calls import per_call
from .config import Config
from .redis_server import RedisServer
from .report import Section, fmt, progress, timed

__all__ = ["SECTIONS", "run_aio_shared"]

SECTIONS = ("asyncio-shared",)


def run_aio_shared(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """The section on a redis-server of its own; skipped with a note without redis-server or redis-py."""
    if SECTIONS[0] not in wanted:
        return []
    missing = shared.missing_redis()
    if missing is not None:
        progress(f"asyncio-shared skipped: no {missing[0]} ({missing[1]})")
        return [shared.skipped_section(SECTIONS[0], *missing)]
    binary = shared.find_redis_server()
    assert binary is not None
    root = Path(parent) / "asyncio-shared"
    (root / "redis").mkdir(parents=True)
    server = RedisServer(binary, root / "redis")
    server.start()
    try:
        return [timed(lambda: asyncio.run(_section(config, server, root)))]
    finally:
        server.stop()


async def _section(config: Config, server: RedisServer, root: Path) -> Section:
    section = Section(
        SECTIONS[0],
        f"asyncio-shared: {config.aio_coroutines:,} coroutines x {config.aio_ops} Zipf reads over "
        f"{config.aio_keys:,} keys, {config.source_delay * 1000:g} ms async source, cold start; "
        "AsyncTierStore over Redis",
        columns=["system", "ops/s", "p99 ms", "source calls", "distinct keys", "round trips/op"],
    )
    streams = streams_of(config)
    distinct = len({key for stream in streams for key in stream})
    progress("asyncio-shared: local AsyncTierStore")
    async with AsyncTierStore(str(root / "local"), **SETTINGS) as local:
        _row(section, "tierstore AsyncTierStore, local", await _run(local, streams, config), distinct)
    progress("asyncio-shared: AsyncTierStore in shared mode")
    s = await AsyncTierStore.open(None, shared=server.url, namespace=f"bench-aio-{os.getpid()}", **SETTINGS)
    try:
        figures = await _connections_counted(server, _run(s, streams, config))
        _row(section, "tierstore AsyncTierStore, shared", figures, distinct)
        progress("asyncio-shared: per-call costs against redis.asyncio")
        costs = await per_call(s, server.socket, config)
    finally:
        await s.close()
    await _aiocache(section, streams, config, distinct)
    section.figures["per call"] = costs
    _notes(section, costs, figures["redis_connections_opened"], server)
    return section


async def _run(s: AsyncTierStore, streams: list[list[str]], config: Config) -> dict[str, Any]:
    """The scenario on ``s``, with the Redis round trips it took (``shared_calls``: 0 for a local store)."""
    store = s.store
    assert store is not None
    before = store.stats().get("shared_calls", 0)
    figures = await scenario(lambda key, load: s.get_or_load(key, load), streams, config.source_delay)
    figures["round_trips"] = store.stats().get("shared_calls", 0) - before
    figures["round_trips_per_op"] = figures["round_trips"] / figures["ops"]
    return figures


async def _connections_counted(server: RedisServer, run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """``run``'s figures with the connections Redis accepted meanwhile (``INFO stats``, read before and after)."""
    import redis

    with redis.Redis(unix_socket_path=server.socket) as info:
        before = int(info.info("stats")["total_connections_received"])
        figures = await run
        figures["redis_connections_opened"] = int(info.info("stats")["total_connections_received"]) - before
    return figures


async def _aiocache(section: Section, streams: list[list[str]], config: Config, distinct: int) -> None:
    try:
        from aiocache import SimpleMemoryCache
    except ImportError:
        section.skip("aiocache", "pip install aiocache")
        return
    progress("asyncio-shared: aiocache")
    cache = SimpleMemoryCache()
    figures = await scenario(aiocache_reader(cache), streams, config.source_delay)
    await cache.close()
    _row(section, "aiocache SimpleMemoryCache + RedLock", figures, distinct, trips=False)


def _row(section: Section, name: str, figures: dict[str, Any], distinct: int, *, trips: bool = True) -> None:
    section.figures[name] = {**figures, "distinct_keys": distinct}
    per_op = figures["round_trips_per_op"] if trips else ""
    section.rows.append([name, figures["ops_per_s"], figures["p99_ms"], figures["source_calls"], distinct, per_op])


def _notes(section: Section, costs: dict[str, dict[str, Any]], connections: int, server: RedisServer) -> None:
    from tierstore.shared.aio_redis import MAX_CONNECTIONS  # redis-py is there: the section ran

    section.notes.append(
        f"the shared store's scenario: {connections:,} Redis connections opened (a round trip takes an idle "
        f"connection of its loop or opens one, at most {MAX_CONNECTIONS} in use per loop: the others queue)"
    )
    for name, case in costs.items():
        us, floor = case["us_per_call"], case["floor"]
        trips = case["round_trips_per_call"]
        parts = [
            f"{who} {fmt(us[who])} us ({trips[who]:g} round trip/call): {ratio:.2f}x"
            for who, ratio in case["ratio_to_floor"].items()
        ]
        parts += [f"{who} / {list(us)[1]}: {ratio:.2f}x" for who, ratio in case["ratio_to_ours"].items()]
        section.notes.append(
            f"per call, {name}: {floor} {fmt(us[floor])} us; {'; '.join(parts)} "
            f"(medians of {case['rounds']} interleaved rounds of {case['calls']:,} calls)"
        )
    section.notes.append(
        "round trips/op: the shared store's shared_calls over the run (its listener's PINGs aside); "
        "floors: a redis.asyncio.Redis(unix_socket_path=..., protocol=2) on the same server, HMGET of the "
        "entry's hash, EVALSHA of the SET script with the keys and ARGV the store built for that set"
    )
    section.notes.append(
        f"Redis on a unix socket, started by the bench ({server.binary}): --save '' --appendonly no; "
        "AsyncTierStore(None, shared=URL, checkpoint_interval=None, sweep_interval=None), "
        "the local one the same with a path"
    )
