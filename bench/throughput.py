"""Read-heavy and write-heavy workloads across every system: ops/s, p50/p99, hit ratio.

Every system gets a fresh data directory under the same temp parent and the
same prefill (coldest keys first, so each memory tier starts with the hottest).
All are prefilled before any is measured; then each (workload, threads) runs a
warm-up and ``repeats`` timed rounds, the system order rotating every round so
no system is always first or last after the others touched the page cache.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .measure import Batch, Op, RunResult, batches, clock_overhead_ns, median, percentile, run_threads
from .report import Goal, Section, progress
from .systems import SYSTEM_NAMES, System, diskcache_available, open_system
from .workloads import READ_HEAVY, WRITE_HEAVY, KeySpace, Sequence, Workload, make_sequence

__all__ = ["run_throughput", "SECTIONS"]

SECTIONS = ("read-heavy", "write-heavy")

# (workload, other system) -> (op, target) for "tierstore ops/s / other ops/s".
GOALS: dict[tuple[str, str], tuple[str, float]] = {
    ("read-heavy", "diskcache"): (">=", 10.0),
    ("read-heavy", "plyvel+msgpack"): (">=", 1.5),
    ("write-heavy", "diskcache"): (">=", 20.0),
    ("write-heavy", "plyvel+msgpack"): (">=", 0.7),
}


@dataclass
class Tally:
    """The timed rounds of one system on one (workload, threads)."""

    runs: list[RunResult] = field(default_factory=list)
    gets: list[int] = field(default_factory=list)  # per run
    sets: list[int] = field(default_factory=list)
    stats_before: dict[str, int] = field(default_factory=dict)
    stats_after: dict[str, int] = field(default_factory=dict)
    set_returns_none: bool = False


def _ops(system: System, sequence: Sequence, threads: int) -> list[Op]:
    get, put = system.calls(threads)
    return [
        (get, key, None) if value is None else (put, key, value)
        for key, value in zip(sequence.keys, sequence.values, strict=True)
    ]


def _work(system: System, sequence: Sequence, threads: int, every: int) -> list[list[Batch]]:
    return [batches(_ops(system, part, threads), every) for part in sequence.split(threads)]


def _stats(system: System) -> dict[str, int]:
    handle = system.handle
    if system.name == "tierstore":
        stats: dict[str, int] = handle.stats()
        return stats
    return {}


def _timed(work: list[list[Batch]]) -> RunResult:
    gc.collect()
    return run_threads(work)


def _summary(tally: Tally, overhead: int) -> dict[str, Any]:
    runs = tally.runs
    p50 = [percentile(run.samples, 0.50) for run in runs]
    p99 = [percentile(run.samples, 0.99) for run in runs]
    hit_ratios = []
    for run, gets, sets in zip(runs, tally.gets, tally.sets, strict=True):
        misses = run.nones - (sets if tally.set_returns_none else 0)
        hit_ratios.append(1.0 - misses / gets if gets else 0.0)
    summary: dict[str, Any] = {
        "ops_per_s": median([run.ops_per_s for run in runs]),
        "ops_per_s_repeats": [round(run.ops_per_s, 1) for run in runs],
        "p50_us": max(0.0, median(p50) - overhead) / 1000,
        "p99_us": max(0.0, median(p99) - overhead) / 1000,
        "hit_ratio": median(hit_ratios),
        "latency_samples": sum(len(run.samples) for run in runs),
    }
    if tally.stats_after:
        before, after = tally.stats_before, tally.stats_after
        memory = after["hits_memory"] - before["hits_memory"]
        disk = after["hits_disk"] - before["hits_disk"]
        summary["tier1_hit_share"] = memory / (memory + disk) if memory + disk else 0.0
    return summary


class _Runner:
    """Prefilled systems and the rounds run on them."""

    def __init__(self, config: Config, parent: str) -> None:
        self.config = config
        self.space = KeySpace(config.keys, config.zipf_s, config.seed)
        self.capacity = max(1, int(config.keys * config.memory_fraction))
        names = [name for name in SYSTEM_NAMES if name != "diskcache" or diskcache_available()]
        self.systems = [open_system(name, parent, self.capacity) for name in names]
        self.overhead = clock_overhead_ns()

    def prefill(self) -> None:
        space = self.space
        pairs = [(space.names[i], space.value(i)) for i in space.prefill_order()]
        for system in self.systems:
            progress(f"prefill {system.name}: {len(pairs):,} keys")
            system.bulk(pairs)

    def close(self) -> None:
        for system in self.systems:
            system.close()

    def measure(self, workload: Workload, threads: int) -> dict[str, dict[str, Any]]:
        config = self.config
        warmup = make_sequence(self.space, workload, config.warmup_ops, config.seed + 1)
        ops = config.ops if workload is READ_HEAVY else config.write_ops
        # A fresh segment of the seeded stream per round: replaying one sequence would let
        # tier 1 learn exactly the keys it touches.
        rounds = [make_sequence(self.space, workload, ops, config.seed + 100 + r) for r in range(config.repeats)]
        tallies = {system.name: Tally() for system in self.systems}
        for system in self.systems:
            run_threads(_work(system, warmup, threads, config.sample_every))
        for round_index in range(config.repeats):
            progress(f"{workload.name}, {threads} thread(s): round {round_index + 1}/{config.repeats}")
            shift = round_index % len(self.systems)
            timed = rounds[round_index]
            gets = sum(1 for value in timed.values if value is None)
            for system in self.systems[shift:] + self.systems[:shift]:
                work = _work(system, timed, threads, config.sample_every)
                tally = tallies[system.name]
                tally.gets.append(gets)
                tally.sets.append(len(timed) - gets)
                if round_index == 0:
                    tally.stats_before = _stats(system)
                tally.runs.append(_timed(work))
        result = {}
        for system in self.systems:
            tally = tallies[system.name]
            tally.stats_after = _stats(system)
            tally.set_returns_none = system.set_returns_none
            result[system.name] = _summary(tally, self.overhead)
        return result


def _section(
    workload: Workload, figures: dict[str, dict[str, dict[str, Any]]], config: Config, opened_with: list[str]
) -> Section:
    ops = config.ops if workload is READ_HEAVY else config.write_ops
    section = Section(
        workload.name,
        f"{workload.name}: {workload.distribution} over {config.keys:,} keys, "
        f"{workload.set_fraction:.0%} sets, tier 1 = {config.memory_fraction:.0%} of keys, "
        f"median of {config.repeats} rounds of {ops:,} ops",
        columns=["system", "threads", "ops/s", "p50 us", "p99 us", "hit ratio", "tierstore is x"],
    )
    for threads_key, systems in figures.items():
        threads = int(threads_key.split("_")[1])
        ours = systems["tierstore"]["ops_per_s"]
        for name, summary in systems.items():
            speedup = ours / summary["ops_per_s"] if summary["ops_per_s"] else 0.0
            summary["tierstore_speedup"] = speedup
            hits = summary["hit_ratio"]
            section.rows.append(
                [name, threads, round(summary["ops_per_s"]), summary["p50_us"], summary["p99_us"], hits, speedup]
            )
            goal = GOALS.get((workload.name, name))
            if goal is not None:
                label = f"{threads} thread(s): tierstore / {name} ops/s"
                section.goals.append(Goal(label, speedup, goal[0], goal[1]))
        share = systems["tierstore"].get("tier1_hit_share")
        if share is not None:
            section.notes.append(f"{threads} thread(s): {share:.1%} of tierstore's hits came from tier 1")
    if any(key != "threads_1" for key in figures):
        section.notes.append("cachetools is not thread-safe: from several threads it runs behind a lock")
    section.notes.extend(opened_with)
    section.figures = {"workload": workload.__dict__, "by_threads": figures}
    return section


def run_throughput(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """The read-heavy and write-heavy sections (those in ``wanted``)."""
    runner = _Runner(config, parent)
    sections = []
    try:
        runner.prefill()
        plan = [(READ_HEAVY, config.threads), (WRITE_HEAVY, config.write_threads)]
        for workload, thread_counts in plan:
            if workload.name not in wanted:
                continue
            started = time.perf_counter()
            figures = {f"threads_{t}": runner.measure(workload, t) for t in thread_counts}
            section = _section(workload, figures, config, [system.opened_with for system in runner.systems])
            section.seconds = time.perf_counter() - started
            if not diskcache_available():
                section.skip("diskcache", "pip install diskcache")
            sections.append(section)
    finally:
        runner.close()
    return sections
