"""The writer the kill -9 tests run: versioned sets and checkpoints until it is killed.

Usage: ``python tests/crash_writer.py WORKING PERSIST REPORT SEED``. Every value is
``value_for(key, version)``, so a reader can tell a genuine value from a damaged
one. After each ``checkpoint()`` returns, the writer appends (and fsyncs) one JSON
line to REPORT: the version of every key acknowledged before that checkpoint began.
"""

from __future__ import annotations

import json
import os
import random
import sys

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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
