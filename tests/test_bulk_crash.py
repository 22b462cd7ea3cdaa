"""kill -9 during ``set_many``: every key holds the same round afterwards (all or nothing), indexed."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.bulk_crash_writer import KEYS, MIDWAY_ROUNDS, SETTINGS, value_for
from tests.conftest import ROUNDS_FACTOR
from tests.expiry_checks import assert_indexed
from tierstore import TierStore

WRITER = str(Path(__file__).with_name("bulk_crash_writer.py"))


def _acked(report: Path) -> int:
    lines = report.read_text().split() if report.exists() else []
    return int(lines[-1]) if lines else 0


def _check(working: str, acked: int, start: int = 0) -> int:
    """Every key holds the value of one same round, the acknowledged one or the next; returns it."""
    with TierStore(working, **SETTINGS) as store:
        values = [store.get(key) for key in KEYS]
        rounds = {None if value is None else int(value.split("@")[1].split(":")[0]) for value in values}
        assert len(rounds) == 1, f"a set_many landed in part: rounds {sorted(rounds, key=repr)}"
        (round_,) = rounds
        if round_ is None:
            assert acked == start == 0
            return 0
        assert round_ in ((acked or start), (acked or start) + 1)
        assert values == [value_for(key, round_) for key in KEYS]
        assert_indexed(store)
        return round_


def test_kill_9_half_way_through_a_set_many_batch_writes_nothing_of_it(tmp_path: Path) -> None:
    working, report = str(tmp_path / "work"), tmp_path / "report"
    done = subprocess.run([sys.executable, WRITER, "midway", working, str(report)], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert _acked(report) == MIDWAY_ROUNDS
    assert _check(working, MIDWAY_ROUNDS) == MIDWAY_ROUNDS  # the killed round left nothing


def test_kill_9_at_random_moments_of_set_many_rounds_is_all_or_nothing(tmp_path: Path) -> None:
    working = str(tmp_path / "work")
    rng = random.Random(13)
    start = 0  # each run numbers its rounds on from what the last one left
    for attempt in range(4 * ROUNDS_FACTOR):
        report = tmp_path / f"report-{attempt}"
        command = [sys.executable, WRITER, "loop", working, str(report), str(start)]
        writer = subprocess.Popen(command, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 1.0))  # when to kill, not an ordering: any moment must be safe
        assert writer.poll() is None, writer.stderr.read().decode() if writer.stderr else ""
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        start = _check(working, _acked(report), start)
