"""The stampede scenario: many threads reading hot keys that expire together.

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

from tierstore import TierStore

from .config import Config
from .features import has, method
from .measure import percentile
from .report import Goal, Section, progress
from .settings import settings_note
from .source import FakeClock, Source
from .workloads import sample_value

__all__ = ["stampede_section"]

_TTL = 10.0
_COMMON: dict[str, Any] = {"checkpoint_interval": None, "sweep_interval": None}  # and clock=FakeClock
ns = time.perf_counter_ns


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
    store = TierStore(path, clock=clock, **_COMMON, **variant.settings)
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


def stampede_section(config: Config, root: str) -> Section:
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
    section.notes.extend(_settings_notes())
    return section


def _settings_notes() -> list[str]:
    """The settings of every variant, then each variant's own."""
    notes = [settings_note({"clock": FakeClock(), **_COMMON}, "every variant")]
    for variant in _stampede_variants():
        if variant.settings:
            notes.append(settings_note(variant.settings, variant.name, "and those of every variant"))
    return notes
