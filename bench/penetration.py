"""The penetration scenario: lookups of keys the source never had, with and without the guard."""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from tierstore import ABSENT, TierStore

from .config import Config
from .features import bloom_class, has, method
from .measure import median, percentile
from .report import Goal, Section, progress
from .settings import settings_note
from .source import Source

__all__ = ["penetration_section"]

ns = time.perf_counter_ns
_COMMON: dict[str, Any] = {"checkpoint_interval": None, "sweep_interval": None}


def _settings(capacity: int | None) -> dict[str, Any]:
    """A variant's own settings: ``capacity`` None for no guard, 0 for the default filter size."""
    settings: dict[str, Any] = {}
    if capacity is not None:
        settings["guard"] = True
    if capacity:
        settings.update(bloom_capacity=capacity, bloom_error_rate=0.01)
    return settings


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
    guard = capacity is not None
    store = TierStore(path, **_COMMON, **_settings(capacity))
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


def penetration_section(config: Config, root: str) -> Section:
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
    section.notes.append(settings_note(_COMMON, "every variant"))
    for name, _, capacity in variants:
        if _settings(capacity):
            section.notes.append(settings_note(_settings(capacity), name, "and those of every variant"))
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
