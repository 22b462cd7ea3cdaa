"""Counters and indexes: counter increments per second, and offset against keyset pagination."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from tierstore import TierStore

from .config import Config
from .features import has, method
from .measure import median, percentile
from .report import Section, progress, timed
from .settings import settings_note

__all__ = ["run_data", "SECTIONS"]

SECTIONS = ("counters", "pagination")
_COUNTER_KEYS = 64
_SETTINGS: dict[str, Any] = {"checkpoint_interval": None, "sweep_interval": None}
ns = time.perf_counter_ns


def _incr_rate(store: TierStore, ops: int, threads: int) -> dict[str, Any]:
    incr = method(store, "incr")
    keys = [f"counter:{i}" for i in range(_COUNTER_KEYS)]
    share = ops // threads
    barrier = threading.Barrier(threads)
    spans: list[tuple[int, int]] = [(0, 0)] * threads

    def work(index: int) -> None:
        mine = [keys[(index + i) % _COUNTER_KEYS] for i in range(share)]
        barrier.wait()
        t0 = ns()
        for key in mine:
            incr(key)
        spans[index] = (t0, ns())

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return {"threads": threads, "increments": share * threads, "incr_per_s": share * threads * 1e9 / elapsed}


def _counters(config: Config, root: str) -> Section:
    section = Section(
        "counters",
        f"counters: {config.counter_ops:,} increments over {_COUNTER_KEYS} keys",
        columns=["threads", "incr/s", "us/incr"],
    )
    if not has("counters"):
        section.skip("incr/counter")
        return section
    for threads in (1, 4):
        progress(f"counters: {threads} thread(s)")
        path = os.path.join(root, f"counters-{threads}")
        with TierStore(path, **_SETTINGS) as store:
            figures = _incr_rate(store, config.counter_ops, threads)
            total = sum(method(store, "counter")(f"counter:{i}") for i in range(_COUNTER_KEYS))
        figures["lost_updates"] = figures["increments"] - total
        section.figures[f"threads_{threads}"] = figures
        section.rows.append([threads, figures["incr_per_s"], 1e6 / figures["incr_per_s"]])
        if figures["lost_updates"]:
            section.notes.append(f"{threads} threads: {figures['lost_updates']} increments were lost")
    section.notes.append(settings_note(_SETTINGS))
    return section


def _time_calls(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        t0 = ns()
        call()
        samples.append((ns() - t0) / 1000)
    return {"median_us": median(samples), "p99_us": percentile(samples, 0.99)}


def _walk(index: Any, pages: int, deep_offset: int) -> dict[str, dict[str, float]]:
    """Keyset pages from the start: the first ``pages``, and ``pages`` more past ``deep_offset`` members."""
    skip_pages = deep_offset // 20
    cursor = None
    early: list[float] = []
    deep: list[float] = []
    for number in range(skip_pages + pages):
        t0 = ns()
        _, cursor = index.page_after(cursor, 20)
        elapsed = (ns() - t0) / 1000
        if number < pages:
            early.append(elapsed)
        elif number >= skip_pages:
            deep.append(elapsed)
        if cursor is None:
            break
    return {
        "page_after (first pages)": {"median_us": median(early), "p99_us": percentile(early, 0.99)},
        f"page_after (past {deep_offset:,})": {"median_us": median(deep), "p99_us": percentile(deep, 0.99)},
    }


def _pagination(config: Config, root: str) -> Section:
    members = config.index_members
    section = Section(
        "pagination",
        f"pagination: a SortedIndex of {members:,} members, pages of 20",
        columns=["call", "median us", "p99 us"],
    )
    if not has("index"):
        section.skip("index/SortedIndex")
        return section
    rng = random.Random(config.seed)
    pairs = [(f"member:{i:07d}", rng.random() * 1e6) for i in range(members)]
    with TierStore(os.path.join(root, "pagination"), **_SETTINGS) as store:
        index = method(store, "index")("bench")
        progress(f"pagination: add_many of {members:,} members")
        t0 = time.perf_counter()
        index.add_many(pairs)
        section.figures["add_many_s"] = time.perf_counter() - t0
        repeats = config.page_repeats
        calls: dict[str, dict[str, float]] = {"page(0, 20)": _time_calls(lambda: index.page(0, 20), repeats)}
        offset = min(10_000, members // 2)
        calls.update(_walk(index, repeats, offset))
        calls[f"page(offset={offset:,})"] = _time_calls(lambda: index.page(offset, 20), repeats)
        if members // 2 > offset:
            middle = members // 2
            calls[f"page(offset={middle:,})"] = _time_calls(lambda: index.page(middle, 20), max(3, repeats // 10))
        calls["rank(member)"] = _time_calls(lambda: index.rank(pairs[members // 2][0]), repeats)
    section.figures["calls"] = calls
    section.rows.extend([name, figures["median_us"], figures["p99_us"]] for name, figures in calls.items())
    section.notes.append(f"add_many of {members:,} members took {section.figures['add_many_s']:.2f} s")
    section.notes.append(settings_note(_SETTINGS))
    return section


def run_data(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """The counters and pagination sections (those in ``wanted``)."""
    root = os.path.join(parent, "data")
    os.makedirs(root, exist_ok=True)
    sections = []
    if "counters" in wanted:
        sections.append(timed(lambda: _counters(config, root)))
    if "pagination" in wanted:
        sections.append(timed(lambda: _pagination(config, root)))
    return sections
