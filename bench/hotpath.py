"""Hot-path ratios: tierstore's calls against the least work the raw libraries need.

Each case is a pair of loops over the same keys, timed in interleaved rounds
(ours, raw, ours, raw, ...); the figure is the median of the per-round ratios,
so the machine's drift cancels out. The raw side is written inline in its loop
(no function frame), the strictest floor there is.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any

import cachetools
import msgpack
import plyvel

from tierstore import TierStore
from tierstore.disk import DEFAULT_CACHE_BYTES

from .config import Config
from .measure import median
from .report import Goal, Section, progress, timed
from .workloads import sample_value

__all__ = ["run_hotpath", "SECTIONS"]

SECTIONS = ("hotpath",)
GOAL = 1.5
_KEYS_HOT = 1_000
_KEYS_COLD = 5_000
_COLD_TIER1 = 16

Loop = Callable[[], int]  # runs its loop once, returns elapsed ns
ns = time.perf_counter_ns


def _repeat(keys: list[bytes], count: int) -> list[bytes]:
    return (keys * (count // len(keys) + 1))[:count]


def _calls(fn: Callable[[bytes], Any], keys: list[bytes]) -> Loop:
    """A timed loop calling ``fn`` once per key: no frame but the call itself."""

    def loop() -> int:
        t0 = ns()
        for key in keys:
            fn(key)
        return ns() - t0

    return loop


def _tier1_get(store: TierStore, lru: cachetools.LRUCache[bytes, Any], keys: list[bytes]) -> tuple[Loop, Loop]:
    return _calls(store.get, keys), _calls(lru.get, keys)


def _tier2_get(store: TierStore, db: Any, keys: list[bytes]) -> tuple[Loop, Loop]:
    db_get, unpackb = db.get, msgpack.unpackb

    def raw() -> int:
        t0 = ns()
        for key in keys:
            unpackb(db_get(key))
        return ns() - t0

    return _calls(store.get, keys), raw


def _set(store: TierStore, db: Any, keys: list[bytes], versioned: bool) -> tuple[Loop, Loop]:
    put, db_get, db_put, packb = store.set, db.get, db.put, msgpack.packb
    value = sample_value(7)
    base = [1]

    def ours() -> int:
        versions = range(base[0], base[0] + len(keys))
        base[0] += len(keys)
        pairs = list(zip(keys, versions, strict=True))
        t0 = ns()
        if versioned:
            for key, version in pairs:
                put(key, value, version=version)
        else:
            for key, _ in pairs:
                put(key, value)
        return ns() - t0

    def raw() -> int:
        pairs = list(zip(keys, range(len(keys)), strict=True))
        t0 = ns()
        for key, _ in pairs:
            db_get(key)
            db_put(key, packb(value))
        return ns() - t0

    return ours, raw


def _rounds(ours: Loop, raw: Loop, rounds: int) -> dict[str, Any]:
    ours(), raw()  # warm-up
    ratios, ours_ns, raw_ns = [], [], []
    for _ in range(rounds):
        gc.collect()
        a = ours()
        b = raw()
        ours_ns.append(a)
        raw_ns.append(b)
        ratios.append(a / b)
    return {"ratio": median(ratios), "ratios": [round(r, 3) for r in ratios], "ours_ns": ours_ns, "raw_ns": raw_ns}


def _fill(store: TierStore, db: Any, keys: list[bytes]) -> None:
    value = sample_value(7)
    for key in keys:
        store.set(key, value)
        db.put(key, msgpack.packb(value))


def run_hotpath(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """Tier-1 get, tier-2 get and set (plain and versioned) against the raw floors."""
    return [timed(lambda: _hotpath_section(config, parent))]


def _hotpath_section(config: Config, parent: str) -> Section:
    root = os.path.join(parent, "hotpath")
    os.makedirs(root)
    hot = [b"hot:%06d" % i for i in range(_KEYS_HOT)]
    cold = [b"cold:%06d" % i for i in range(_KEYS_COLD)]
    warm_store = TierStore(os.path.join(root, "warm"), memory_items=_KEYS_HOT * 2, checkpoint_interval=None)
    cold_store = TierStore(os.path.join(root, "cold"), memory_items=_COLD_TIER1, checkpoint_interval=None)
    db = plyvel.DB(os.path.join(root, "raw"), create_if_missing=True, lru_cache_size=DEFAULT_CACHE_BYTES)
    lru: cachetools.LRUCache[bytes, Any] = cachetools.LRUCache(maxsize=_KEYS_HOT * 2)
    try:
        _fill(warm_store, db, hot)
        _fill(cold_store, db, cold)
        for key in hot:
            lru[key] = warm_store.get(key)
        count = config.hot_ops
        cases: list[tuple[str, str, tuple[Loop, Loop]]] = [
            ("tier-1 hit get", "LRUCache.get", _tier1_get(warm_store, lru, _repeat(hot, count))),
            ("tier-2 hit get", "DB.get + unpackb", _tier2_get(cold_store, db, _repeat(cold, count))),
            ("set", "DB.get + put + packb", _set(warm_store, db, _repeat(hot, count // 2), False)),
            ("set(version=)", "DB.get + put + packb", _set(warm_store, db, _repeat(hot, count // 2), True)),
        ]
        section = Section(
            "hotpath",
            f"hot path: median of {config.hot_rounds} interleaved rounds of per-round ratios",
            columns=["call", "raw floor", "ours ns/op", "raw ns/op", "ratio"],
        )
        for name, floor, (ours, raw) in cases:
            progress(f"hotpath: {name}")
            figures = _rounds(ours, raw, config.hot_rounds)
            ops = count if "get" in name else count // 2
            figures["ours_ns_per_op"] = median(figures.pop("ours_ns")) / ops
            figures["raw_ns_per_op"] = median(figures.pop("raw_ns")) / ops
            section.figures[name] = figures
            section.rows.append([name, floor, figures["ours_ns_per_op"], figures["raw_ns_per_op"], figures["ratio"]])
            section.goals.append(Goal(f"{name} / {floor}", figures["ratio"], "<=", GOAL))
        section.notes.append(f"tier-2 case: tier 1 holds {_COLD_TIER1} items, the loop cycles {_KEYS_COLD:,} keys")
        return section
    finally:
        warm_store.close()
        cold_store.close()
        db.close()
