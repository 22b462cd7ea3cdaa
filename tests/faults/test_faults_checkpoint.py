"""kill -9 at ten distinct points of a checkpoint (and of a restore), then reopen.

A child process (tests/crash_writer.py ``die``) builds a store, then SIGKILLs
itself when the test-only hook of checkpoint.py or restore.py reports the
chosen point. Both the working directory as the child left it and the
checkpoint alone (as if the working directory were lost) must then open and
serve nothing wrong: every value is one written for its key, versions hold the
version rule, and every index agrees with itself (page, rank, len).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.crash_writer import BOARD, DIE_KEYS, value_for
from tierstore import TierStore
from tierstore.codec import VERSION, encode_key, is_tombstone, unpack_record
from tierstore.keyspace import NS_ENTRY

WRITER = str(Path(__file__).parent.parent / "crash_writer.py")
OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}

# (scenario, point, nth): where the child dies.
KILL_POINTS = [
    ("first", "record", 1),  # the first checkpoint of a store: its first record written
    ("first", "batch", 3),  # part way through it
    ("first", "copied", 1),  # everything copied, nothing fsynced
    ("first", "synced", 1),  # fsynced, the final record not written
    ("first", "final", 1),  # the final record written, the LevelDB not closed
    ("incremental", "batch", 1),  # an incremental checkpoint after its first batch
    ("incremental", "synced", 1),  # an incremental checkpoint before its final record
    ("resync", "batch", 2),  # a full resync over an older checkpoint
    ("close", "batch", 2),  # the final checkpoint of close()
    ("close", "finish", 1),  # close's checkpoint done, its generation not yet recorded
    ("restore", "restore-batch", 2),  # a restore of a lost working directory
    ("restore", "restore-built", 1),  # a restore built, not yet renamed into place
]


def _run_child(scenario: str, point: str, nth: int, working: str, persist: str, report: Path) -> None:
    child = subprocess.run(
        [sys.executable, WRITER, "die", scenario, point, str(nth), working, persist, str(report)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, f"child exited {child.returncode}: {child.stderr[-3000:]}"


def _report(report: Path) -> tuple[dict[str, list[int]], dict[str, int]]:
    """What the child wrote (every version per key) and the last checkpoint it saw complete."""
    written: dict[str, list[int]] = {}
    checkpointed: dict[str, int] = {}
    for line in report.read_text().splitlines():
        item = json.loads(line)
        written = item.get("written", written)
        checkpointed = item.get("checkpointed", checkpointed)
    return written, checkpointed


def _check_entries(store: TierStore, written: dict[str, list[int]], floor: dict[str, int], *, exact: bool) -> None:
    """Each key holds a state it was written with; ``exact``: the last one; else at least ``floor``'s."""
    for key in DIE_KEYS:
        states = written.get(key, [])
        data = store._disk.get(NS_ENTRY + encode_key(key))
        if data is None:
            assert not exact or not states, f"{key}: lost from the working directory"
            assert key not in floor, f"{key}: lost, though checkpointed at version {floor.get(key)}"
            continue
        record = unpack_record(data)
        state = -record[VERSION] if is_tombstone(record) else record[VERSION]
        assert state in states, f"{key}: state {state} was never written (written: {states})"
        if exact:
            assert state == states[-1], f"{key}: {state}, last written {states[-1]}"
        assert record[VERSION] >= floor.get(key, 0), f"{key}: version {record[VERSION]} < checkpointed {floor[key]}"
        entry = store.get_entry(key)
        if is_tombstone(record):
            assert entry is None
        else:
            assert entry is not None and entry.value == value_for(key, record[VERSION])


def _check_version_rule(store: TierStore) -> None:
    """After the open, an unversioned write keeps a key's version and an older one is refused."""
    versioned = [key for key in DIE_KEYS if (entry := store.get_entry(key)) is not None and entry.version > 1]
    for key in versioned[:: max(1, len(versioned) // 40)]:
        entry = store.get_entry(key)
        assert entry is not None
        assert store.set(key, "unversioned") is True
        after = store.get_entry(key)
        assert after is not None and after.version == entry.version, f"{key}: version reset by an unversioned set"
        assert store.set(key, "older", version=entry.version - 1) is False, f"{key}: an older version was accepted"


def _check_index(store: TierStore) -> None:
    board = store.index(BOARD)
    listed = board.page(0, 10_000)
    assert len(board) == len(listed)
    position = {member: n for n, (member, _) in enumerate(listed)}
    for i in range(0, 2200, 7):
        member = f"m{i}"
        assert board.rank(member) == position.get(member), f"{member}: rank and page disagree"
        score = board.score(member)
        assert (score is None) == (member not in position)
    after, _ = board.page_after(None, limit=len(listed) + 1)
    assert after == listed


def _check(store: TierStore, written: dict[str, list[int]], floor: dict[str, int], *, exact: bool) -> None:
    _check_entries(store, written, floor, exact=exact)
    _check_index(store)
    _check_version_rule(store)


@pytest.mark.parametrize(("scenario", "point", "nth"), KILL_POINTS)
def test_kill_9_during_a_checkpoint_leaves_both_directories_usable(
    tmp_path: Path, scenario: str, point: str, nth: int
) -> None:
    working, persist = tmp_path / "work", tmp_path / "persist"
    report = tmp_path / "report"
    _run_child(scenario, point, nth, str(working), str(persist), report)
    written, floor = _report(report)
    assert written, "the child died before it reported what it wrote"
    lost = tmp_path / "lost-persist"
    shutil.copytree(persist, lost)  # the checkpoint as the kill left it, before any reopen writes there
    if working.exists() or scenario == "restore":  # an interrupted restore is simply run again
        with TierStore(str(working), persist_path=str(persist), **OPTS) as kept:
            _check(kept, written, floor, exact=scenario != "restore")
    with TierStore(str(tmp_path / "fresh"), persist_path=str(lost), **OPTS) as restored:
        _check(restored, written, floor, exact=False)


def test_a_directory_damaged_twice_in_one_second_is_set_aside_twice(tmp_path: Path) -> None:
    """Each damaged working directory is kept under a name of its own (it once collided: raw OSError)."""
    path, persist = tmp_path / "store", tmp_path / "persist"
    with TierStore(path, persist_path=persist) as store:
        store.set("k", "v")
    for _ in range(3):
        (path / "CURRENT").unlink()  # damaged: LevelDB files without CURRENT
        with TierStore(path, persist_path=persist) as store:
            assert store.stats()["restored_from_checkpoint"] == 1
            assert store.get("k") == "v"
    assert len(list(tmp_path.glob("store.corrupt-*"))) == 3
