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

The lag is measured twice: quiet (nothing else written), and under a stream of
writes to other keys by a third process, one every ``STREAM_PAUSE`` seconds.
Under a stream the reader's listener sleeps ``listener.COALESCE`` after each
wake-up to read what arrived meanwhile in one go, so a message may wait up to
that long: the second figure shows what that costs.
"""

from __future__ import annotations

from typing import Any

from .measure import percentile
from .report import Goal, Section
from .shared_worker import Workers

__all__ = ["LAG_GOAL_MS", "POLL", "STREAM_PAUSE", "measure_lag", "lag_section"]

LAG_GOAL_MS = 5.0  # p99, one host
POLL = 0.0001  # seconds between the reader's reads
STREAM_PAUSE = 0.0005  # seconds between the stream writer's sets


def measure_lag(
    workers: Workers, writes: int, pause: float, poll: float = POLL, stream: float | None = None
) -> dict[str, Any]:
    """Run the writer in worker 0 and the reader in worker 1; the lag figures in ms.

    With ``stream``, worker 2 writes other keys every ``stream`` seconds meanwhile (``stream_writes``).
    """
    if len(workers) < (3 if stream is not None else 2):
        raise ValueError("the lag needs two worker processes (a writer and a reader), and a third for a stream")
    workers.call(0, "lag_write", 0, 1, 0.0)  # the value the reader starts from
    workers.send(1, "lag_read", writes, poll, 30.0 + writes * (pause + 0.01))
    workers.receive(1)  # ready: the reader holds 0 in its tier 1
    if stream is not None:
        workers.send(2, "stream_write", writes * (pause + 0.001) + 0.5, stream)
    returned: list[float] = workers.call(0, "lag_write", 1, writes, pause)
    seen: dict[int, float] = workers.receive(1, timeout=60.0)
    streamed = workers.receive(2, timeout=60.0) if stream is not None else None
    lags = sorted(max(0.0, seen[value] - returned[value - 1]) * 1e3 for value in seen if 1 <= value <= writes)
    if not lags:
        raise RuntimeError(f"the reader read none of the {writes} writes")
    figures: dict[str, Any] = {
        "writes": writes,
        "seen": len(lags),
        "pause_s": pause,
        "poll_s": poll,
        "p50_ms": percentile(lags, 0.50),
        "p99_ms": percentile(lags, 0.99),
        "max_ms": lags[-1],
    }
    if stream is not None:
        figures |= {"stream_pause_s": stream, "stream_writes": streamed}
    return figures


def lag_section(workers: Workers, writes: int, pause: float) -> Section:
    """The ``shared-lag`` section: quiet, then under a stream of other writes when a third worker runs it.

    The figures are the quiet run's, with the stream run's under ``under_stream``; each has a row and a p99 goal.
    """
    from tierstore.shared.listener import COALESCE  # redis-py is there: the workers run on it

    figures = measure_lag(workers, writes, pause)
    section = Section(
        "shared-lag",
        f"shared-lag: {writes:,} writes {pause * 1e3:g} ms apart in one process, read in another",
        columns=["other writes", "writes", "seen", "p50 ms", "p99 ms", "max ms"],
        figures=figures,
    )
    runs = [("none", "invalidation lag p99", figures)]
    if len(workers) >= 3:
        streamed = measure_lag(workers, writes, pause, stream=STREAM_PAUSE)
        figures["under_stream"] = streamed
        label = f"{streamed['stream_writes']:,}, {STREAM_PAUSE * 1e3:g} ms apart"
        runs.append((label, "invalidation lag p99, under a stream of writes", streamed))
    else:
        section.notes.append("the lag under a stream of writes needs a third worker process: not measured")
    for label, goal, run in runs:
        section.rows.append([label, writes, run["seen"], run["p50_ms"], run["p99_ms"], run["max_ms"]])
        section.goals.append(Goal(goal, run["p99_ms"], "<=", LAG_GOAL_MS, unit=" ms"))
    section.notes.append(
        f"lag: the writer's set returning to the reader's first read of the value (the reader polls every "
        f"{POLL * 1e3:g} ms, its copy in tier 1 between writes); seen: values read before the next one replaced them"
    )
    section.notes.append(
        "other writes: none, or sets of other keys by a third process meanwhile (sleeping between them); "
        f"under such a stream the reader's listener sleeps {COALESCE * 1e3:g} ms after each wake-up and reads "
        "what arrived meanwhile in one go"
    )
    return section
