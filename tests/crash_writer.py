"""The writers the kill -9 tests run.

``python tests/crash_writer.py WORKING PERSIST REPORT SEED``: versioned sets and
checkpoints until it is killed. Every value is ``value_for(key, version)``, so a
reader can tell a genuine value from a damaged one. After each ``checkpoint()``
returns, the writer appends (and fsyncs) one JSON line to REPORT: the version of
every key acknowledged before that checkpoint began.

``python tests/crash_writer.py die SCENARIO POINT NTH WORKING PERSIST REPORT``: builds
a store as ``SCENARIO`` says and SIGKILLs itself the ``NTH`` time a checkpoint (or
a restore) passes ``POINT`` (the test-only hooks of checkpoint.py and restore.py).
REPORT receives JSON lines: ``{"written": {key: [versions]}}`` before the fatal
step, and ``{"checkpointed": {key: version}}`` after each checkpoint that completed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
from typing import Any

KEYS = [f"key-{i}" for i in range(200)]


def value_for(key: str, version: int) -> str:
    """The only value ever written for ``key`` at ``version``."""
    return f"{key}@{version}:" + "abcdefgh"[version % 8] * (version % 300)


def main(working: str, persist: str, report: str, seed: int) -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tierstore import TierStore

    rng = random.Random(seed)
    store = TierStore(working, persist_path=persist, checkpoint_interval=None, sweep_interval=None)
    # Each run starts above every version of the runs before (run number = seed), so
    # tombstones, whose versions get_entry does not show, never reject a write.
    versions = dict.fromkeys(KEYS, seed * 1_000_000)
    acked = dict.fromkeys(KEYS, 0)
    with open(report, "a", encoding="utf-8") as out:
        while True:
            for _ in range(rng.randrange(20, 400)):
                key = rng.choice(KEYS)
                version = versions[key] + 1
                if rng.random() < 0.05:
                    store.delete(key, version=version)
                elif not store.set(key, value_for(key, version), version=version):
                    sys.exit(f"set of {key} at version {version} was rejected")
                versions[key] = acked[key] = version
            before = dict(acked)
            store.checkpoint()
            out.write(json.dumps(before) + "\n")
            out.flush()
            os.fsync(out.fileno())


# -- dying at a chosen point of a checkpoint -------------------------------------------------

DIE_KEYS = [f"k{i:05d}" for i in range(2500)]
BOARD = "board"


class _Run:
    """One scenario's store and what it wrote, reported to the parent as JSON lines."""

    def __init__(self, report: str) -> None:
        self.out = open(report, "a", encoding="utf-8")  # noqa: SIM115 - lives until the process dies
        self.written: dict[str, list[int]] = {}
        self.current: dict[str, int] = {}

    def emit(self, **line: object) -> None:
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()
        os.fsync(self.out.fileno())

    def write(self, store: Any, keys: list[str], version: int | None, *, delete_every: int = 0) -> None:
        """Set (or, every ``delete_every``-th key, delete) ``keys``; ``version=None`` writes unversioned."""
        for n, key in enumerate(keys):
            if delete_every and n % delete_every == 0:
                store.delete(key, version=version)
                stored = max(version or 0, self.current.get(key, 0))
                self.written.setdefault(key, []).append(-stored)  # negative: a tombstone
            else:
                stored = version if version is not None else self.current.get(key, 0)
                assert store.set(key, value_for(key, stored), version=version)
                self.written.setdefault(key, []).append(stored)
            self.current[key] = stored

    def checkpoint(self, store: Any) -> None:
        store.checkpoint()
        self.emit(checkpointed=self.current)

    def fatal(self) -> None:
        """Report everything written: the next step is the one that dies."""
        self.emit(written=self.written)


def _fill(run: _Run, store: Any, version: int | None) -> None:
    run.write(store, DIE_KEYS, version)
    store.index(BOARD).add_many((f"m{i}", float(i % 97)) for i in range(1500))
    for i in range(50):
        store.incr(f"hits{i}", i)


def _change(run: _Run, store: Any, version: int) -> None:
    run.write(store, DIE_KEYS[::2], version, delete_every=10)
    board = store.index(BOARD)
    board.add_many((f"m{i}", float(-i)) for i in range(700, 2200))
    for i in range(0, 300, 3):
        board.remove(f"m{i}")


def die(scenario: str, point: str, nth: int, working: str, persist: str, report: str) -> None:
    """Run ``scenario``; SIGKILL this process the ``nth`` time a hook reports ``point``."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tierstore import TierStore, checkpoint, restore

    seen = 0

    def hook(name: str) -> None:
        nonlocal seen
        if name == point:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    run = _Run(report)
    opts: dict[str, Any] = {"checkpoint_interval": None, "sweep_interval": None, "persist_path": persist}
    store = TierStore(working, **opts)
    if scenario == "restore":  # killed while a lost working directory is restored
        _fill(run, store, 7)
        store.close()
        run.emit(checkpointed=run.current)
        shutil.rmtree(working)
        run.fatal()
        restore._hook = hook
        TierStore(working, **opts).close()
        sys.exit(f"restore: no kill at {point} #{nth}")
    if scenario == "first":
        _fill(run, store, 7)
    elif scenario == "incremental":  # the versions arrive after a checkpoint holding none
        _fill(run, store, None)
        run.checkpoint(store)
        _change(run, store, 10)
    elif scenario == "resync":  # a session that tracked nothing forces a full resync over the old checkpoint
        _fill(run, store, 7)
        store.close()
        run.emit(checkpointed=run.current)
        with TierStore(working, checkpoint_interval=None, sweep_interval=None) as untracked:
            _change(run, untracked, 10)
        store = TierStore(working, **opts)
        run.write(store, DIE_KEYS[1::50], 11)
    elif scenario == "close":
        _fill(run, store, 7)
        run.checkpoint(store)
        _change(run, store, 10)
    else:
        sys.exit(f"unknown scenario {scenario}")
    run.fatal()
    checkpoint._hook = hook
    if scenario == "close":
        store.close()
    else:
        store.checkpoint()
    sys.exit(f"{scenario}: no kill at {point} #{nth}")


if __name__ == "__main__":
    if sys.argv[1] == "die":
        die(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7])
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
