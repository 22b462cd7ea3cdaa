"""Damage found by an adversarial audit of the on-disk side: each test names what was broken."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.faults.test_faults_permissions import NOBODY, _open, as_unprivileged
from tierstore import StoreLocked, TierStore
from tierstore._plyvel import plyvel
from tierstore.errors import CorruptStore, PermissionDenied, StorageFull
from tierstore.keyspace import NS_ENTRY, NS_META

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}


def _flip_table_middles(directory: str) -> None:
    """Flip one bit in the middle of every table (its footer intact: LevelDB's open succeeds)."""
    for name in os.listdir(directory):
        if name.endswith(".ldb"):
            path = os.path.join(directory, name)
            middle = os.path.getsize(path) // 2
            with open(path, "r+b") as table:
                table.seek(middle)
                byte = table.read(1)[0]
                table.seek(middle)
                table.write(bytes([byte ^ 0x40]))


def _store_with_tables(working: str, persist: str | None, **settings: Any) -> None:
    with TierStore(working, persist_path=persist, **OPTS, **settings) as store:
        for i in range(300):
            store.set(f"k{i}", {"i": i, "pad": "x" * 50})
    plyvel.DB(working).close()  # reopening turns the log into a table
    assert any(name.endswith(".ldb") for name in os.listdir(working))


def test_a_corrupt_block_met_by_the_open_restores_from_the_checkpoint(tmp_path: Path) -> None:
    """The capacity count scans tier 2 at an open after an unclean close: a checksum error there is a
    corrupt working directory, which a checkpoint replaces (it was an error, the checkpoint unused)."""
    working, persist = str(tmp_path / "w"), str(tmp_path / "p")
    settings = {"disk_capacity_bytes": 10_000_000}
    _store_with_tables(working, persist, **settings)
    with TierStore(working, persist_path=persist, **OPTS, **settings) as store:
        store.set("unclean", 1)
        store._disk.abandon()  # type: ignore[attr-defined]  # not closed cleanly: the next open scans
        store._closed = True  # type: ignore[attr-defined]
    _flip_table_middles(working)
    with TierStore(working, persist_path=persist, **OPTS, **settings) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k10") == {"i": 10, "pad": "x" * 50}
    assert [name for name in os.listdir(tmp_path) if name.startswith("w.corrupt-")]


def test_a_corrupt_block_met_by_the_open_without_a_checkpoint_is_corrupt_store(tmp_path: Path) -> None:
    working = str(tmp_path / "w")
    _store_with_tables(working, None, disk_capacity_bytes=10_000_000)
    with TierStore(working, **OPTS, disk_capacity_bytes=10_000_000) as store:
        store._disk.abandon()  # type: ignore[attr-defined]
        store._closed = True  # type: ignore[attr-defined]
    _flip_table_middles(working)
    with pytest.raises(CorruptStore, match=working):
        TierStore(working, **OPTS, disk_capacity_bytes=10_000_000)


def test_a_checkpoint_of_a_damaged_working_directory_keeps_the_checkpoint(tmp_path: Path) -> None:
    """A corrupt block read from the working directory is its damage, not the checkpoint's: the
    checkpoint was set aside and a partial one written in its place."""
    working, persist = str(tmp_path / "w"), str(tmp_path / "p")
    _store_with_tables(working, persist)
    TierStore(working, **OPTS).close()  # a session without persist_path: the next checkpoint is full
    _flip_table_middles(working)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        with pytest.raises(CorruptStore, match=working) as raised:
            store.checkpoint()
        assert "kept" in str(raised.value)
        store.set("after", 1)
    assert not [name for name in os.listdir(tmp_path) if name.startswith("p.corrupt-")]
    shutil.rmtree(working)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert [store.get(f"k{i}") for i in range(300)] == [{"i": i, "pad": "x" * 50} for i in range(300)]


def _replace_with_directory(path: str) -> None:
    os.unlink(path)
    os.mkdir(path)


@pytest.mark.parametrize("name", ["CURRENT", "LOCK"])
def test_a_file_replaced_by_a_directory_is_damage_not_a_lock(tmp_path: Path, name: str) -> None:
    """LevelDB's "IO error: <dir>/LOCK: Is a directory" (or any IO error under a path holding the word
    "lock", such as /srv/clock/cache) once read as StoreLocked, which never restores."""
    working, persist = str(tmp_path / "clock" / "w"), str(tmp_path / "p")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        store.set("k", "v")
    _replace_with_directory(os.path.join(working, name))
    shutil.copytree(working, working + "-alone")
    with pytest.raises(CorruptStore, match="Is a directory"):
        TierStore(working + "-alone", **OPTS)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k") == "v"


def _truncate_tables(directory: str) -> None:
    for name in os.listdir(directory):
        if name.endswith(".ldb"):
            os.truncate(os.path.join(directory, name), os.path.getsize(os.path.join(directory, name)) // 2)


@pytest.mark.parametrize("meta_in_log", [False, True])
def test_a_checkpoint_with_a_truncated_table_is_unusable_not_an_os_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, meta_in_log: bool
) -> None:
    """Reading a truncated table raises plyvel's IOError ("Invalid argument"); the restore reported it as
    an OS error (a raw b'...' message) instead of a damaged checkpoint. ``meta_in_log``: the checkpoint's
    own records read fine (they are in its log), the entries' table does not."""
    working, persist = str(tmp_path / "w"), str(tmp_path / "p")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        for i in range(300):
            store.set(f"k{i}", "x" * 50)
    db = plyvel.DB(persist)  # reopening turns the checkpoint's log into a table
    meta = dict(db.iterator(prefix=NS_META))
    db.close()
    _truncate_tables(persist)
    if meta_in_log:
        db = plyvel.DB(persist)
        for key, value in meta.items():
            db.put(key, value)
        db.close()
    shutil.rmtree(working)
    with caplog.at_level(logging.ERROR, logger="tierstore"), TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 0  # a cold start, as the decision says
        assert store.get("k1") is None
    assert "unusable" in caplog.text


def test_a_restore_onto_a_full_disk_leaves_no_half_built_copy(tmpfs: Callable[[str], Path], tmp_path: Path) -> None:
    """The copy being built in ``<path>.restoring`` stayed behind, holding the space the disk lacked."""
    persist = str(tmp_path / "p")
    with TierStore(str(tmp_path / "source"), persist_path=persist, **OPTS) as store:
        for i in range(3000):
            store.set(f"k{i}", os.urandom(300).hex())
    small = tmpfs("1m")
    working = str(small / "w")
    with pytest.raises(StorageFull, match="w"):
        TierStore(working, persist_path=persist, **OPTS)
    assert os.listdir(small) == []
    with TierStore(str(tmp_path / "w2"), persist_path=persist, **OPTS) as store:  # the checkpoint is whole
        assert store.stats()["restored_from_checkpoint"] == 1
        assert len(store) == 3000


@pytest.mark.parametrize("schema", [0, -1])
def test_a_schema_record_no_tierstore_wrote_is_damage(tmp_path: Path, schema: int) -> None:
    """A schema of 0 or -1 passed the "not newer" check and the store opened as if it were sound."""
    working, persist = str(tmp_path / "w"), str(tmp_path / "p")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        store.set("k", "v")
    db = plyvel.DB(working)
    db.put(NS_META + b"schema", msgpack.packb(schema))
    db.close()
    shutil.copytree(working, working + "-alone")
    with pytest.raises(CorruptStore, match="schema record"):
        TierStore(working + "-alone", **OPTS)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k") == "v"


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A temp directory the unprivileged user can reach (pytest's own sits under root-only ones)."""
    path = Path(tempfile.mkdtemp(prefix="tierstore-damage-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _owned_by_nobody(*paths: str) -> None:
    for top in paths:
        for root, dirs, files in os.walk(top):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, NOBODY, NOBODY)


def _a_table(directory: str) -> str:
    return next(name for name in sorted(os.listdir(directory)) if name.endswith(".ldb"))


@pytest.mark.parametrize("name", ["CURRENT", "MANIFEST", "table"])
def test_a_working_file_the_process_may_not_read_is_permission_denied_not_restored_over(
    reachable: Path, name: str
) -> None:
    """A file of the working directory the process may not read was taken for damage: the directory
    (sound, newer than the checkpoint) was moved aside and the older checkpoint served in its place."""
    working, persist = str(reachable / "w"), str(reachable / "p")
    _store_with_tables(working, persist)
    with TierStore(working, **OPTS) as store:
        store.set("newer", "than the checkpoint")
    victim = {
        "CURRENT": "CURRENT",
        "MANIFEST": next(n for n in os.listdir(working) if n.startswith("MANIFEST-")),
        "table": _a_table(working),
    }[name]
    _owned_by_nobody(working, persist)
    os.chown(reachable, NOBODY, NOBODY)  # where a restore could move the directory aside
    os.chmod(os.path.join(working, victim), 0)
    outcome = as_unprivileged(_open(Path(working), persist_path=persist, **OPTS))
    assert outcome.startswith("PermissionDenied: ") and working in outcome, outcome
    assert sorted(os.listdir(reachable)) == ["p", "w"]
    os.chmod(os.path.join(working, victim), 0o600)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.get("newer") == "than the checkpoint"


def test_a_checkpoint_file_the_process_may_not_read_is_permission_denied_not_a_full_disk(reachable: Path) -> None:
    working, persist = str(reachable / "w"), str(reachable / "p")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        for i in range(300):
            store.set(f"k{i}", "x" * 50)
    TierStore(working, **OPTS).close()  # a session without persist_path: the next checkpoint reads it all
    plyvel.DB(persist).close()  # reopening turns the checkpoint's log into a table
    _owned_by_nobody(working, persist)
    os.chmod(os.path.join(persist, _a_table(persist)), 0)

    def checkpoint() -> str:
        with TierStore(working, persist_path=persist, **OPTS) as store:
            store.checkpoint()
            return "checkpointed"

    outcome = as_unprivileged(checkpoint)
    assert outcome.startswith("PermissionDenied: ") and persist in outcome, outcome


def test_a_checkpoint_table_the_process_may_not_read_is_permission_denied_not_a_cold_start(
    reachable: Path,
) -> None:
    """As for its CURRENT file: an unreadable checkpoint table is refused access, not a damaged
    checkpoint to start cold beside (which the next checkpoint would then fail to write anyway)."""
    working, persist = str(reachable / "w"), str(reachable / "p")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        for i in range(300):
            store.set(f"k{i}", "x" * 50)
    plyvel.DB(persist).close()  # reopening turns the checkpoint's log into a table
    shutil.rmtree(working)
    _owned_by_nobody(persist)
    os.chown(reachable, NOBODY, NOBODY)
    os.chmod(os.path.join(persist, _a_table(persist)), 0)
    outcome = as_unprivileged(_open(Path(working), persist_path=persist, **OPTS))
    assert outcome.startswith("PermissionDenied: ") and persist in outcome, outcome


def test_a_damaged_checkpoint_behind_a_symlink_is_written_anew_in_the_links_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The damaged target was set aside, leaving the link dangling: every later checkpoint failed
    with "File exists" (the link), so the store never checkpointed again."""
    working, target, link = str(tmp_path / "w"), str(tmp_path / "real-p"), str(tmp_path / "p")
    os.mkdir(target)
    os.symlink(target, link)
    with TierStore(working, persist_path=link, **OPTS) as store:
        store.set("before", 1)
        store.checkpoint()
        Path(target, "CURRENT").write_text("MANIFEST-999999\n")  # the checkpoint is damaged
        store.set("after", 2)
        with caplog.at_level(logging.ERROR, logger="tierstore"):
            assert store.checkpoint()["full"] is True
    assert "was damaged" in caplog.text
    assert os.path.islink(link) and os.path.isdir(target)
    assert [name for name in os.listdir(tmp_path) if name.startswith("real-p.corrupt-")]
    shutil.rmtree(working)
    with TierStore(working, persist_path=link, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert (store.get("before"), store.get("after")) == (1, 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"versioned", "yes"),
        (b"expiry_index", 1),
        (b"bloom_clean", [True]),
        (b"seq", -5),
        (b"capacity", {"total": "lots"}),
        (b"capacity", 7),
        (b"checkpoint_generation", 12),
    ],
)
def test_verify_finds_a_meta_record_of_the_wrong_type(tmp_path: Path, name: bytes, value: object) -> None:
    """A meta record that decodes to the wrong type (which the store reads as damaged and rebuilds
    from) was reported sound: verify only checked that it was msgpack."""
    working = str(tmp_path / "w")
    with TierStore(working, **OPTS, guard=True, disk_capacity_bytes=1 << 20) as store:
        store.set("k", 1, version=2)
    sound = subprocess.run([sys.executable, "-m", "tierstore", "verify", working], capture_output=True, text=True)
    assert sound.returncode == 0, sound.stdout + sound.stderr
    db = plyvel.DB(working)
    db.put(NS_META + name, msgpack.packb(value))
    db.close()
    found = subprocess.run([sys.executable, "-m", "tierstore", "verify", working], capture_output=True, text=True)
    assert found.returncode == 1, found.stdout + found.stderr
    assert name.decode() in found.stdout and "Traceback" not in found.stderr


def _store_with_a_table_of_entries_only(working: str, source: str) -> str:
    """A store whose entries sit in a table of their own (LevelDB opens it at the first read of one of
    them, not at open); returns the table's name."""
    with TierStore(source, **OPTS) as store:
        for i in range(100):
            store.set(f"k{i:05d}", os.urandom(50).hex())
    db = plyvel.DB(source)
    entries = list(db.iterator(prefix=NS_ENTRY))
    db.close()
    TierStore(working, **OPTS).close()
    plyvel.DB(working).close()  # the meta records go into a table of their own
    before = set(os.listdir(working))
    db = plyvel.DB(working)
    for key, value in entries:
        db.put(key, value)
    db.close()
    plyvel.DB(working).close()  # and the entries into another
    (table,) = [name for name in set(os.listdir(working)) - before if name.endswith(".ldb")]
    return table


def test_a_table_the_process_may_not_open_at_a_read_is_permission_denied_not_a_raw_error(reachable: Path) -> None:
    """LevelDB opens a table at the first read that needs it: a refusal then (permission, too many
    open files) came out of get, set, keys and sweep as plyvel's own IOError."""
    working = str(reachable / "w")
    victim = _store_with_a_table_of_entries_only(working, str(reachable / "source"))
    _owned_by_nobody(working)

    def reads() -> str:
        outcomes = []
        with TierStore(working, **OPTS, memory_items=1) as store:
            os.chmod(os.path.join(working, victim), 0)
            for call in (lambda: store.get("k00000"), lambda: list(store.keys()), lambda: store.sweep()):
                try:
                    call()
                    outcomes.append("read")
                except PermissionDenied as exc:
                    outcomes.append("PermissionDenied" if working in str(exc) else str(exc))
        return ",".join(outcomes)

    assert as_unprivileged(reads) == "PermissionDenied,PermissionDenied,PermissionDenied"


def _killed_creation(directory: Path) -> None:
    """What a kill during LevelDB's creation of a directory leaves between its first manifest and
    the CURRENT file naming it (files as LevelDB writes them, no record in any)."""
    reference = directory.parent / "reference"
    plyvel.DB(str(reference), create_if_missing=True).close()
    directory.mkdir()
    shutil.copy(reference / "MANIFEST-000002", directory / "MANIFEST-000001")
    (directory / "000001.dbtmp").write_text("MANIFEST-000001\n")
    for name in ("LOCK", "LOG"):
        shutil.copy(reference / name, directory / name)


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_a_directory_whose_creation_was_killed_opens_as_new(tmp_path: Path, with_checkpoint: bool) -> None:
    """It holds LevelDB files but no CURRENT, so it read as a damaged store for ever (CorruptStore
    without a checkpoint), though no record could ever have been written to it."""
    working, persist = tmp_path / "w", str(tmp_path / "p")
    if with_checkpoint:
        with TierStore(str(tmp_path / "source"), persist_path=persist, **OPTS) as store:
            store.set("k", "from the checkpoint")
    _killed_creation(working)
    with TierStore(str(working), persist_path=persist if with_checkpoint else None, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == int(with_checkpoint)
        assert store.get("k") == ("from the checkpoint" if with_checkpoint else None)
        store.set("after", 1)
    assert not [name for name in os.listdir(tmp_path) if ".corrupt-" in name]
    with TierStore(str(working), **OPTS) as store:
        assert store.get("after") == 1


def test_a_damaged_working_directory_without_a_checkpoint_says_there_is_none(tmp_path: Path) -> None:
    """The message said the checkpoint was "unusable too" when there was no checkpoint at all."""
    working, persist = str(tmp_path / "w"), str(tmp_path / "p")
    with TierStore(working, **OPTS) as store:
        store.set("k", 1)
    os.unlink(os.path.join(working, "CURRENT"))
    with pytest.raises(CorruptStore) as raised:
        TierStore(working, persist_path=persist, **OPTS)
    assert "there is no checkpoint in" in str(raised.value)
    assert "unusable too" not in str(raised.value)


@pytest.mark.parametrize("damage", ["truncated", "directory"])
def test_a_checkpoint_into_a_directory_with_a_damaged_table_writes_a_new_one(tmp_path: Path, damage: str) -> None:
    """LevelDB reports a truncated table (or a directory in its place) as an IO error, not a checksum
    error: every checkpoint raised StorageFull for ever instead of setting the damaged one aside."""
    working, persist = str(tmp_path / "w"), str(tmp_path / "p")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        for i in range(300):
            store.set(f"k{i}", "x" * 50)
    plyvel.DB(persist).close()  # reopening turns the checkpoint's log into a table
    if damage == "truncated":
        _truncate_tables(persist)
    else:
        table = os.path.join(persist, _a_table(persist))
        os.unlink(table)
        os.mkdir(table)
    TierStore(working, **OPTS).close()  # a session without persist_path: the next checkpoint is full
    with TierStore(working, persist_path=persist, **OPTS) as store:
        store.set("after", 1)
        assert store.checkpoint()["full"] is True
    assert [name for name in os.listdir(tmp_path) if name.startswith("p.corrupt-")]
    shutil.rmtree(working)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert (store.get("after"), store.get("k299")) == (1, "x" * 50)


@pytest.mark.parametrize("damage", ["truncated", "directory", "deleted"])
def test_a_table_damaged_before_its_first_read_is_a_corrupt_record_like_a_bad_block(
    tmp_path: Path, damage: str
) -> None:
    """LevelDB opens a table at the first read that needs it and reports one truncated, replaced or
    gone as an IO or NotFound error: that read is damage (a miss counted as a corrupt record, as
    for a bad block; CorruptStore for a scan), not some other failure to raise from ``get``."""
    working = str(tmp_path / "w")
    table = os.path.join(working, _store_with_a_table_of_entries_only(working, str(tmp_path / "source")))
    with TierStore(working, **OPTS, memory_items=1) as store:
        if damage == "truncated":
            os.truncate(table, os.path.getsize(table) // 2)
        else:
            os.unlink(table)
            if damage == "directory":
                os.mkdir(table)
        assert store.get("k00001", "default") == "default"
        # LevelDB answers a point read in a lost table as "not found", like an absent key: uncounted
        assert store.stats()["corrupt_records"] == (0 if damage == "deleted" else 1)
        with pytest.raises(CorruptStore, match=working):
            list(store.keys())


def test_verify_finds_a_versions_record_that_denies_a_versioned_entry(tmp_path: Path) -> None:
    """ "Holds no versions" beside an entry with a version decodes fine, yet makes the store let an
    unversioned write reset that version and an older versioned write through: verify said sound."""
    working = str(tmp_path / "w")
    with TierStore(working, **OPTS) as store:
        store.set("k", "v5", version=5)
    db = plyvel.DB(working)
    db.put(NS_META + b"versioned", msgpack.packb(False))
    db.close()
    found = subprocess.run([sys.executable, "-m", "tierstore", "verify", working], capture_output=True, text=True)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "versioned" in found.stdout and "holds no versions" in found.stdout


def test_a_working_directory_that_is_a_mount_point_is_restored_in_place(
    tmpfs: Callable[[str], Path], tmp_path: Path
) -> None:
    """A disk of its own mounted at ``path``: a mount point cannot be renamed, so every restore (of an
    emptied disk, or a damaged one) failed with "Device or resource busy"; ``lost+found`` read as data."""
    working, persist = tmpfs("16m"), str(tmp_path / "p")
    (working / "lost+found").mkdir()
    with TierStore(working, persist_path=persist, **OPTS) as store:
        store.set("k", "v")
    for name in set(os.listdir(working)) - {"lost+found"}:
        os.unlink(working / name)  # a new, empty disk
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k") == "v"
    (working / "CURRENT").write_text("MANIFEST-999999\n")  # a damaged one
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k") == "v"
    (aside,) = [name for name in os.listdir(working) if name.startswith(".tierstore-corrupt-")]
    assert (working / aside / "CURRENT").read_text() == "MANIFEST-999999\n"  # set aside, never deleted
    assert (working / "lost+found").is_dir()
    with TierStore(working, **OPTS) as store:  # and it opens as it is
        assert store.get("k") == "v"


def test_a_damaged_checkpoint_on_a_mount_point_is_set_aside_in_place(
    tmpfs: Callable[[str], Path], tmp_path: Path
) -> None:
    working, persist = str(tmp_path / "w"), tmpfs("16m")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        store.set("before", 1)
        store.checkpoint()
        (persist / "CURRENT").write_text("MANIFEST-999999\n")
        store.set("after", 2)
        assert store.checkpoint()["full"] is True
    assert [name for name in os.listdir(persist) if name.startswith(".tierstore-corrupt-")]
    shutil.rmtree(working)
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert (store.get("before"), store.get("after")) == (1, 2)



@pytest.mark.parametrize("kept", ["lost+found", ".tierstore-corrupt-20260101-000000-1"])
def test_a_restore_into_a_plain_directory_never_deletes_what_it_passes_over(tmp_path: Path, kept: str) -> None:
    """A directory that is no mount point but holds only what the checks pass over (a ``lost+found``
    copied with a disk's files, a damaged store set aside inside a former mount point) reads as new, so
    the open restores into it: it was removed whole, with those files, to rename the copy into place."""
    working, persist = tmp_path / "w", str(tmp_path / "p")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        store.set("k", "v")
    shutil.rmtree(working)
    (working / kept).mkdir(parents=True)
    (working / kept / "#12").write_text("someone's data")
    with TierStore(working, persist_path=persist, **OPTS) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k") == "v"
    assert (working / kept / "#12").read_text() == "someone's data"
    with TierStore(working, **OPTS) as store:  # and it opens as it is
        assert store.get("k") == "v"


@pytest.fixture
def bind_mounted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A directory and a bind mount of it: one directory under two real paths."""
    source, view = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    view.mkdir()
    done = subprocess.run(["mount", "--bind", str(source), str(view)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.strip() or done.returncode}")
    try:
        yield source, view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_a_second_open_through_a_bind_mount_is_store_locked(bind_mounted: tuple[Path, Path]) -> None:
    """The registry went by real path only, which a bind mount (or another letter case on a case-
    insensitive filesystem) does not share: LevelDB then granted a second handle in the same process
    (fcntl locks are per process), and closing either one dropped the lock the other relied on."""
    source, view = bind_mounted
    with TierStore(source, **OPTS) as store:
        store.set("k", 1)
        with pytest.raises(StoreLocked, match="already open in this process"):
            TierStore(view, **OPTS)
        store.set("k", 2)
    with TierStore(view, **OPTS) as store:  # once closed, the other spelling opens
        assert store.get("k") == 2
