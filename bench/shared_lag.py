"""Invalidation lag through the shared tier: a write returning in one process to its value read in another.

One worker process (the writer) sets one key to 1, 2, ... ``writes``, ``pause``
seconds apart, through tierstore; another (the reader, a real process too)
polls ``get`` of that key every ``poll`` seconds and notes when it first reads
each value. The reader's copy sits in its tier 1 between writes, so reading
the new value needed the invalidation message to drop it. The lag of a write
is the reader's first read minus the writer's ``set`` returning, both on
``time.monotonic`` (one clock for every process on Linux); a read before the
writer's clock read (the writer descheduled) counts as 0. Values the reader
never read (it polled past them) are counted as missed.
"""

from __future__ import annotations

from typing import Any

from .measure import percentile
from .report import Goal, Section
from .shared_worker import Workers

__all__ = ["LAG_GOAL_MS", "POLL", "measure_lag", "lag_section"]

LAG_GOAL_MS = 5.0  # p99, one host
POLL = 0.0001  # seconds between the reader's reads


def measure_lag(workers: Workers, writes: int, pause: float, poll: float = POLL) -> dict[str, Any]:
    """Run the writer in worker 0 and the reader in worker 1; the lag figures in ms."""
    if len(workers) < 2:
        raise ValueError("the lag needs two worker processes: a writer and a reader")
    workers.call(0, "lag_write", 0, 1, 0.0)  # the value the reader starts from
    workers.send(1, "lag_read", writes, poll, 30.0 + writes * (pause + 0.01))
    workers.receive(1)  # ready: the reader holds 0 in its tier 1
    returned: list[float] = workers.call(0, "lag_write", 1, writes, pause)
    seen: dict[int, float] = workers.receive(1, timeout=60.0)
    lags = sorted(max(0.0, seen[value] - returned[value - 1]) * 1e3 for value in seen if 1 <= value <= writes)
    if not lags:
        raise RuntimeError(f"the reader read none of the {writes} writes")
    return {
        "writes": writes,
        "seen": len(lags),
        "pause_s": pause,
        "poll_s": poll,
        "p50_ms": percentile(lags, 0.50),
        "p99_ms": percentile(lags, 0.99),
        "max_ms": lags[-1],
    }


def lag_section(workers: Workers, writes: int, pause: float) -> Section:
    """The ``shared-lag`` section: the figures, a table row and the p99 goal."""
    figures = measure_lag(workers, writes, pause)
    section = Section(
        "shared-lag",
        f"shared-lag: {writes:,} writes {pause * 1e3:g} ms apart in one process, read in another",
        columns=["writes", "seen", "p50 ms", "p99 ms", "max ms"],
        figures=figures,
    )
    section.rows.append([writes, figures["seen"], figures["p50_ms"], figures["p99_ms"], figures["max_ms"]])
    section.goals.append(Goal("invalidation lag p99", figures["p99_ms"], "<=", LAG_GOAL_MS, unit=" ms"))
    section.notes.append(
        f"lag: the writer's set returning to the reader's first read of the value (the reader polls every "
        f"{POLL * 1e3:g} ms, its copy in tier 1 between writes); seen: values read before the next one replaced them"
    )
    return section
