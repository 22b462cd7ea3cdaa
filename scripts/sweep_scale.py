"""How long ``sweep()`` takes on a big store that has (almost) nothing to remove.

``python scripts/sweep_scale.py --entries 1000000`` fills a store in a temporary
directory with that many live entries (no TTL, or with ``--ttl-share`` of them a
TTL far in the future), plus ``--due`` entries that have expired, reopens it and
times ``--rounds`` sweeps: the first one removes the due entries, the others
remove nothing. Prints the times (ms) and the counts each sweep returned. The
clock is injected, so the due entries are due without waiting.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from typing import Any

from tierstore import TierStore


class Clock:
    """A wall clock the script moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def fill(path: str, clock: Clock, entries: int, ttl_share: float, due: int) -> float:
    """Write the store; returns the seconds it took."""
    started = time.perf_counter()
    with TierStore(path, clock=clock, memory_items=1000, sweep_interval=None, checkpoint_interval=None) as store:
        every = round(1 / ttl_share) if ttl_share else 0
        for i in range(entries):
            ttl = 10 * 86_400.0 if every and i % every == 0 else None
            store.set(f"key:{i:09d}", {"i": i, "pad": "x" * 40}, ttl=ttl)
        for i in range(due):
            store.set(f"due:{i:09d}", i, ttl=1.0)
    return time.perf_counter() - started


def time_sweeps(path: str, clock: Clock, rounds: int) -> tuple[float, list[tuple[float, dict[str, int]]]]:
    """Reopen the store (timed) and sweep it ``rounds`` times (each timed)."""
    started = time.perf_counter()
    store = TierStore(path, clock=clock, memory_items=1000, sweep_interval=None, checkpoint_interval=None)
    opened = time.perf_counter() - started
    results: list[tuple[float, dict[str, int]]] = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            counts = store.sweep()
            results.append((time.perf_counter() - started, counts))
    finally:
        store.close()
    return opened, results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--ttl-share", type=float, default=0.0, help="share of live entries with a (far) TTL")
    parser.add_argument("--due", type=int, default=0, help="expired entries the first sweep removes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="reuse (or create) this store directory instead of a temp one")
    args = parser.parse_args(argv)
    temp = None if args.dir else tempfile.mkdtemp(prefix="sweep-scale-")
    path = args.dir or f"{temp}/store"
    clock = Clock()
    try:
        report: dict[str, Any] = {"entries": args.entries, "ttl_share": args.ttl_share, "due": args.due}
        report["fill_s"] = round(fill(path, clock, args.entries, args.ttl_share, args.due), 2)
        clock.now += 2.0  # the due entries expired
        opened, results = time_sweeps(path, clock, args.rounds)
        report["open_s"] = round(opened, 3)
        print(report)
        for seconds, counts in results:
            print(f"  sweep {seconds * 1000:10.2f} ms  {counts}")
        idle = [seconds for seconds, counts in results[1:]] or [results[0][0]]
        print(f"  idle sweeps: median {statistics.median(idle) * 1000:.3f} ms, min {min(idle) * 1000:.3f} ms")
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
