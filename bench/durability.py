"""Durability: checkpoint throughput (full, incremental), the hot path during one, restore time."""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import Any

from tierstore import TierStore

from .config import Config
from .features import has, method
from .measure import median
from .report import Goal, Section, progress, timed
from .settings import settings_note
from .workloads import sample_value

__all__ = ["run_durability", "SECTIONS"]

SECTIONS = ("checkpoint",)
_HOT_KEYS = 1_000
_CHUNK_GETS = 200
_CHUNK_SETS = 20
ns = time.perf_counter_ns


def _settings(persist: str) -> dict[str, Any]:
    """The settings of the store and of its restore."""
    return {"persist_path": persist, "checkpoint_interval": None, "sweep_interval": None}


def _dir_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass
    return total


def _fill(store: TierStore, count: int, generation: int) -> None:
    for i in range(count):
        value = sample_value(i)
        value["generation"] = generation
        store.set(f"entry:{i:07d}", value)


def _checkpoint(store: TierStore, persist: str) -> dict[str, Any]:
    before = _dir_bytes(persist)
    t0 = time.perf_counter()
    result = method(store, "checkpoint")()
    seconds = time.perf_counter() - t0
    written = result.get("bytes") if isinstance(result, dict) else None
    if not isinstance(written, int):
        written = max(0, _dir_bytes(persist) - before)
    records = result.get("records") if isinstance(result, dict) else None
    return {"seconds": seconds, "bytes": written, "records": records, "mb_per_s": written / seconds / 1e6}


def _mixed_chunk(store: TierStore, keys: list[str], value: Any) -> int:
    """Elapsed ns of a chunk of tier-1 gets and a few sets: the hot path a service runs."""
    get, put = store.get, store.set
    t0 = ns()
    for key in keys[:_CHUNK_GETS]:
        get(key)
    for key in keys[:_CHUNK_SETS]:
        put(key, value)
    return ns() - t0


def _hot_path_ns(store: TierStore, keys: list[str], chunks: int, until: threading.Event | None = None) -> float:
    """Median ns per op over ``chunks`` chunks (or until ``until`` is set, at least a few)."""
    value = sample_value(1)
    per_op = []
    for number in range(chunks):
        if until is not None and until.is_set() and number >= 3:
            break
        per_op.append(_mixed_chunk(store, keys, value) / (_CHUNK_GETS + _CHUNK_SETS))
    return median(per_op)


def _slowdown(store: TierStore, persist: str, keys: list[str], chunks: int) -> dict[str, Any]:
    """The hot path alone, then while a checkpoint runs in another thread."""
    baseline = _hot_path_ns(store, keys, chunks)
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome.update(_checkpoint(store, persist))
        finally:
            done.set()

    worker = threading.Thread(target=run)
    worker.start()
    during = _hot_path_ns(store, keys, 1_000_000, until=done)
    worker.join()
    return {"baseline_ns": baseline, "during_ns": during, "slowdown": during / baseline, "checkpoint": outcome}


def _measure(config: Config, root: str) -> dict[str, Any]:
    work, persist = os.path.join(root, "work"), os.path.join(root, "persist")
    entries = config.checkpoint_entries
    keys = [f"entry:{i:07d}" for i in range(_HOT_KEYS)]
    chunks = max(5, config.slowdown_ops // (_CHUNK_GETS + _CHUNK_SETS))
    figures: dict[str, Any] = {"entries": entries}
    store = TierStore(work, **_settings(persist))
    try:
        progress(f"checkpoint: filling {entries:,} entries")
        _fill(store, entries, 0)
        figures["full"] = _checkpoint(store, persist)
        _fill(store, entries // 100, 1)
        figures["incremental"] = _checkpoint(store, persist)
        _fill(store, 1, 9)
        figures["one_write"] = _checkpoint(store, persist)
        progress("checkpoint: hot path during a full-size checkpoint")
        _fill(store, entries, 2)
        figures["during_full"] = _slowdown(store, persist, keys, chunks)
        _fill(store, entries // 100, 3)
        figures["during_incremental"] = _slowdown(store, persist, keys, chunks)
    finally:
        store.close()
    shutil.rmtree(work)
    progress("checkpoint: restore from persist_path")
    t0 = time.perf_counter()
    restored = TierStore(work, **_settings(persist))
    try:
        figures["restore_s"] = time.perf_counter() - t0
        figures["restored_ok"] = restored.get(f"entry:{entries - 1:07d}") is not None
    finally:
        restored.close()
    return figures


def run_durability(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """The checkpoint section."""
    return [timed(lambda: _checkpoint_section(config, parent))]


def _checkpoint_section(config: Config, parent: str) -> Section:
    section = Section(
        "checkpoint",
        f"checkpoint: a store of {config.checkpoint_entries:,} entries, persist_path on the same disk",
        columns=["phase", "seconds", "MB", "MB/s", "hot path slowdown"],
    )
    if not has("checkpoint"):
        section.skip("checkpoint/persist_path")
        return section
    root = os.path.join(parent, "durability")
    os.makedirs(root)
    figures = _measure(config, root)
    section.figures = figures
    full, incremental = figures["full"], figures["incremental"]
    entries = config.checkpoint_entries
    section.rows.append(["full", full["seconds"], full["bytes"] / 1e6, full["mb_per_s"], ""])
    section.rows.append(
        ["incremental (1%)", incremental["seconds"], incremental["bytes"] / 1e6, incremental["mb_per_s"], ""]
    )
    for name in ("during_full", "during_incremental"):
        run = figures[name]
        done = run["checkpoint"]
        label = "full-size, under load" if name == "during_full" else "incremental, under load"
        section.rows.append([label, done["seconds"], done["bytes"] / 1e6, done["mb_per_s"], f"{run['slowdown']:.2f}x"])
    one = figures["one_write"]
    section.rows.insert(2, ["incremental (1 write)", one["seconds"], one["bytes"] / 1e6, one["mb_per_s"], ""])
    section.rows.append([f"restore {entries:,} entries (open)", figures["restore_s"], "", "", ""])
    ratio = one["seconds"] / full["seconds"]
    section.goals.append(Goal("checkpoint after 1 write / full checkpoint time", ratio, "<=", 0.1))
    changed = entries // 100
    copied = incremental["records"]
    if isinstance(copied, int) and copied < changed:
        section.notes.append(f"the incremental checkpoint copied {copied} records after {changed} entries changed")
    if not figures["restored_ok"]:
        section.notes.append("restore did not bring back the last entry")
    section.notes.append(
        f"hot path = {_CHUNK_GETS} tier-1 gets + {_CHUNK_SETS} sets per chunk; slowdown = median ns/op during "
        "the checkpoint over the same before it"
    )
    section.notes.append(settings_note(_settings(os.path.join(root, "persist")), "tierstore (and its restore)"))
    return section
