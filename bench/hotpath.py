"""Hot-path ratios: tierstore's calls against the least work the raw libraries need, and against diskcache.

Each case is a pair of loops over the same keys, timed in interleaved rounds
(ours, theirs, ours, theirs, ...); the figure is the median of the per-round
ratios, so the machine's drift cancels out. A raw floor does exactly the work
of the call it is compared with, written inline in its loop (no function
frame): an unversioned ``set`` against ``DB.put`` + ``packb``, a versioned one
against ``DB.get`` + ``DB.put`` + ``packb``. diskcache is timed the same way on
its own directory holding the same keys and values; its figure is the other
way round (diskcache's time over ours), since there we should be the faster.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cachetools
import msgpack

from tierstore import TierStore
from tierstore._plyvel import plyvel
from tierstore.disk import DEFAULT_CACHE_BYTES

from .config import Config
from .measure import median
from .report import Goal, Section, progress, timed
from .settings import settings_note
from .systems import diskcache_available
from .workloads import sample_value

__all__ = ["run_hotpath", "SECTIONS", "Case", "get_floor", "set_floor", "set_loop"]

SECTIONS = ("hotpath",)
_KEYS_HOT = 1_000
_KEYS_COLD = 5_000
_COLD_TIER1 = 16
_PEER_SET_SHARE = 8  # diskcache's set takes 10-15x ours: its loop runs 1/8 of our calls, timed per call
_WARM: dict[str, Any] = {"memory_items": _KEYS_HOT * 2, "checkpoint_interval": None}
_COLD: dict[str, Any] = {"memory_items": _COLD_TIER1, "checkpoint_interval": None}

Loop = Callable[[], int]  # runs its loop once, returns elapsed ns
ns = time.perf_counter_ns


@dataclass
class Case:
    """One call of ours against another way of doing the same work, and the goal of their ratio."""

    call: str  # our call
    other: str  # what it is compared with
    ours: Loop
    theirs: Loop
    ops: int  # calls per loop
    op: str  # the goal's comparison
    target: float
    peer: bool = False  # True: the figure is theirs / ours (a peer we should beat), else ours / theirs
    their_ops: int = 0  # calls per loop of theirs, when fewer than ours (a slow peer); 0: ``ops``

    @property
    def other_ops(self) -> int:
        return self.their_ops or self.ops

    @property
    def key(self) -> str:
        """The case's name in the JSON."""
        return f"{self.call} vs {self.other}" if self.peer else self.call

    @property
    def goal_name(self) -> str:
        return f"{self.other} / tierstore {self.call}" if self.peer else f"{self.call} / {self.other}"


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


def get_floor(db: Any, keys: list[bytes]) -> Loop:
    """The floor of a tier-2 hit: ``DB.get`` and ``unpackb``."""
    db_get, unpackb = db.get, msgpack.unpackb

    def raw() -> int:
        t0 = ns()
        for key in keys:
            unpackb(db_get(key))
        return ns() - t0

    return raw


def set_floor(db: Any, keys: list[bytes], value: Any, versioned: bool) -> Loop:
    """The floor of a ``set``: ``DB.put`` + ``packb``; a versioned one also reads the key (``DB.get``)."""
    db_get, db_put, packb = db.get, db.put, msgpack.packb
    pairs = list(zip(keys, range(len(keys)), strict=True))  # the shape our versioned loop walks

    def put_only() -> int:
        t0 = ns()
        for key in keys:
            db_put(key, packb(value))
        return ns() - t0

    def get_put() -> int:
        t0 = ns()
        for key, _ in pairs:
            db_get(key)
            db_put(key, packb(value))
        return ns() - t0

    return get_put if versioned else put_only


def set_loop(put: Callable[..., Any], keys: list[bytes], value: Any, versioned: bool) -> Loop:
    """Our ``set`` over ``keys``; versioned, each round stamps versions above the last round's."""
    base = [1]

    def plain() -> int:
        t0 = ns()
        for key in keys:
            put(key, value)
        return ns() - t0

    def stamped() -> int:
        pairs = list(zip(keys, range(base[0], base[0] + len(keys)), strict=True))
        base[0] += len(keys)
        t0 = ns()
        for key, version in pairs:
            put(key, value, version=version)
        return ns() - t0

    return stamped if versioned else plain


def _rounds(case: Case, rounds: int) -> dict[str, Any]:
    """Interleaved rounds after one warm-up of each; the figure is the median per-round ratio."""
    case.ours(), case.theirs()
    ratios, ours_ns, theirs_ns = [], [], []
    for _ in range(rounds):
        gc.collect()
        a = case.ours() / case.ops  # per call: a slow peer runs fewer calls per loop
        b = case.theirs() / case.other_ops
        ours_ns.append(a)
        theirs_ns.append(b)
        ratios.append(b / a if case.peer else a / b)
    return {
        "compared_with": case.other,
        "ratio": median(ratios),
        "ratio_of": "theirs / ours" if case.peer else "ours / theirs",
        "ratios": [round(r, 3) for r in ratios],
        "ours_ns_per_op": median(ours_ns),
        "theirs_ns_per_op": median(theirs_ns),
        "ops_per_loop": case.ops,
        "their_ops_per_loop": case.other_ops,
    }


def _fill(store: TierStore, keys: list[bytes]) -> None:
    value = sample_value(7)
    for key in keys:
        store.set(key, value)


