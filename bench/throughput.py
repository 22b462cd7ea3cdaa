"""Read-heavy and write-heavy workloads across every system: ops/s, p50/p99, hit ratios.

Every system gets a fresh data directory under the same temp parent and the
same prefill (coldest keys first, so each memory tier starts with the hottest).
All are prefilled before any is measured; then each (workload, threads) runs a
warm-up and ``repeats`` timed rounds, the system order rotating every round so
no system is always first or last after the others touched the page cache.
Every scenario runs on one set of systems prefilled once; between tier-1 sizes
the systems are reopened with the next size, their data kept. diskcache, the slowest peer by
4-10x, runs the first quarter of each round's operations, which keeps the whole
bench near a minute.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .measure import Batch, Op, RunResult, batches, clock_overhead_ns, median, percentile, run_threads
from .report import Goal, Section, progress
from .systems import SYSTEM_NAMES, System, diskcache_available, open_system
from .workloads import READ_HEAVY, WRITE_HEAVY, KeySpace, Sequence, Workload, make_sequence

__all__ = ["run_throughput", "SECTIONS", "SCENARIOS", "tier1_hit_ratio"]

SECTIONS = ("read-heavy", "read-heavy-5pct", "write-heavy")

# (scenario, other system) -> (op, target) for "tierstore ops/s / other ops/s".
GOALS: dict[tuple[str, str], tuple[str, float]] = {
    ("read-heavy-5pct", "plyvel+msgpack"): (">=", 1.2),
}


@dataclass(frozen=True)
class Scenario:
    """A workload on systems whose memory tier holds ``memory_fraction`` of the keys (None: the config's)."""

    name: str
    workload: Workload
    memory_fraction: float | None = None

    def fraction(self, config: Config) -> float:
        return config.memory_fraction if self.memory_fraction is None else self.memory_fraction

    def ops(self, config: Config) -> int:
        return config.write_ops if self.workload is WRITE_HEAVY else config.ops

    def threads(self, config: Config) -> tuple[int, ...]:
        return config.write_threads if self.workload is WRITE_HEAVY else config.threads


MEMORY_SIZED = ("tierstore", "cachetools")  # the systems whose memory tier a scenario sizes

SCENARIOS = (
    Scenario("read-heavy", READ_HEAVY),
    Scenario("write-heavy", WRITE_HEAVY),
    Scenario("read-heavy-5pct", READ_HEAVY, 0.05),
)


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
        summary["tier1_hit_ratio"] = tier1_hit_ratio(tally.stats_before, tally.stats_after)
    return summary


def tier1_hit_ratio(before: dict[str, int], after: dict[str, int]) -> float:
    """Tier-1 hits over every get the store answered between two ``stats()``: hits, misses, negative hits."""
    delta = {name: after[name] - before[name] for name in ("hits_memory", "hits_disk", "misses", "negative_hits")}
    gets = sum(delta.values())
    return delta["hits_memory"] / gets if gets else 0.0


class _Runner:
    """Systems prefilled with a memory tier of ``fraction`` of the keys, and the rounds run on them."""

    def __init__(self, config: Config, parent: str, fraction: float) -> None:
        self.config = config
        self.parent = parent
        self.space = KeySpace(config.keys, config.zipf_s, config.seed)
        self.capacity = max(1, int(config.keys * fraction))
        names = [name for name in SYSTEM_NAMES if name != "diskcache" or diskcache_available()]
        self.systems: list[System] = []
        try:
            for name in names:
                self.systems.append(open_system(name, parent, self.capacity))
        except BaseException:
            self.close()
            raise
        self.overhead = clock_overhead_ns()

    def prefill(self) -> float:
        """Every key into every system; returns the seconds that took."""
        started = time.perf_counter()
        space = self.space
        pairs = [(space.names[i], space.value(i)) for i in space.prefill_order()]
        for system in self.systems:
            progress(f"prefill {system.name}: {len(pairs):,} keys")
            system.bulk(pairs)
        return time.perf_counter() - started

    def close(self) -> None:
        for system in self.systems:
            system.close()

    def use_fraction(self, fraction: float) -> None:
        """Reopen every system with memory tiers at ``fraction`` of the keys; the data on disk stays.

        Every system is reopened, so the LevelDB-backed ones compare as equals; tierstore
        and cachetools (whose memory starts empty) then take the hottest keys, as the
        prefill (coldest first) left them.
        """
        capacity = max(1, int(self.config.keys * fraction))
        if capacity == self.capacity:
            return
        self.capacity = capacity
        space = self.space
        hottest = [(space.names[i], space.value(i)) for i in space.prefill_order()[-capacity:]]
        for index, system in enumerate(self.systems):
            system.close()
            self.systems[index] = system = open_system(system.name, self.parent, capacity)
            if system.name in MEMORY_SIZED:
                system.bulk(hottest)

    def measure(self, workload: Workload, ops: int, threads: int) -> dict[str, dict[str, Any]]:
        config = self.config
        warmup = make_sequence(self.space, workload, config.warmup_ops, config.seed + 1)
        # A fresh segment of the seeded stream per round: replaying one sequence would let
        # tier 1 learn exactly the keys it touches.
        rounds = [make_sequence(self.space, workload, ops, config.seed + 100 + r) for r in range(config.repeats)]
        tallies = {system.name: Tally() for system in self.systems}
        for system in self.systems:
            run_threads(_work(system, warmup.head(system.round_share), threads, config.sample_every))
        for round_index in range(config.repeats):
            progress(f"{workload.name}, {threads} thread(s): round {round_index + 1}/{config.repeats}")
            shift = round_index % len(self.systems)
            for system in self.systems[shift:] + self.systems[:shift]:
                timed = rounds[round_index].head(system.round_share)
                gets = sum(1 for value in timed.values if value is None)
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


def _section(scenario: Scenario, figures: dict[str, dict[str, dict[str, Any]]], config: Config) -> Section:
    workload = scenario.workload
    keys = workload.distribution + (f"({config.zipf_s})" if workload.distribution == "zipf" else "")
    section = Section(
        scenario.name,
        f"{scenario.name}: {keys} over {config.keys:,} keys, {workload.set_fraction:.0%} sets, "
        f"tier 1 = {scenario.fraction(config):.0%} of keys, median of {config.repeats} rounds of "
        f"{scenario.ops(config):,} ops",
        columns=["system", "threads", "ops/s", "p50 us", "p99 us", "hit ratio", "t1 hit ratio", "tierstore is x"],
    )
    for threads_key, systems in figures.items():
        threads = int(threads_key.split("_")[1])
        ours = systems["tierstore"]["ops_per_s"]
        for name, summary in systems.items():
            speedup = ours / summary["ops_per_s"] if summary["ops_per_s"] else 0.0
            summary["tierstore_speedup"] = speedup
            row = [name, threads, round(summary["ops_per_s"]), summary["p50_us"], summary["p99_us"]]
            row += [summary["hit_ratio"], summary.get("tier1_hit_ratio", ""), speedup]
            section.rows.append(row)
            goal = GOALS.get((scenario.name, name))
            if goal is not None:
                label = f"{threads} thread(s): tierstore / {name} ops/s"
                section.goals.append(Goal(label, speedup, goal[0], goal[1]))
    section.notes.append(
        "hit ratio: gets that found their key; t1 hit ratio: tierstore's tier-1 hits over all its gets "
        "(hits_memory / (hits_memory + hits_disk + misses + negative_hits), stats() over the timed rounds)"
    )
    if any(key != "threads_1" for key in figures):
        section.notes.append("cachetools is not thread-safe: from several threads it runs behind a lock")
    section.figures = {
        "workload": workload.__dict__,
        "memory_fraction": scenario.fraction(config),
        "by_threads": figures,
    }
    return section


def _run_scenario(runner: _Runner, scenario: Scenario, prefill_note: str) -> Section:
    config = runner.config
    started = time.perf_counter()
    runner.use_fraction(scenario.fraction(config))
    ops = scenario.ops(config)
    figures = {f"threads_{t}": runner.measure(scenario.workload, ops, t) for t in scenario.threads(config)}
    section = _section(scenario, figures, config)
    section.seconds = time.perf_counter() - started
    section.notes.append(prefill_note)
    section.notes.extend(system.opened_with for system in runner.systems)
    for system in runner.systems:
        if system.round_share > 1:
            section.notes.append(
                f"{system.name}: runs the first 1/{system.round_share} of each round's ops "
                f"({ops // system.round_share:,}) and of the warm-up; its figures are over those"
            )
    if not diskcache_available():
        section.skip("diskcache", "pip install diskcache")
    return section


def run_throughput(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """The throughput sections in ``wanted``, on one set of systems prefilled once.

    Scenarios with the same tier-1 size run one after the other; between sizes every
    system is reopened with the next size (``_Runner.use_fraction``), its data kept.
    """
    # The smallest tier 1 first: read-heavy-5pct, the section with a goal, runs on freshly prefilled data.
    scenarios = sorted(
        (scenario for scenario in SCENARIOS if scenario.name in wanted),
        key=lambda scenario: scenario.fraction(config),
    )
    if not scenarios:
        return []
    runner = _Runner(config, os.path.join(parent, "throughput"), scenarios[0].fraction(config))
    try:
        prefill_s = runner.prefill()
        names = [scenario.name for scenario in scenarios]
        once = f" (once for {', '.join(names[:-1])} and {names[-1]})" if len(names) > 1 else ""
        note = f"prefill of {config.keys:,} keys into each system: {prefill_s:.1f} s{once}, not in the section's time"
        if len(names) > 1:
            note += "; the sections run in the order " + ", ".join(names) + " on the same data"
        sections = [_run_scenario(runner, scenario, note) for scenario in scenarios]
    finally:
        runner.close()
    return sorted(sections, key=lambda section: SECTIONS.index(section.name))
