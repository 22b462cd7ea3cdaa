"""The stampede and penetration scenarios against a simulated slow source.

Time flows on an injected clock in ticks: each tick every thread reads every hot
key once, then the store's background work is drained, as if the rest of that
simulated second passed. The source sleeps for real (releasing the GIL, like a
database call) and counts its calls per key and per tick.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tierstore import ABSENT, TierStore

from .config import Config
from .features import bloom_class, has, method
from .measure import median, percentile
from .report import Goal, Section, progress
from .workloads import sample_value

__all__ = ["run_scenarios", "SECTIONS", "FakeClock", "Source"]

SECTIONS = ("stampede", "penetration")
_TTL = 10.0
ns = time.perf_counter_ns


class FakeClock:
    """A wall clock moved by the scenario, one tick at a time."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Source:
    """A slow source of truth that counts its calls per key and in total."""

    def __init__(self, delay: float, present: set[str] | None = None) -> None:
        self.delay = delay
        self.present = present
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def load(self, key: str) -> Any:
        with self._lock:
            self.calls[key] += 1
        time.sleep(self.delay)
        if self.present is not None and key not in self.present:
            return None
        return sample_value(len(key))

    def loader(self, key: str) -> Callable[[], Any]:
        return lambda: self.load(key)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


# -- stampede -------------------------------------------------------------------------


@dataclass
class Variant:
    """One way of reading the hot keys, and the store settings it runs with."""

    name: str
    mode: str  # "naive" (get, then source and set) or "get_or_load"
    settings: dict[str, Any] = field(default_factory=dict)


def _stampede_variants() -> list[Variant]:
    return [
        Variant("naive get + set", "naive"),
        Variant("get_or_load", "get_or_load"),
        Variant("get_or_load, ttl_jitter=0.1", "get_or_load", {"ttl_jitter": 0.1}),
        Variant("get_or_load, refresh_ahead=0.2", "get_or_load", {"refresh_ahead": 0.2, "min_refresh_interval": 0.0}),
    ]


def _reader(store: TierStore, source: Source, mode: str) -> Callable[[str], Any]:
    """The read one thread performs per key and per tick."""
    if mode == "naive":
        get, put = store.get, store.set

        def naive(key: str) -> Any:
            value = get(key)
            if value is None:
                value = source.load(key)
                put(key, value, ttl=_TTL)
            return value

        return naive
    get_or_load = method(store, "get_or_load")
    loaders = {key: source.loader(key) for key in source.calls}
    return lambda key: get_or_load(key, loaders[key], ttl=_TTL)