class _Bench:
    """The stores, the raw LevelDB, the LRU and diskcache the cases run on, all holding the same data."""

    def __init__(self, root: str) -> None:
        self.hot = [b"hot:%06d" % i for i in range(_KEYS_HOT)]
        self.cold = [b"cold:%06d" % i for i in range(_KEYS_COLD)]
        self.warm = TierStore(os.path.join(root, "warm"), **_WARM)
        self.cold_store = TierStore(os.path.join(root, "cold"), **_COLD)
        self.versioned = TierStore(os.path.join(root, "versioned"), **_WARM)  # versions never reach self.warm
        self.db = plyvel.DB(os.path.join(root, "raw"), create_if_missing=True, lru_cache_size=DEFAULT_CACHE_BYTES)
        self.lru: cachetools.LRUCache[bytes, Any] = cachetools.LRUCache(maxsize=_KEYS_HOT * 2)
        self.peer: Any = None
        if diskcache_available():
            import diskcache

            self.peer = diskcache.Cache(os.path.join(root, "diskcache"))
        self._fill()

    def _fill(self) -> None:
        value = sample_value(7)
        _fill(self.warm, self.hot)
        _fill(self.versioned, self.hot)
        _fill(self.cold_store, self.cold)
        for key in self.hot + self.cold:
            self.db.put(key, msgpack.packb(value))
        for key in self.hot:
            self.lru[key] = self.warm.get(key)
        if self.peer is not None:
            with self.peer.transact():
                for key in self.hot + self.cold:
                    self.peer.set(key, value)

    def cases(self, count: int) -> list[Case]:
        """Every case, gets over ``count`` keys and sets over half as many."""
        value = sample_value(7)
        hot, cold, half = _repeat(self.hot, count), _repeat(self.cold, count), _repeat(self.hot, count // 2)
        sets = len(half)
        tier1_get, tier2_get = _calls(self.warm.get, hot), _calls(self.cold_store.get, cold)
        plain_set = set_loop(self.warm.set, half, value, versioned=False)
        stamped_set = set_loop(self.versioned.set, half, value, versioned=True)
        cases = [
            Case("tier-1 hit get", "LRUCache.get", tier1_get, _calls(self.lru.get, hot), count, "<=", 1.0),
            Case("tier-2 hit get", "DB.get + unpackb", tier2_get, get_floor(self.db, cold), count, "<=", 2.0),
            Case("set", "DB.put + packb", plain_set, set_floor(self.db, half, value, False), sets, "<=", 1.5),
            Case(
                "set(version=)",
                "DB.get + put + packb",
                stamped_set,
                set_floor(self.db, half, value, True),
                sets,
                "<=",
                1.5,
            ),
        ]
        if self.peer is not None:
            few = half[: max(1, sets // _PEER_SET_SHARE)]
            peer_get, peer_set = _calls(self.peer.get, cold), set_loop(self.peer.set, few, value, versioned=False)
            cases.append(Case("tier-2 hit get", "diskcache get", tier2_get, peer_get, count, ">=", 4.0, peer=True))
            cases.append(Case("set", "diskcache set", plain_set, peer_set, sets, ">=", 10.0, True, len(few)))
        return cases

    def close(self) -> None:
        for store in (self.warm, self.cold_store, self.versioned):
            store.close()
        self.db.close()
        if self.peer is not None:
            self.peer.close()


def run_hotpath(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """Tier-1 get, tier-2 get and set (plain and versioned) against the raw floors and diskcache."""
    return [timed(lambda: _hotpath_section(config, parent))]


def _hotpath_section(config: Config, parent: str) -> Section:
    root = os.path.join(parent, "hotpath")
    os.makedirs(root)
    section = Section(
        "hotpath",
        f"hot path: median of {config.hot_rounds} interleaved rounds of per-round ratios",
        columns=["call", "compared with", "ours ns/op", "theirs ns/op", "ratio", "ratio of"],
    )
    bench = _Bench(root)
    try:
        for case in bench.cases(config.hot_ops):
            progress(f"hotpath: {case.key}")
            figures = _rounds(case, config.hot_rounds)
            section.figures[case.key] = figures
            measured = [figures[name] for name in ("ours_ns_per_op", "theirs_ns_per_op", "ratio", "ratio_of")]
            section.rows.append([case.call, case.other, *measured])
            section.goals.append(Goal(case.goal_name, figures["ratio"], case.op, case.target))
        if bench.peer is None:
            section.skip("diskcache", "pip install diskcache")
    finally:
        bench.close()
    _notes(section)
    return section


def _notes(section: Section) -> None:
    section.notes.append(f"tier-2 get: tier 1 holds {_COLD_TIER1} items, the loop cycles {_KEYS_COLD:,} keys")
    section.notes.append(
        f"raw floors: plyvel.DB(lru_cache_size={DEFAULT_CACHE_BYTES >> 20} MiB) and msgpack, inline in the loop; "
        "diskcache: Cache(directory) with its default settings, holding the same keys and values"
    )
    section.notes.append(
        f"diskcache set: its loop runs the first 1/{_PEER_SET_SHARE} of our set loop's keys; "
        "each side is timed per call"
    )
    section.notes.append(settings_note(_WARM, "tier-1 get and set (set(version=): a store of its own, the same)"))
    section.notes.append(settings_note(_COLD, "tier-2 get"))
