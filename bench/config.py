"""The sizes of a bench run: full (the default), quick (a smoke run) and smoke (the tests)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Config", "PROFILES"]


@dataclass(frozen=True)
class Config:
    """Every size the bench uses, so a profile is one object."""

    name: str
    keys: int  # key space of the throughput workloads
    ops: int  # read-heavy operations per timed repeat (split across threads)
    write_ops: int  # write-heavy operations per timed repeat
    warmup_ops: int
    repeats: int
    threads: tuple[int, ...]
    write_threads: tuple[int, ...]
    memory_fraction: float = 0.10  # tier 1 (and the LRU) hold this share of the keys
    zipf_s: float = 0.99
    seed: int = 20240601
    sample_every: int = 8  # one op in this many is timed on its own for latency
    hot_rounds: int = 15
    hot_ops: int = 20_000
    stampede_threads: int = 32
    stampede_keys: int = 100
    stampede_waves: int = 4
    stampede_ticks: int = 40
    source_delay: float = 0.005
    penetration_lookups: int = 3_000
    penetration_threads: int = 8
    penetration_present: int = 20_000
    penetration_delay: float = 0.001
    counter_ops: int = 40_000
    index_members: int = 100_000
    page_repeats: int = 200
    checkpoint_entries: int = 100_000
    slowdown_ops: int = 200_000
    sweep_sizes: tuple[int, ...] = (100_000, 1_000_000)  # a store grown through these sizes, swept at each
    sweep_calls: int = 3
    shared_workers: int = 4  # worker processes of the shared sections
    shared_keys: int = 50_000  # a quarter of the throughput sections': each worker also reads every key once
    shared_ops: int = 40_000  # read-heavy ops per timed round, over every worker
    shared_write_ops: int = 20_000
    shared_warmup_ops: int = 5_000  # per worker and system, before the timed rounds
    shared_repeats: int = 5
    lag_writes: int = 1_000
    lag_pause: float = 0.005  # seconds between the lag writer's sets
    aio_coroutines: int = 1_000  # the asyncio section's concurrent coroutines
    aio_ops: int = 20  # reads per coroutine
    aio_keys: int = 10_000

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Config(
    name="full",
    keys=200_000,
    ops=40_000,
    write_ops=20_000,
    warmup_ops=20_000,
    repeats=5,
    threads=(1, 4),
    write_threads=(1, 4),
)

QUICK = Config(
    name="quick",
    keys=50_000,
    ops=16_000,
    write_ops=10_000,
    warmup_ops=4_000,
    repeats=3,
    threads=(1, 4),
    write_threads=(1,),
    hot_rounds=7,
    hot_ops=5_000,
    stampede_waves=2,
    penetration_lookups=1_000,
    penetration_present=5_000,
    counter_ops=10_000,
    index_members=100_000,
    page_repeats=50,
    checkpoint_entries=20_000,
    slowdown_ops=50_000,
    sweep_sizes=(10_000, 100_000),
    shared_keys=5_000,
    shared_ops=8_000,
    shared_write_ops=2_000,
    shared_warmup_ops=500,
    shared_repeats=3,
    lag_writes=150,
    aio_ops=10,
    aio_keys=5_000,
)

SMOKE = Config(
    name="smoke",
    keys=4_000,
    ops=2_000,
    write_ops=1_000,
    warmup_ops=500,
    repeats=2,
    threads=(1, 2),
    write_threads=(1,),
    hot_rounds=3,
    hot_ops=1_000,
    stampede_threads=8,
    stampede_keys=20,
    stampede_waves=2,
    stampede_ticks=8,
    source_delay=0.002,
    penetration_lookups=200,
    penetration_threads=4,
    penetration_present=1_000,
    counter_ops=2_000,
    index_members=5_000,
    page_repeats=10,
    checkpoint_entries=3_000,
    slowdown_ops=5_000,
    sweep_sizes=(1_000, 5_000),
    shared_keys=1_000,
    shared_ops=800,
    shared_write_ops=400,
    shared_warmup_ops=200,
    shared_repeats=2,
    lag_writes=40,
    lag_pause=0.002,
    aio_coroutines=100,
    aio_ops=5,
    aio_keys=500,
)

PROFILES = {config.name: config for config in (FULL, QUICK, SMOKE)}