class _Crowd:
    """Threads that read every hot key once per tick, released and collected by barriers."""

    def __init__(self, threads: int, keys: list[str], read: Callable[[str], Any], seed: int) -> None:
        self.go = threading.Barrier(threads + 1)
        self.done = threading.Barrier(threads + 1)
        self.latencies: list[list[int]] = [[] for _ in range(threads)]
        self.errors: list[BaseException] = []
        self.stop = False
        orders = [random.Random(seed + i).sample(keys, len(keys)) for i in range(threads)]
        self.threads = [
            threading.Thread(target=self._work, args=(orders[i], read, self.latencies[i]), daemon=True)
            for i in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    def _work(self, order: list[str], read: Callable[[str], Any], out: list[int]) -> None:
        while True:
            self.go.wait()
            if self.stop:
                return
            try:
                for key in order:
                    t0 = ns()
                    read(key)
                    out.append(ns() - t0)
            except BaseException as exc:
                self.errors.append(exc)
            self.done.wait()

    def take_latencies(self) -> list[int]:
        """The samples of the last tick, emptied (threads are parked at the barrier)."""
        taken = [sample for part in self.latencies for sample in part]
        for part in self.latencies:
            part.clear()
        return taken

    def tick(self) -> None:
        self.go.wait()
        self.done.wait()

    def close(self) -> None:
        self.stop = True
        self.go.wait()
        for thread in self.threads:
            thread.join()


def _stampede_run(config: Config, path: str, variant: Variant) -> dict[str, Any]:
    clock = FakeClock()
    keys = [f"hot:{i:04d}" for i in range(config.stampede_keys)]
    source = Source(config.source_delay)
    for key in keys:
        source.calls[key] = 0
    store = TierStore(path, clock=clock, checkpoint_interval=None, sweep_interval=None, **variant.settings)
    drain = method(store, "drain")
    crowd = _Crowd(config.stampede_threads, keys, _reader(store, source, variant.mode), config.seed)
    per_tick: list[int] = []
    duplicates = 0
    latencies: list[int] = []
    load_tick_latencies: list[int] = []
    started = time.perf_counter()
    try:
        for key in keys:
            store.set(key, sample_value(len(key)), ttl=_TTL)
        for _ in range(config.stampede_waves * config.stampede_ticks):
            clock.now += _TTL / config.stampede_ticks
            before = Counter(source.calls)
            crowd.tick()
            if drain is not None:
                drain(10.0)
            delta = source.calls - before
            per_tick.append(sum(delta.values()))
            tick_latencies = crowd.take_latencies()
            latencies.extend(tick_latencies)
            if per_tick[-1]:
                load_tick_latencies.extend(tick_latencies)
            duplicates += sum(count - 1 for count in delta.values() if count > 1)
    finally:
        crowd.close()
        store.close()
    if crowd.errors:
        raise crowd.errors[0]
    waited = sum(1 for sample in latencies if sample > config.source_delay * 0.5e9)
    return {
        "source_calls": source.total,
        "calls_per_wave": source.total / config.stampede_waves,
        "peak_calls_in_a_tick": max(per_tick),
        "duplicate_calls": duplicates,
        "reads": len(latencies),
        "reads_that_waited": waited,
        "p50_us": percentile(latencies, 0.50) / 1000,
        "p99_us": percentile(latencies, 0.99) / 1000,
        "p99_load_ticks_us": percentile(load_tick_latencies, 0.99) / 1000,
        "max_us": max(latencies, default=0) / 1000,
        "seconds": time.perf_counter() - started,
    }


def _stampede(config: Config, root: str) -> Section:
    hot = config.stampede_keys
    section = Section(
        "stampede",
        f"stampede: {config.stampede_threads} threads, {hot} hot keys expiring together, "
        f"source {config.source_delay * 1000:.0f} ms/call, {config.stampede_waves} waves of "
        f"{config.stampede_ticks} ticks",
        columns=[
            "variant",
            "calls/wave",
            "peak/tick",
            "dup calls",
            "waited",
            "p50 us",
            "p99 us",
            "p99 load us",
            "max us",
        ],
    )
    for index, variant in enumerate(_stampede_variants()):
        if variant.mode == "get_or_load" and not has("get_or_load"):
            section.skip("get_or_load", variant.name)
            continue
        progress(f"stampede: {variant.name}")
        figures = _stampede_run(config, os.path.join(root, f"stampede-{index}"), variant)
        section.figures[variant.name] = figures
        section.rows.append(
            [
                variant.name,
                figures["calls_per_wave"],
                figures["peak_calls_in_a_tick"],
                figures["duplicate_calls"],
                figures["reads_that_waited"],
                figures["p50_us"],
                figures["p99_us"],
                figures["p99_load_ticks_us"],
                figures["max_us"],
            ]
        )
        if variant.mode == "get_or_load":
            section.goals.append(
                Goal(f"{variant.name}: duplicate source calls", figures["duplicate_calls"], "==", 0, "")
            )
            if not variant.settings:
                section.goals.append(
                    Goal(f"{variant.name}: source calls per wave", figures["calls_per_wave"], "==", hot, "")
                )
    section.notes.append(
        "a wave is one TTL of simulated time; refresh-ahead renews each key at 80% of its TTL, "
        "so it makes about 1/0.8 loads per wave, in the background"
    )
    section.notes.append(
        "dup calls: source calls for a key beyond the first within one tick (the stampede itself); "
        "waited: reads slower than half a source call; p99 load: p99 over the ticks in which the source was called"
    )
    section.notes.append("ttl_jitter draws TTLs in [ttl, 1.1 ttl], so keys expire less often than once a wave")
    return section


# -- penetration ------------------------------------------------------------------------


def _lookups(config: Config, present: list[str]) -> list[tuple[str, bool]]:
    """90% keys the source never had (all distinct), 10% keys it has."""
    rng = random.Random(config.seed)
    result = []
    for i in range(config.penetration_lookups):
        if rng.random() < 0.9:
            result.append((f"user:absent:{i}:{rng.getrandbits(32)}", False))
        else:
            result.append((rng.choice(present), True))
    return result


def _penetration_run(
    config: Config, path: str, mode: str, capacity: int | None, present: list[str], lookups: list[tuple[str, bool]]
) -> dict[str, Any]:
    """Run the lookups; ``capacity``: the filter's (``guard=True``), 0 for the store's default, None for no guard."""
    source = Source(config.penetration_delay, set(present))
    settings: dict[str, Any] = {"checkpoint_interval": None, "sweep_interval": None}
    guard = capacity is not None
    if guard:
        settings["guard"] = True
    if capacity:
        settings.update(bloom_capacity=capacity, bloom_error_rate=0.01)
    store = TierStore(path, **settings)
    try:
        if guard:
            method(store, "guard_keys")(present)
        read = _penetration_reader(store, source, mode)
        threads = config.penetration_threads
        parts = [lookups[i::threads] for i in range(threads)]
        latencies: list[list[int]] = [[] for _ in range(threads)]

        def work(index: int) -> None:
            out = latencies[index]
            for key, _ in parts[index]:
                t0 = ns()
                read(key)
                out.append(ns() - t0)

        started = time.perf_counter()
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    absent_lookups = sum(1 for _, exists in lookups if not exists)
    present_keys = set(present)
    absent_calls = sum(count for key, count in source.calls.items() if key not in present_keys)
    flat = [sample / 1000 for part in latencies for sample in part]
    return {
        "lookups": len(lookups),
        "absent_lookups": absent_lookups,
        "source_calls": source.total,
        "absent_source_calls": absent_calls,
        "absent_call_rate": absent_calls / absent_lookups if absent_lookups else 0.0,
        "lookups_per_s": len(lookups) / elapsed if elapsed else 0.0,
        "p50_us": percentile(flat, 0.5),
        "p99_us": percentile(flat, 0.99),
    }


def _penetration_reader(store: TierStore, source: Source, mode: str) -> Callable[[str], Any]:
    if mode == "naive":
        get_entry, put = store.get_entry, store.set

        def naive(key: str) -> Any:
            entry = get_entry(key)
            if entry is not None:
                return entry.value
            value = source.load(key)
            put(key, ABSENT if value is None else value)
            return value

        return naive
    get_or_load = method(store, "get_or_load")
    return lambda key: get_or_load(key, source.loader(key))


def _bloom_figures(config: Config, present: list[str]) -> dict[str, Any] | None:
    bloom = bloom_class()
    if bloom is None:
        return None
    import math

    rate = 0.01
    capacity = len(present)
    bf = bloom(capacity, rate)
    bf.update(present)
    probe = [f"user:{i}" for i in range(2_000)]
    absent = [f"nobody:{i}" for i in range(max(20_000, config.penetration_lookups * 10))]
    contains = bf.__contains__
    rounds = []
    for _ in range(7):
        t0 = ns()
        for key in probe:
            contains(key)
        rounds.append(ns() - t0)
    elapsed = median(rounds)
    false_positives = sum(1 for key in absent if key in bf)
    return {
        "capacity": capacity,
        "error_rate": rate,
        "nbits": bf.nbits,
        "nhashes": bf.nhashes,
        "bits_per_key": bf.nbits / capacity,
        "optimal_bits_per_key": -math.log(rate) / math.log(2) ** 2,
        "contains_ns": elapsed / len(probe),
        "measured_fp_rate": false_positives / len(absent),
        "fp_probes": len(absent),
    }


def _penetration(config: Config, root: str) -> Section:
    present = [f"user:{i}" for i in range(config.penetration_present)]
    lookups = _lookups(config, present)
    section = Section(
        "penetration",
        f"penetration: {len(lookups):,} lookups, 90% of keys absent from a "
        f"{config.penetration_delay * 1000:.0f} ms source, {config.penetration_threads} threads",
        columns=["variant", "source calls", "absent calls", "absent rate", "lookups/s", "p50 us", "p99 us"],
    )
    at_capacity = f"guard=True, bloom_capacity={len(present):,}"
    variants: list[tuple[str, str, int | None]] = [
        ("naive get_entry + set(ABSENT)", "naive", None),
        ("get_or_load", "get_or_load", None),
        ("get_or_load, guard=True", "get_or_load", 0),
        (f"get_or_load, {at_capacity}", "get_or_load", len(present)),
    ]
    for index, (name, mode, capacity) in enumerate(variants):
        guard = capacity is not None
        feature = "guard" if guard else mode
        if mode != "naive" and not has(feature):
            section.skip("guard_keys/get_or_load" if guard else "get_or_load", name)
            continue
        progress(f"penetration: {name}")
        path = os.path.join(root, f"penetration-{index}")
        figures = _penetration_run(config, path, mode, capacity, present, lookups)
        section.figures[name] = figures
        section.rows.append(
            [
                name,
                figures["source_calls"],
                figures["absent_source_calls"],
                figures["absent_call_rate"],
                figures["lookups_per_s"],
                figures["p50_us"],
                figures["p99_us"],
            ]
        )
        if guard:
            limit = 0.01 * figures["absent_lookups"]
            section.goals.append(Goal(f"{name}: absent source calls", figures["absent_source_calls"], "<=", limit, ""))
            if capacity:
                sigma = (limit * 0.99) ** 0.5
                section.notes.append(
                    f"{at_capacity} is the filter's worst case: there p x absent lookups = {limit:.1f} "
                    f"is the expected count itself (one sigma = {sigma:.1f}), so that goal is met about half the time"
                )
    _bloom_section(config, present, section)
    return section


def _bloom_section(config: Config, present: list[str], section: Section) -> None:
    bloom = _bloom_figures(config, present)
    if bloom is None:
        section.skip("BloomFilter")
        return
    section.figures["bloom"] = bloom
    section.notes.append(
        f"bloom filter at capacity {bloom['capacity']:,}, p={bloom['error_rate']}: "
        f"{bloom['bits_per_key']:.2f} bits/key (optimum {bloom['optimal_bits_per_key']:.2f}), "
        f"{bloom['nhashes']} hashes, measured FP rate {bloom['measured_fp_rate']:.4f} on {bloom['fp_probes']:,} "
        f"absent keys"
    )
    section.goals.append(
        Goal("bloom bits/key vs optimum", bloom["bits_per_key"] / bloom["optimal_bits_per_key"], "<=", 1.1)
    )
    section.goals.append(Goal("bloom `in`, short key", bloom["contains_ns"] / 1000, "<=", 1.5, " us"))
    section.goals.append(Goal("bloom FP rate / target", bloom["measured_fp_rate"] / bloom["error_rate"], "<=", 1.25))


def run_scenarios(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """The stampede and penetration sections (those in ``wanted``)."""
    root = os.path.join(parent, "scenarios")
    os.makedirs(root, exist_ok=True)
    sections = []
    if "stampede" in wanted:
        sections.append(_stampede(config, root))
    if "penetration" in wanted:
        sections.append(_penetration(config, root))
    return sections
