"""Crashes and faults with real processes, real signals and real LevelDB directories.

- kill -9 of a writer doing versioned sets and checkpoints, at random moments:
  every reopen succeeds, every value is one that was written for its key, and
  nothing from a completed checkpoint is lost, from the working directory and
  from the checkpoint alone.
- Damaged working directories: restore from the checkpoint, or ``CorruptStore``.
- A full filesystem (a small tmpfs): ``StorageFull``, no crash, a clean reopen.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROUNDS_FACTOR, resize_tmpfs
from tests.crash_writer import KEYS, value_for
from tierstore import CorruptStore, StorageFull, TierStore, TierStoreError
from tierstore.codec import VALUE, VERSION, encode_key, is_tombstone, unpack_record
from tierstore.keyspace import NS_ENTRY

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}
WRITER = str(Path(__file__).with_name("crash_writer.py"))
ROUNDS = 20 * ROUNDS_FACTOR


def _last_checkpoint(report: Path) -> dict[str, int]:
    """The versions acknowledged before the last checkpoint the writer saw complete."""
    if not report.exists():
        return {}
    lines = [line for line in report.read_text().split("\n")[:-1] if line]
    return json.loads(lines[-1]) if lines else {}


def _check(store: TierStore, floor: dict[str, int]) -> None:
    """Each key holds a version at least ``floor`` with exactly the value written for it."""
    for key in KEYS:
        data = store._disk.get(NS_ENTRY + encode_key(key))
        if data is None:
            assert floor.get(key, 0) == 0, f"{key}: lost (checkpointed at version {floor[key]})"
            continue
        record = unpack_record(data)
        assert record[VERSION] >= floor.get(key, 0), f"{key}: version {record[VERSION]} < {floor[key]}"
        if is_tombstone(record):
            assert store.get(key) is None
        else:
            assert record[VALUE] == value_for(key, record[VERSION])
            assert store.get(key) == value_for(key, record[VERSION])


def test_kill_9_at_random_moments_never_loses_a_checkpoint(tmp_path: Path) -> None:
    working, persist = str(tmp_path / "work"), str(tmp_path / "persist")
    rng = random.Random(6)
    floor: dict[str, int] = {}
    checkpoints = 0
    for round_number in range(1, ROUNDS + 1):
        report = tmp_path / f"report-{round_number}"
        writer = subprocess.Popen(
            [sys.executable, WRITER, working, persist, str(report), str(round_number)], stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.25, 1.2))
        assert writer.poll() is None, writer.stderr.read().decode() if writer.stderr else ""
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        done = _last_checkpoint(report)
        checkpoints += bool(done)
        for key, version in done.items():
            floor[key] = max(floor.get(key, 0), version)
        if os.path.exists(persist):
            # The checkpoint alone, as if the working directory were lost.
            copy = str(tmp_path / f"persist-copy-{round_number}")
            shutil.copytree(persist, copy)
            with TierStore(str(tmp_path / f"fresh-{round_number}"), persist_path=copy, **OPTS) as restored:
                _check(restored, floor)
        else:
            assert not floor
        with TierStore(working, persist_path=persist, **OPTS) as store:
            _check(store, floor)
    assert checkpoints >= ROUNDS // 2  # most rounds lived long enough to complete one


# -- damaged working directories ------------------------------------------------------------


def _filled(working: str, persist: str | None, n: int = 3000) -> dict[str, str]:
    """A store with table files on disk (and a checkpoint when ``persist`` is set)."""
    values = {f"k{i}": os.urandom(24).hex() for i in range(n)}
    settings = dict(OPTS, persist_path=persist)
    with TierStore(working, **settings) as store:
        for key, value in values.items():
            store.set(key, value, version=1)
    TierStore(working, **settings).close()  # reopening turns the log into a table
    assert any(name.endswith(".ldb") for name in os.listdir(working))
    return values


def _table(working: str) -> str:
    return os.path.join(working, sorted(n for n in os.listdir(working) if n.endswith(".ldb"))[0])


def _truncate_table(working: str) -> None:
    table = _table(working)
    os.truncate(table, os.path.getsize(table) // 2)


def _garble_log(working: str) -> None:
    with TierStore(working, **OPTS) as store:
        for i in range(200):
            store.set(f"late{i}", "x" * 50)
    logs = [n for n in os.listdir(working) if n.endswith(".log") and os.path.getsize(os.path.join(working, n))]
    path = os.path.join(working, logs[0])
    with open(path, "r+b") as log_file:
        log_file.seek(os.path.getsize(path) // 2)
        log_file.write(b"\xde\xad\xbe\xef" * 8)


def _remove_current(working: str) -> None:
    os.remove(os.path.join(working, "CURRENT"))


DAMAGE = {"truncated table": _truncate_table, "garbled log": _garble_log, "no CURRENT": _remove_current}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_working_directory_is_restored_from_the_checkpoint(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    working, persist = str(tmp_path / "work"), str(tmp_path / "persist")
    values = _filled(working, persist)
    DAMAGE[damage](working)
    with (
        caplog.at_level(logging.WARNING, logger="tierstore"),
        TierStore(working, persist_path=persist, **OPTS) as store,
    ):
        assert store.stats()["restored_from_checkpoint"] == 1
        for key, value in values.items():
            assert store.get(key) == value
        assert store.set("k1", "older", version=1) is False
    assert "restored" in caplog.text
    aside = [n for n in os.listdir(tmp_path) if n.startswith("work.corrupt-")]
    assert len(aside) == 1  # the damaged directory is kept for inspection


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_working_directory_without_checkpoint_raises_corrupt_store(tmp_path: Path, damage: str) -> None:
    working = str(tmp_path / "work")
    _filled(working, None)
    DAMAGE[damage](working)
    tables = {name: os.path.getsize(os.path.join(working, name)) for name in os.listdir(working) if ".ldb" in name}
    with pytest.raises(CorruptStore, match="corrupt"):
        TierStore(working, **OPTS)
    assert os.listdir(tmp_path) == ["work"]  # nothing moved aside
    for name, size in tables.items():  # the damaged data is left as it was
        assert os.path.getsize(os.path.join(working, name)) == size


def test_garbled_table_never_serves_a_wrong_value(tmp_path: Path) -> None:
    working, persist = str(tmp_path / "work"), str(tmp_path / "persist")
    values = _filled(working, persist)
    table = _table(working)
    content = Path(table).read_bytes()
    # Values are random hex, stored verbatim in uncompressible blocks: change one.
    victim = next(key for key, value in values.items() if content.count(value.encode()) == 1)
    at = content.index(values[victim].encode())
    with open(table, "r+b") as table_file:
        table_file.seek(at)
        table_file.write(b"Z")
    try:
        store = TierStore(working, persist_path=persist, **OPTS)
    except TierStoreError:
        return
    with store:
        served = {key: store.get(key) for key in values}  # a damaged block reads as a miss, never raises
        assert all(got in (value, None) for got, value in zip(served.values(), values.values(), strict=True))
        assert served[victim] is None
        assert store.stats()["corrupt_records"] > 0


# -- a full filesystem ------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("2m")


def test_full_filesystem_raises_storage_full_and_reopens(small_fs: Path) -> None:
    working = str(small_fs / "work")
    written: dict[str, str] = {}
    store = TierStore(working, **OPTS)
    with pytest.raises(StorageFull):
        for i in range(100_000):
            value = os.urandom(256).hex()
            store.set(f"k{i}", value)
            written[f"k{i}"] = value
    assert issubclass(StorageFull, TierStoreError)
    assert len(written) > 100
    first = next(iter(written))
    assert store.get(first) == written[first]  # still readable after the failed write
    try:
        store.close()
    except Exception:
        # Closing cannot write its clean marker on a full disk (StorageFull). It must
        # release the directory anyway,
        # which the reopen below checks.
        pass
    resize_tmpfs(small_fs, "16m")
    with TierStore(working, **OPTS) as reopened:
        for key, value in written.items():
            assert reopened.get(key) == value
