"""The writer the kill -9 tests of ``set_many`` run.

``python tests/bulk_crash_writer.py MODE WORKING REPORT [START]``: rounds of one ``set_many``
of every key in ``KEYS``, numbered from ``START + 1`` (round ``n`` writes ``value_for(key, n)``,
with a TTL and a disk capacity, so each batch carries expiry index and write-order records too).
After each ``set_many`` returns, the round number is appended (and fsynced) to REPORT.

- ``loop``: rounds until it is killed from outside.
- ``midway``: after ``MIDWAY_ROUNDS`` rounds, the next ``set_many`` SIGKILLs the process half way
  through handing its batch to LevelDB.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable, Iterator
from typing import Any

KEYS = [f"bulk-{i:03d}" for i in range(200)]
MIDWAY_ROUNDS = 3
SETTINGS: dict[str, Any] = {
    "default_ttl": 3600.0,
    "disk_capacity_bytes": 10**9,
    "sweep_interval": None,
    "checkpoint_interval": None,
}


def value_for(key: str, round_: int) -> str:
    """The only value ever written for ``key`` in round ``round_``."""
    return f"{key}@{round_}:" + "x" * 2000


def _dying(ops: Iterable[Any]) -> Iterator[Any]:
    items = list(ops)
    for n, op in enumerate(items):
        if n == len(items) // 2:
            os.kill(os.getpid(), signal.SIGKILL)
        yield op


def _die_in_the_next_batch(store: Any) -> None:
    write = store._disk.write
    store._disk.write = lambda ops, **kw: write(_dying(ops), **kw)


def main(mode: str, working: str, report: str, start: int = 0) -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tierstore import TierStore

    store = TierStore(working, **SETTINGS)
    round_ = start
    with open(report, "a", encoding="utf-8") as out:
        while True:
            round_ += 1
            if mode == "midway" and round_ == start + MIDWAY_ROUNDS + 1:
                _die_in_the_next_batch(store)
            store.set_many({key: value_for(key, round_) for key in KEYS})
            out.write(f"{round_}\n")
            out.flush()
            os.fsync(out.fileno())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
