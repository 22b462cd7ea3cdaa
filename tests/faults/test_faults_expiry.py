"""kill -9 of a process writing entries with and without expiry while it sweeps: no entry loses its index record.

LevelDB applies writes in order and a batch whole or not at all: an entry's index
record is written before it (a put of its own, or first in the entry's batch with
a capacity), and a sweep's purge, tombstone and index moves are one batch each.
So after any kill every entry with an expiry is indexed, and one sweep far enough
in the future removes every entry that expired.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROUNDS_FACTOR, FakeClock
from tests.expiry_checks import assert_indexed, checked_sweep, entries
from tierstore import TierStore
from tierstore.codec import EXPIRES_AT, unpack_record

ROOT = str(Path(__file__).resolve().parents[2])
ROUNDS = 4 * ROUNDS_FACTOR
TOMBSTONE_TTL = 86_400.0

WRITER = """
import random, sys
from tierstore import ABSENT, TierStore
path, seed, capacity = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "capacity"
rng = random.Random(seed)
settings = {"sweep_interval": 0.02, "checkpoint_interval": None, "memory_items": 50}
if capacity:
    settings["disk_capacity_bytes"] = 40_000
store = TierStore(path, **settings)
versions = {}
for n in range(10**9):
    key = f"k{rng.randrange(300)}"
    ttl = rng.choice([None, 0.01, 0.05, 0.2, 5.0, 600.0])
    roll = rng.random()
    if roll < 0.1:
        store.delete(key, version=versions.get(key, 0) + 1 if rng.random() < 0.5 else None)
    elif roll < 0.2:
        store.set(key, ABSENT, ttl=ttl or 0.05)
    elif roll < 0.5:
        versions[key] = versions.get(key, 0) + 1
        store.set(key, n, ttl=ttl, version=versions[key] + seed * 10**6)
    else:
        store.set(key, n, ttl=ttl)
    if n == 2000:
        print("writing", flush=True)
"""


def test_kill_9_mid_writes_and_sweeps_leaves_every_entry_indexed(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    rng = random.Random(12)
    for round_number in range(1, ROUNDS + 1):
        mode = "capacity" if round_number % 2 else "plain"
        command = [sys.executable, "-c", WRITER, path, str(round_number), mode]
        writer = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        line = writer.stdout.readline()
        assert line == "writing\n", writer.stderr.read() if writer.stderr else line
        time.sleep(rng.uniform(0.05, 0.5))
        assert writer.poll() is None
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        clock = FakeClock(time.time() + 3600)  # past every TTL but 600 s; tombstones still young
        with TierStore(path, clock=clock, sweep_interval=None, checkpoint_interval=None) as store:
            assert_indexed(store)
            counts = checked_sweep(store, clock.now, 0.0, TOMBSTONE_TTL)
            assert counts["expired_purged"] > 0
            for data in entries(store).values():
                expires_at = unpack_record(data)[EXPIRES_AT]
                assert expires_at is None or expires_at > clock.now
