"""Timing primitives shared by every section: timed loops, threads, percentiles.

A driven loop times each batch of ``sample_every`` operations and, inside it,
its first operation on its own: the same two extra clock reads per batch for
every system, so the harness costs every system alike.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Op",
    "Batch",
    "RunResult",
    "batches",
    "clock_overhead_ns",
    "drive",
    "median",
    "percentile",
    "run_threads",
    "time_call_ns",
]

Op = tuple[Callable[[Any, Any], Any], Any, Any]
Batch = tuple[Op, list[Op]]

ns = time.perf_counter_ns


def batches(ops: Sequence[Op], every: int) -> list[Batch]:
    """Cut ``ops`` into (first op, the rest) batches of ``every``; done before timing."""
    return [(ops[i], list(ops[i + 1 : i + every])) for i in range(0, len(ops), every)]


def drive(work: list[Batch], samples: list[int]) -> int:
    """Run the batches; time the first op of each alone. Returns how many calls returned None."""
    nones = 0
    append = samples.append
    for (fn, key, arg), rest in work:
        t0 = ns()
        result = fn(key, arg)
        append(ns() - t0)
        if result is None:
            nones += 1
        for fn, key, arg in rest:
            if fn(key, arg) is None:
                nones += 1
    return nones


@dataclass
class RunResult:
    """What one timed run of one system measured."""

    ops: int
    elapsed_ns: int
    samples: list[int] = field(default_factory=list)
    nones: int = 0

    @property
    def ops_per_s(self) -> float:
        return self.ops * 1e9 / self.elapsed_ns if self.elapsed_ns else 0.0


def run_threads(per_thread: list[list[Batch]]) -> RunResult:
    """Run each thread's batches from a common start; elapsed is first start to last end."""
    count = len(per_thread)
    barrier = threading.Barrier(count)
    starts = [0] * count
    ends = [0] * count
    samples: list[list[int]] = [[] for _ in range(count)]
    nones = [0] * count
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        barrier.wait()
        starts[index] = ns()
        try:
            nones[index] = drive(per_thread[index], samples[index])
        except BaseException as exc:  # re-raised in the caller: a crashed thread must not pass for a fast one
            errors.append(exc)
        ends[index] = ns()

    threads = [threading.Thread(target=worker, args=(i,), name=f"bench-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    total_ops = sum(len(first_rest[1]) + 1 for work in per_thread for first_rest in work)
    merged = [sample for part in samples for sample in part]
    return RunResult(total_ops, max(ends) - min(starts), merged, sum(nones))


def clock_overhead_ns() -> int:
    """The median cost of one timed empty interval, subtracted from latency samples."""
    gaps = []
    for _ in range(2_000):
        t0 = ns()
        gaps.append(ns() - t0)
    return int(statistics.median(gaps))


def time_call_ns(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Elapsed ns of one call and its result."""
    t0 = ns()
    result = fn()
    return ns() - t0, result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))
    return float(ordered[rank])
