"""Sweep time: one ``store.sweep()`` over a store full of live entries, which has nothing to remove.

A sweep that scans every record costs time in proportion to the store even
when nothing has expired; the goal is that it costs next to nothing then. The
store grows through each size in turn (filled with plain ``set`` calls, timed),
and at each size a few sweeps are timed; the figure is their median.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tierstore import TierStore

from .config import Config
from .measure import median
from .report import Goal, Section, progress, timed
from .settings import settings_note
from .workloads import sample_value

__all__ = ["run_sweep", "SECTIONS", "GOAL_MS"]

SECTIONS = ("sweep",)
GOAL_MS = 50.0
_TTL = 365 * 86_400.0  # a year: every entry is live and stays so for the whole run
_SETTINGS: dict[str, Any] = {"checkpoint_interval": None, "sweep_interval": None}  # only our sweep() calls
_REMOVALS = ("expired_purged", "swept_tombstones", "corrupt_purged", "evictions_disk")


def _fill(store: TierStore, start: int, stop: int) -> float:
    """Entries ``start`` to ``stop`` with a TTL of a year; returns the seconds that took."""
    values = [sample_value(i) for i in range(64)]
    put = store.set
    started = time.perf_counter()
    for i in range(start, stop):
        put(f"sweep:{i:08d}", values[i & 63], ttl=_TTL)
    return time.perf_counter() - started


def _sweeps(store: TierStore, calls: int) -> dict[str, Any]:
    """Time ``calls`` sweeps; their median, extremes, and what the last one reported."""
    times_ms: list[float] = []
    counts: dict[str, int] = {}
    for _ in range(calls):
        started = time.perf_counter()
        counts = store.sweep()
        times_ms.append((time.perf_counter() - started) * 1000)
    return {
        "median_ms": median(times_ms),
        "min_ms": min(times_ms),
        "max_ms": max(times_ms),
        "times_ms": [round(value, 3) for value in times_ms],
        "counts": counts,
        "removed": sum(counts.get(name, 0) for name in _REMOVALS),
    }


def _measure(config: Config, path: str) -> dict[str, dict[str, Any]]:
    """Grow one store through ``config.sweep_sizes``, timing the fill and the sweeps at each size."""
    figures: dict[str, dict[str, Any]] = {}
    filled = 0
    with TierStore(path, **_SETTINGS) as store:
        for size in sorted(config.sweep_sizes):
            progress(f"sweep: filling to {size:,} entries")
            fill_s = _fill(store, filled, size)
            per_entry_us = fill_s / (size - filled) * 1e6 if size > filled else 0.0
            filled = size
            progress(f"sweep: {config.sweep_calls} sweeps of {size:,} entries")
            result = _sweeps(store, config.sweep_calls)
            figures[str(size)] = {"entries": size, "fill_s": fill_s, "fill_us_per_entry": per_entry_us, **result}
    return figures


def _section(config: Config, parent: str) -> Section:
    section = Section(
        "sweep",
        f"sweep: one sweep() of a store of live entries (nothing to remove), median of {config.sweep_calls} calls",
        columns=["entries", "sweep ms", "min ms", "max ms", "scanned", "removed", "fill s", "fill us/entry"],
    )
    figures = _measure(config, os.path.join(parent, "sweep"))
    section.figures = figures
    for size in figures.values():
        scanned = size["counts"].get("scanned", "")
        row = [size["entries"], size["median_ms"], size["min_ms"], size["max_ms"], scanned, size["removed"]]
        section.rows.append([*row, size["fill_s"], size["fill_us_per_entry"]])
        if size["removed"]:
            section.notes.append(f"the sweeps of {size['entries']:,} entries removed {size['removed']:,} entries")
    largest = figures[str(max(config.sweep_sizes))]
    name = f"sweep() of {largest['entries']:,} live entries"
    section.goals.append(Goal(name, largest["median_ms"], "<=", GOAL_MS, " ms"))
    section.notes.append(
        "entries are written with set(key, value, ttl=1 year) in one loop, each size adding to the last; "
        "scanned: what sweep() reports it read"
    )
    section.notes.append(settings_note(_SETTINGS))
    return section


def run_sweep(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """The sweep section."""
    return [timed(lambda: _section(config, parent))]
