"""Adversarial suite: the ``tierstore`` command on damaged directories.

Each command runs as a real ``python -m tierstore`` process. On a damaged store
it reports a finding (exit 1) naming the directory and the damage, and never
prints a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tierstore import TierStore
from tierstore._plyvel import plyvel
from tierstore.keyspace import NS_META, meta_key

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [["inspect"], ["verify"], ["scan", "--all"], ["dump"], ["counters"], ["get", "k1"], ["index", "board"]]


def tierstore(*args: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tierstore", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cleanly closed store whose records sit in table files."""
    path = tmp_path_factory.mktemp("sound") / "store"
    with TierStore(path) as store:
        for i in range(3000):
            store.set(f"k{i}", "v" * 50)
        store.incr("hits")
        store.index("board").add("ann", 1.0)
    with TierStore(path):
        pass  # the first session's log becomes a table
    return path


def biggest_table(path: Path) -> Path:
    return max(path.glob("*.ldb"), key=lambda table: table.stat().st_size)


def copy(sound: Path, where: Path) -> Path:
    shutil.copytree(sound, where)
    return where


@pytest.mark.parametrize("size", ["half", "ten_bytes"])
def test_a_truncated_table_is_a_finding_of_verify_and_inspect(sound: Path, tmp_path: Path, size: str) -> None:
    path = copy(sound, tmp_path / "store")
    table = biggest_table(path)
    os.truncate(table, table.stat().st_size // 2 if size == "half" else 10)
    verify = tierstore("verify", path)
    assert verify.returncode == 1
    assert "(files)" in verify.stdout and table.name in verify.stdout
    report = tierstore("verify", path, "--json")
    assert report.returncode == 1
    assert any(table.name in problem["reason"] for problem in json.loads(report.stdout)["corrupt"])
    inspect = tierstore("inspect", path)
    assert inspect.returncode == 1
    assert str(path) in inspect.stderr and "damaged" in inspect.stderr


def test_leveldb_files_without_current_are_a_damaged_store(sound: Path, tmp_path: Path) -> None:
    path = copy(sound, tmp_path / "store")
    (path / "CURRENT").unlink()
    for command in (["verify"], ["inspect"], ["scan"]):
        proc = tierstore(*command, path)
        assert proc.returncode == 1, (command, proc.stderr)
        assert "damaged" in proc.stderr and "CURRENT" in proc.stderr


def test_with_json_a_failed_command_says_why_on_stdout_too(sound: Path, tmp_path: Path) -> None:
    """A script reading ``--json`` output gets a JSON document naming the problem, not an empty stdout."""
    damaged = copy(sound, tmp_path / "store")
    (damaged / "CURRENT").unlink()
    missing = tmp_path / "missing"
    for args, code, words in [
        (["verify", damaged], 1, "CURRENT"),
        (["get", damaged, "k1"], 1, "damaged"),
        (["inspect", missing], 2, "no such directory"),
        (["index", sound, "no-such-index"], 1, "no-such-index"),
    ]:
        proc = tierstore(*args, "--json")
        assert proc.returncode == code, (args, proc.stderr)
        document = json.loads(proc.stdout)
        assert document["exit_code"] == code and words in document["error"], (args, document)
        assert document["error"] in proc.stderr  # the same words as on stderr
        assert tierstore(*args).stdout == ""  # without --json, stdout stays empty


def test_a_directory_without_leveldb_files_is_still_not_a_tierstore(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    proc = tierstore("verify", tmp_path)
    assert proc.returncode == 2 and "not a tierstore" in proc.stderr


def test_a_missing_schema_beside_other_meta_records_is_a_finding(sound: Path, tmp_path: Path) -> None:
    path = copy(sound, tmp_path / "store")
    db = plyvel.DB(str(path))
    db.delete(meta_key(b"schema"))
    db.close()
    proc = tierstore("verify", path)
    assert proc.returncode == 1 and "schema record is missing" in proc.stderr


def damage(path: Path, how: str) -> None:
    """One kind of damage a directory meets: lost files, cut or flipped bytes, garbage records."""
    table = biggest_table(path)
    if how == "truncate_table":
        os.truncate(table, table.stat().st_size // 2)
    elif how == "flip_table":
        data = bytearray(table.read_bytes())
        data[1000:1100] = bytes(b ^ 0xFF for b in data[1000:1100])
        table.write_bytes(bytes(data))
    elif how == "remove_table":
        table.unlink()
    elif how == "truncate_manifest":
        os.truncate(next(path.glob("MANIFEST-*")), 20)
    elif how == "garbage_current":
        (path / "CURRENT").write_text("MANIFEST-999999\n")
    elif how == "garbage_meta":
        db = plyvel.DB(str(path))
        for key in db.iterator(prefix=NS_META, include_value=False):
            db.put(key, b"\xc1garbage")
        db.close()


@pytest.mark.parametrize(
    "how",
    ["truncate_table", "flip_table", "remove_table", "truncate_manifest", "garbage_current", "garbage_meta"],
)
def test_no_command_prints_a_traceback_on_a_damaged_directory(sound: Path, tmp_path: Path, how: str) -> None:
    path = copy(sound, tmp_path / "store")
    damage(path, how)
    for command in COMMANDS:
        proc = tierstore(command[0], path, *command[1:])
        assert proc.returncode in (0, 1), (command, proc.stderr)  # damage is a finding, never a usage error
    assert tierstore("verify", path).returncode == 1


def test_output_that_cannot_be_written_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with TierStore(path) as store:
        for i in range(2000):  # more than one buffer of output
            store.set(f"k{i}", "v" * 50)
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "tierstore", "scan", str(path)],
            cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "No space left on device" in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line: nothing more when the exit flushes


def test_a_key_the_terminal_cannot_encode_is_shown_escaped(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with TierStore(path) as store:
        store.set("clé", "välue")
    for command in (["scan", path], ["get", path, "clé"], ["dump", path]):
        proc = subprocess.run(
            [sys.executable, "-m", "tierstore", *map(str, command)],
            cwd=ROOT, capture_output=True, timeout=60,
            env={**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C"},
        )  # fmt: skip
        assert proc.returncode == 0, (command, proc.stderr)
        assert b"Traceback" not in proc.stderr
        assert b"\\xe9" in proc.stdout or b"\\u00e9" in proc.stdout, (command, proc.stdout)
